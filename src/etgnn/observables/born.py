"""Born effective charges and eps_inf from a model, symmetrised, as a phonopy BORN file.

Conventions (docs/conventions.md): ``Z[atom, i, j] = dF_{atom, j} / dE_i``, the first index is the
field / polarization direction.  phonopy uses the same order: its non-analytical correction
contracts the wave vector with the first index (``q_g Z_{k, g, a}``, ``np.dot(q, born)`` in
``phonopy/harmonic/dynamical_matrix.py``) and a BORN line lists ``Z_xx Z_xy Z_xz Z_yx ... Z_zz``
row-major, so no transpose is applied anywhere here.

Symmetrisation and the choice of the atoms a BORN file lists are phonopy's own
(:func:`phonopy.structure.symmetry.symmetrize_borns_and_epsilon`,
:func:`~phonopy.structure.symmetry.elaborate_borns_and_epsilon`): the Born charges are averaged
over the space group (``Z_{g(k)} <- R Z_k R^T``), the mean over the cell is subtracted (acoustic
sum rule, exact), eps is averaged over the point group, and the file lists the first atom of each
orbit of the primitive cell's space group, which phonopy's reader
(:func:`phonopy.file_IO.parse_BORN`) expands back to every atom.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import ase
import numpy as np

from ..errors import ConfigError, DataError

__all__ = [
    "require_phonopy",
    "require_crystal",
    "to_phonopy_atoms",
    "to_ase_atoms",
    "select_born_targets",
    "predict_born",
    "symmetrize_born",
    "born_file_text",
    "write_born",
]

_INSTALL_HINT = "phonopy is needed for phonons: pip install 'etgnn[phonons]' (or pip install phonopy)"


def require_phonopy():
    """Import phonopy or raise a :class:`ConfigError` saying how to install it."""
    try:
        import phonopy
    except ModuleNotFoundError as exc:
        raise ConfigError(_INSTALL_HINT) from exc
    return phonopy


def require_crystal(atoms: ase.Atoms, where: str = "the structure") -> None:
    """Refuse anything but a crystal (a valid cell periodic along a, b and c) before spglib sees it.

    Raises:
        DataError: naming ``where``: a bad cell (:func:`etgnn.data.graph.check_cell`), a molecule
            or a slab / wire.
    """
    from ..data.graph import check_cell

    pbc = check_cell(atoms, None, where)
    if not pbc.all():
        what = ("a molecule (no cell)" if not pbc.any()
                else f"periodic along {', '.join('abc'[k] for k in np.flatnonzero(pbc))} only")
        raise DataError(f"{where}: a BORN file is for a crystal (a cell periodic along a, b and c); this is {what}")


def _matrix_text(matrix) -> str:
    if isinstance(matrix, str):
        return matrix
    return "[" + ", ".join("[" + ", ".join(f"{x:g}" for x in row) + "]"
                           for row in np.asarray(matrix, dtype=float).reshape(3, 3)) + "]"


def _primitive_size(atoms: ase.Atoms, symprec: float) -> int:
    """Atoms in spglib's primitive cell of ``atoms``."""
    import spglib

    cell = (np.asarray(atoms.cell), atoms.get_scaled_positions(), atoms.numbers)
    found = spglib.standardize_cell(cell, to_primitive=True, no_idealize=True, symprec=symprec)
    return len(found[2]) if found is not None else len(atoms)


def _unfit_primitive_matrix(atoms: ase.Atoms, given, pmat, where: str, symprec: float, exc: Exception) -> DataError:
    """The message for a primitive matrix phonopy cannot fold ``atoms`` onto: the numbers, what to do."""
    n, ratio = len(atoms), abs(float(np.linalg.det(np.asarray(pmat, dtype=float))))
    n_prim = _primitive_size(atoms, symprec)
    hint = (f"the cell is already primitive (spglib finds {n_prim} atoms): leave out --primitive-matrix "
            "(or give auto)" if n_prim == n else f"spglib finds a primitive cell of {n_prim} atoms: give auto")
    return DataError(f"{where}: primitive matrix {_matrix_text(given)} does not fit this cell of {n} atoms "
                     f"({atoms.get_chemical_formula(mode='reduce')}): it keeps {ratio:.4g} of its volume, room for "
                     f"{n * ratio:.4g} atoms; {hint}")


def to_phonopy_atoms(atoms: ase.Atoms):
    """``ase.Atoms`` -> ``PhonopyAtoms`` (cell, fractional positions, symbols and masses)."""
    require_phonopy()
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.asarray(atoms.cell),
                        scaled_positions=atoms.get_scaled_positions(wrap=False), masses=atoms.get_masses())


