"""Force constants from a packaged foundation force field: no DFT force sets needed.

A structure file (CIF, POSCAR, ...) goes through

1. an optional relaxation that keeps the space group (ASE's ``FixSymmetry``, positions and, unless
   ``cell=False``, the cell through ``FrechetCellFilter``) to a force tolerance ``fmax`` (eV/Angstrom);
2. phonopy's displacements (``distance`` Angstrom) in a supercell of the unit cell chosen by a
   length rule (:func:`supercell_for_length`: each pair of opposite faces at least ``min_length``
   Angstrom apart) or given;
3. the force field's forces (an ASE calculator) on every displaced supercell, minus those of the
   undisplaced one, and phonopy's force constants (:func:`etgnn.observables.phonons.phonopy_from_calculator`).

The Born charges and eps_inf for the LO-TO splitting come from elsewhere (an etgnn model or a BORN
file, :mod:`etgnn.observables.phonons`).

Supported force fields (:data:`FORCE_FIELDS`), whose weights ship inside their PyPI packages, so
they run offline on a CPU (``pip install 'etgnn[forcefield]'``; nothing is downloaded at run time):
SevenNet (MIT: SevenNet-0, SevenNet-l3i5, SevenNet-MF-0 with its PBE or r2SCAN fidelity) and CHGNet
(BSD: 0.3.0, 0.2.0).  An etgnn checkpoint path whose model predicts ``forces`` (eV/Angstrom) works too.
The packages are imported only when a force field is loaded.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import ase
import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["FORCE_FIELDS", "DEFAULT_FORCE_FIELD", "INSTALL_HINT", "ForceField", "load_force_field",
           "available_force_fields", "supercell_for_length", "relax", "RelaxResult", "forcefield_phonopy"]

INSTALL_HINT = "pip install 'etgnn[forcefield]'"


@dataclass(frozen=True)
class ForceField:
    """A packaged force field: ``package`` to import, ``model`` (its own name), ``modal`` (fidelity)."""

    name: str
    package: str
    model: str
    modal: str | None
    licence: str
    description: str


#: name -> packaged force field (weights inside the wheel)
FORCE_FIELDS = {ff.name: ff for ff in [
    ForceField("sevennet-0", "sevenn", "7net-0", None, "MIT", "SevenNet-0 (11 Jul 2024), MPtrj, PBE(+U)"),
    ForceField("sevennet-l3i5", "sevenn", "7net-l3i5", None, "MIT", "SevenNet-l3i5, MPtrj, PBE(+U), l_max 3"),
    ForceField("sevennet-mf-0", "sevenn", "7net-mf-0", "PBE", "MIT", "SevenNet-MF-0, PBE fidelity (MPtrj)"),
    ForceField("sevennet-mf-0-r2scan", "sevenn", "7net-mf-0", "R2SCAN", "MIT", "SevenNet-MF-0, r2SCAN fidelity"),
    ForceField("chgnet-0.3.0", "chgnet", "0.3.0", None, "BSD-3", "CHGNet 0.3.0, MPtrj, PBE(+U)"),
    ForceField("chgnet-0.2.0", "chgnet", "0.2.0", None, "BSD-3", "CHGNet 0.2.0, MPtrj, PBE(+U)"),
]}

#: chosen by benchmarks/forcefield_phonons.py: the smallest mean error of the Gamma TO and LO
#: frequencies against the DFT force sets of seven oxides and halides (4.0 %, next SevenNet-MF-0 6.0 %)
DEFAULT_FORCE_FIELD = "sevennet-l3i5"


def available_force_fields() -> list[str]:
    """Names in :data:`FORCE_FIELDS` whose package can be imported here."""
    import importlib.util

    return [name for name, ff in FORCE_FIELDS.items() if importlib.util.find_spec(ff.package) is not None]


def _import(package: str, name: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"force field {name!r} needs the Python package {package!r}, which is not installed: "
                          f"{INSTALL_HINT} (or pip install {package})") from exc


def load_force_field(name: str, device: str = "cpu"):
    """An ASE calculator for a packaged force field (:data:`FORCE_FIELDS`) or an etgnn checkpoint.

    Args:
        name: a key of :data:`FORCE_FIELDS` (case-insensitive), or the path of an etgnn
            checkpoint whose model has a ``forces`` target.
        device: torch device (``"cpu"``, ``"cuda"``).

    Raises:
        ConfigError: unknown name, package missing (the message says ``pip install 'etgnn[forcefield]'``),
            or a checkpoint without forces.
    """
    key = str(name).lower()
    if key not in FORCE_FIELDS:
        if Path(name).is_file():
            from ..calculator import ETGNNCalculator

            calc = ETGNNCalculator(name, device=device)
            if "forces" not in calc.implemented_properties:
                raise ConfigError(f"{name}: this etgnn model predicts no forces (targets: "
                                  f"{', '.join(calc.model.targets)}); it cannot be a force field")
            return calc
        raise ConfigError(f"unknown force field {name!r}: one of {', '.join(FORCE_FIELDS)}, or the path of an etgnn "
                          "checkpoint with a forces target")
    ff = FORCE_FIELDS[key]
    _import(ff.package, ff.name)
    with warnings.catch_warnings():  # both packages warn about optional accelerators and old checkpoints
        warnings.simplefilter("ignore")
        if ff.package == "sevenn":
            from sevenn.calculator import SevenNetCalculator

            return SevenNetCalculator(ff.model, device=device, modal=ff.modal)
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        model = CHGNet.load(model_name=ff.model, use_device=device, verbose=False)
        return CHGNetCalculator(model=model, use_device=device)


def supercell_for_length(atoms: ase.Atoms, min_length: float = 10.0) -> np.ndarray:
    """Diagonal supercell matrix ``diag(n_1, n_2, n_3)`` of ``atoms``'s cell whose opposite faces
    are at least ``min_length`` Angstrom apart (``n_i = ceil(L / h_i)``, ``h_i = V / |a_j x a_k|``).

    The face distance is the diameter of the largest sphere inside the supercell, the range the
    force constants reach before they wrap around.
    """
    cell = np.asarray(atoms.cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    if not volume > 0 or not min_length > 0:
        raise DataError(f"supercell rule: need a 3D cell and a positive length (volume {volume}, length {min_length})")
    heights = [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    return np.diag([max(1, math.ceil(min_length / h - 1e-9)) for h in heights])


@dataclass(frozen=True)
class RelaxResult:
    """``atoms`` relaxed; ``steps`` taken; ``fmax`` reached (eV/Angstrom); space group before and after."""

    atoms: ase.Atoms
    steps: int
    fmax: float
    converged: bool
    spacegroup_before: str
    spacegroup_after: str


def _spacegroup(atoms: ase.Atoms, symprec: float) -> str:
    import spglib

    cell = (np.asarray(atoms.cell), atoms.get_scaled_positions(), atoms.numbers)
    return str(spglib.get_spacegroup(cell, symprec=symprec))


def relax(atoms: ase.Atoms, calculator, fmax: float = 1e-3, cell: bool = True, steps: int = 500,
          symprec: float = 1e-5, symprec_fix: float = 1e-3) -> RelaxResult:
    """Relax positions (and the cell) with the space group kept (``FixSymmetry``), BFGS.

    Args:
        atoms: the structure (not modified).
        calculator: ASE calculator.
        fmax: force tolerance, eV/Angstrom (for the cell: ``fmax`` on the filter's scaled stress).
        cell: relax the cell too (``FrechetCellFilter``, hydrostatic and shear, symmetry kept).
        steps: at most this many optimiser steps.
        symprec: tolerance for reporting the space group; ``symprec_fix``: the one ``FixSymmetry`` uses.
    """
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    work = atoms.copy()
    work.calc = calculator
    before = _spacegroup(work, symprec)
    work.set_constraint(FixSymmetry(work, symprec=symprec_fix))
    target = FrechetCellFilter(work) if cell else work
    opt = BFGS(target, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    reached = float(np.sqrt((target.get_forces() ** 2).sum(axis=1)).max())
    work.set_constraint()
    out = work.copy()
    out.calc = None
    return RelaxResult(out, int(opt.nsteps), reached, converged, before, _spacegroup(out, symprec))


def forcefield_phonopy(atoms: ase.Atoms, calculator, supercell_matrix=None, min_length: float = 10.0,
                       primitive_matrix="auto", distance: float = 0.01, symprec: float = 1e-5):
    """phonopy with force constants from ``calculator`` on ``atoms`` (no NAC yet).

    Args:
        atoms: unit cell (relax it first if wanted, :func:`relax`).
        calculator: ASE calculator (:func:`load_force_field`).
        supercell_matrix: 3 integers or 3x3; None: :func:`supercell_for_length` with ``min_length``.
        primitive_matrix: phonopy's (``"auto"``: the standard primitive cell).
        distance: displacement amplitude, Angstrom.
        symprec: spglib tolerance, Angstrom.
    """
    from .phonons import phonopy_from_calculator

    if supercell_matrix is None:
        supercell_matrix = supercell_for_length(atoms, min_length)
    with warnings.catch_warnings():  # phonopy 4: 'auto' resolved to a centring matrix, as asked for
        warnings.filterwarnings("ignore", message="primitive_matrix defaulted")
        return phonopy_from_calculator(atoms, calculator, supercell_matrix, primitive_matrix=primitive_matrix,
                                       distance=distance, symprec=symprec)