def to_ase_atoms(cell) -> ase.Atoms:
    """``PhonopyAtoms`` (or a phonopy ``Primitive``) -> periodic ``ase.Atoms`` with its masses."""
    atoms = ase.Atoms(numbers=cell.numbers, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
    atoms.set_masses(cell.masses)
    return atoms


def _describe(targets: dict) -> str:
    return ", ".join(f"{name} ({t.level}, rank {t.rank}{', sum_rule' if t.sum_rule else ''})"
                     for name, t in targets.items())


#: target names chosen among several candidates (the shipped models' default outputs)
DEFAULT_NAMES = ("born_charges", "epsilon")


def select_born_targets(targets: dict, bec_target: str | None = None, eps_target: str | None = None,
                        source: str = "the model") -> tuple[str, str]:
    """Names of the Born-charge and eps_inf targets of a model.

    Defaults: the one per-atom rank-2 target with ``sum_rule`` (or, if none has it, the one per-atom
    rank-2 target) and the one structure rank-2 target; where there are several, the ones named
    :data:`DEFAULT_NAMES` (``born_charges``, ``epsilon``: the shipped models' default level).

    Args:
        targets: the model's ``config.targets`` (name -> TargetConfig).
        bec_target, eps_target: names chosen by the user, or None for the defaults.
        source: the checkpoint's name, for error messages.

    Raises:
        ConfigError: a named target is missing or has the wrong level/rank, or the default is
            ambiguous or absent; the message lists the model's targets.
    """

    def check(name, level, what, flag):
        if name not in targets:
            raise ConfigError(f"{source} has no target {name!r} ({flag}); its targets: {_describe(targets)}")
        t = targets[name]
        if t.level != level or t.rank != 2:
            raise ConfigError(f"{flag} {name!r} of {source} is a {t.level} rank-{t.rank} target, expected {what}; "
                              f"its targets: {_describe(targets)}")
        return name

    def default(candidates, what, flag):
        preferred = [n for n in candidates if n in DEFAULT_NAMES]
        if len(candidates) > 1 and len(preferred) == 1:
            return preferred[0]
        if len(candidates) != 1:
            found = "none" if not candidates else "several (" + ", ".join(candidates) + ")"
            raise ConfigError(f"{source}: cannot choose the {what} target, {found} found; name it with {flag}; "
                              f"its targets: {_describe(targets)}")
        return candidates[0]

    if bec_target is not None:
        bec = check(bec_target, "atom", "per-atom rank 2 (Born charges)", "--bec-target")
    else:
        rank2 = [n for n, t in targets.items() if t.level == "atom" and t.rank == 2]
        with_rule = [n for n in rank2 if targets[n].sum_rule]
        bec = default(with_rule or rank2, "Born-charge (per-atom rank 2)", "--bec-target")
    if eps_target is not None:
        eps = check(eps_target, "structure", "structure rank 2 (eps_inf)", "--eps-target")
    else:
        eps = default([n for n, t in targets.items() if t.level == "structure" and t.rank == 2],
                      "eps_inf (structure rank 2)", "--eps-target")
    return bec, eps


def predict_born(model, atoms: ase.Atoms, bec_target: str | None = None, eps_target: str | None = None,
                 source: str = "the model") -> tuple[np.ndarray, np.ndarray]:
    """Born charges and eps_inf of one crystal predicted by an etgnn model (not symmetrised).

    Args:
        model: an :class:`etgnn.ETGNN` (``etgnn.load_model``).
        atoms: the crystal (periodic).
        bec_target, eps_target: see :func:`select_born_targets`.

    Returns:
        ``(born, epsilon)``: (n_atoms, 3, 3) in the training data's unit (e), first index the field
        direction; (3, 3) dimensionless.
    """
    bec, eps = select_born_targets(model.config.targets, bec_target, eps_target, source)
    pred = model.predict([atoms])[0]
    return np.asarray(pred[bec], dtype=float), np.asarray(pred[eps], dtype=float)


def _check_shapes(atoms: ase.Atoms, born, epsilon) -> tuple[np.ndarray, np.ndarray]:
    born, epsilon = np.asarray(born, dtype=float), np.asarray(epsilon, dtype=float)
    if born.shape != (len(atoms), 3, 3):
        raise DataError(f"Born charges of {atoms.get_chemical_formula()} have shape {born.shape}, "
                        f"expected (n_atoms={len(atoms)}, 3, 3)")
    if epsilon.shape != (3, 3):
        raise DataError(f"eps_inf of {atoms.get_chemical_formula()} has shape {epsilon.shape}, expected (3, 3)")
    return born, epsilon


def symmetrize_born(atoms: ase.Atoms, born, epsilon, symprec: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Site-symmetric Born charges with an exact acoustic sum rule, and a point-group-symmetric eps.

    phonopy's :func:`~phonopy.structure.symmetry.symmetrize_borns_and_epsilon`: average of
    ``R Z_k R^T`` over the space-group operations mapping atom ``k`` onto each atom, then the mean
    over the cell subtracted; eps averaged over the point group (it is not made symmetric in its two
    indices beyond what the point group implies).

    Args:
        atoms: the cell the tensors belong to.
        born: (n_atoms, 3, 3), e.
        epsilon: (3, 3).
        symprec: spglib tolerance, Angstrom.

    Returns:
        ``(born, epsilon)`` symmetrised, same shapes.
    """
    require_phonopy()
    from phonopy.structure.symmetry import symmetrize_borns_and_epsilon

    born, epsilon = _check_shapes(atoms, born, epsilon)
    with warnings.catch_warnings():  # phonopy warns when a tensor moves by > 0.1; callers report it
        warnings.simplefilter("ignore", UserWarning)
        z, eps = symmetrize_borns_and_epsilon(born, epsilon, to_phonopy_atoms(atoms), symprec=symprec)
    return np.asarray(z, dtype=float), np.asarray(eps, dtype=float)


def _primitive_matrix(unitcell, primitive_matrix, symprec: float):
    if primitive_matrix is None:
        return None
    from phonopy.structure.cells import get_primitive_matrix_with_auto

    if isinstance(primitive_matrix, str):
        if primitive_matrix not in ("auto", "P", "F", "I", "A", "C", "R"):
            raise ConfigError(f"primitive matrix {primitive_matrix!r}: expected auto, P, F, I, A, C, R or 9 numbers")
    else:
        primitive_matrix = np.asarray(primitive_matrix, dtype=float)
        if primitive_matrix.size != 9:
            raise ConfigError(f"primitive matrix needs 9 numbers (row-major), got {primitive_matrix.size}")
        primitive_matrix = primitive_matrix.reshape(3, 3)
    return get_primitive_matrix_with_auto(unitcell, primitive_matrix, symprec=symprec)


def born_file_text(atoms: ase.Atoms, born, epsilon, primitive_matrix=None, supercell_matrix=None,
                   factor: float | None = None, symprec: float = 1e-5, where: str = "the structure") -> str:
    """Text of a phonopy BORN file for the crystal ``atoms`` (symmetrised first).

    Args:
        atoms: the unit cell the tensors belong to.
        born: (n_atoms, 3, 3), e, first index the field direction.
        epsilon: (3, 3) eps_inf.
        primitive_matrix: the primitive cell phonopy will use (``"auto"``, ``"F"``, ... or 3x3;
            None: ``atoms`` itself), as in phonopy's ``PRIMITIVE_AXES``; it decides which atoms
            are listed (the symmetry-inequivalent atoms of the primitive cell, in its order).
        supercell_matrix: phonopy's supercell matrix (needed only when the primitive cell is
            taken from a supercell of a non-primitive cell; None: identity).
        factor: NAC unit-conversion factor for the header line (None: a comment header, phonopy
            then uses its calculator's default, 14.4 eV Angstrom / e^2 for VASP-like units).
        symprec: spglib tolerance, Angstrom.
        where: names the structure in messages (its file).

    Returns:
        The file's text: a header, eps_inf and one line per listed atom, 9 numbers row-major each.

    Raises:
        DataError: not a crystal (:func:`require_crystal`), or a primitive matrix that does not fit
            the cell (e.g. ``F`` for a cell that is already primitive), with the numbers.
    """
    require_phonopy()
    from phonopy.structure.symmetry import elaborate_borns_and_epsilon

    require_crystal(atoms, where)
    z, eps = symmetrize_born(atoms, born, epsilon, symprec)
    unitcell = to_phonopy_atoms(atoms)
    pmat = _primitive_matrix(unitcell, primitive_matrix, symprec)
    try:
        z_indep, eps, listed = elaborate_borns_and_epsilon(unitcell, z, eps, primitive_matrix=pmat,
                                                           supercell_matrix=supercell_matrix, symprec=symprec)
    except Exception as exc:  # phonopy / spglib raise RuntimeError, ValueError, SpglibCppError, ...
        if pmat is None:
            raise
        raise _unfit_primitive_matrix(atoms, primitive_matrix, pmat, where, symprec, exc) from exc
    header = "# epsilon and Z* of atoms " + " ".join(str(i + 1) for i in listed)
    if factor is not None:
        header = f"{float(factor):.10g} {header}"
    rows = [eps, *z_indep]
    return "\n".join([header, *(" ".join(f"{x:17.12f}" for x in np.ravel(t)) for t in rows)]) + "\n"


def write_born(path, atoms: ase.Atoms, born, epsilon, **kwargs) -> Path:
    """Write :func:`born_file_text` to ``path`` (parent folders created); returns the path."""
    text = born_file_text(atoms, born, epsilon, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
