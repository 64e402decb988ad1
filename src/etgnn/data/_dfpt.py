"""DFPT outputs: phonopy BORN files (parsing, symmetry expansion) and VASP OUTCAR tensors.

A BORN file (phonopy docs, "BORN (optional)") holds:

1. a header line: the non-analytical-correction unit factor, or any non-numeric text
   (``default value``, ``# epsilon and Z* of atoms 1 13``) meaning the calculator default;
2. eps_inf as 9 numbers xx xy xz yx yy yz zx zy zz;
3. one line of 9 numbers (same order) per symmetry-inequivalent atom of the unit cell, in atom
   order; a file written without symmetry lists every atom instead.

phonopy's NAC formula contracts the wave vector with the *first* index (``q_g Z_{g a}``), so the
first index is the field / polarization direction, as in etgnn; no transpose is applied.

VASP prints each Born tensor of a LEPSILON / LCALCEPS run with one row per *field* direction (the
row label), and pymatgen keeps that row as ``born[a, i, :]``: again the etgnn convention.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import ase
import numpy as np
import spglib

from ..errors import DataError
from ..tensors import voigt_to_full

__all__ = ["parse_born_file", "expand_born_charges", "symmetry_operations", "outcar_tensors"]


def _numbers(line: str) -> list[float] | None:
    try:
        return [float(x) for x in line.split()]
    except ValueError:
        return None


def parse_born_file(path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a phonopy BORN file.

    Args:
        path: the BORN file.

    Returns:
        ``(eps, z)``: eps_inf (3, 3) dimensionless and the listed Born charges (k, 3, 3) in e,
        row-major (``Z[i, j]`` at ``3 * i + j``), in file order.

    Raises:
        DataError: unreadable file, a line without 9 numbers, or no Born charges.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: could not read BORN file ({type(exc).__name__}: {exc})") from exc
    body = [(n + 1, s.strip()) for n, s in enumerate(lines) if s.strip()]
    if not body:
        raise DataError(f"{path}: empty BORN file")
    header = _numbers(body[0][1])
    if header is not None and len(header) == 9:
        raise DataError(
            f"{path} line {body[0][0]}: the first line must be the unit factor or a comment, got 9 "
            "numbers (the dielectric tensor?); add a header line such as 'default value'"
        )
    rows = []
    for lineno, text in body[1:]:
        if text.startswith("#"):
            continue
        values = _numbers(text)
        if values is None or len(values) != 9:
            raise DataError(f"{path} line {lineno}: expected 9 numbers (a 3x3 tensor, row-major), got {text!r}")
        rows.append(values)
    if len(rows) < 2:
        raise DataError(f"{path}: needs the dielectric tensor and at least one Born charge tensor")
    data = np.asarray(rows, dtype=float).reshape(-1, 3, 3)
    return data[0], data[1:]


def symmetry_operations(atoms: ase.Atoms, symprec: float = 1e-5):
    """Space-group operations of ``atoms`` from spglib.

    Returns:
        ``(rotations, translations, equivalent_atoms)``: fractional rotations (n_ops, 3, 3) int
        acting as ``x' = R x + t`` on fractional column vectors, translations (n_ops, 3) and the
        spglib orbit label of each atom (n_atoms,).

    Raises:
        DataError: when spglib finds no symmetry dataset (e.g. overlapping atoms).
    """
    cell = (np.asarray(atoms.cell), atoms.get_scaled_positions(), atoms.numbers)
    with warnings.catch_warnings():  # spglib 2.x warns about its own error-handling switch
        warnings.filterwarnings("ignore", message=".*OLD_ERROR_HANDLING.*", category=DeprecationWarning)
        try:
            dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
        except Exception:  # spglib >= 2.5 may raise SpglibError instead of returning None
            dataset = None
    if dataset is None:
        raise DataError(f"spglib found no symmetry for {atoms.get_chemical_formula()} (symprec={symprec})")
    return np.asarray(dataset.rotations), np.asarray(dataset.translations), np.asarray(dataset.equivalent_atoms)


def _cartesian(rotations: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Fractional rotations -> Cartesian: ``R_c = A R A^-1`` with ``A = cell.T`` (columns = lattice vectors)."""
    a = cell.T
    return np.einsum("ij,njk,kl->nil", a, rotations, np.linalg.inv(a))


def expand_born_charges(atoms: ase.Atoms, z_indep, symprec: float = 1e-5, source: str = "<memory>") -> np.ndarray:
    """Born charges of every atom from those of the symmetry-inequivalent atoms.

    The inequivalent atoms are the first atom of each spglib orbit, in atom order (phonopy's
    "independent atoms").  Atom ``b`` of the orbit of ``a`` gets ``Z_b = R Z_a R^T`` with ``R`` the
    Cartesian rotation of a space-group operation taking ``a`` to ``b``.  When ``z_indep`` has one
    tensor per atom (a file written without symmetry) it is returned unchanged.

    Args:
        atoms: the unit cell the tensors refer to.
        z_indep: (k, 3, 3) Born charges, e, first index = field direction.
        symprec: spglib tolerance, Angstrom.
        source: file name used in error messages.

    Returns:
        (n_atoms, 3, 3) float64, e.

    Raises:
        DataError: when ``k`` is neither the number of inequivalent atoms nor ``n_atoms``.
    """
    z_indep = np.asarray(z_indep, dtype=float).reshape(-1, 3, 3)
    n = len(atoms)
    if len(z_indep) == n:
        return z_indep.copy()
    rotations, translations, equivalent = symmetry_operations(atoms, symprec)
    first = {}
    for i, label in enumerate(equivalent):
        first.setdefault(label, i)
    independent = sorted(first.values())
    if len(z_indep) != len(independent):
        listed = " ".join(str(i + 1) for i in independent)
        raise DataError(
            f"{source}: {len(z_indep)} Born charge tensors, expected {len(independent)} (one per "
            f"symmetry-inequivalent atom: atoms {listed} of {n}, symprec={symprec}) or {n} (one per atom)"
        )
    z_of = dict(zip(independent, z_indep))
    cell = np.asarray(atoms.cell)
    r_cart = _cartesian(rotations, cell)
    frac = atoms.get_scaled_positions()
    out = np.empty((n, 3, 3))
    for b in range(n):
        a = first[equivalent[b]]
        diff = frac[a] @ rotations.transpose(0, 2, 1) + translations - frac[b]
        diff -= np.rint(diff)
        dist = np.linalg.norm(diff @ cell, axis=1)
        op = int(np.argmin(dist))
        if dist[op] > 10 * symprec:
            raise DataError(f"{source}: no symmetry operation maps atom {a + 1} onto atom {b + 1}")
        out[b] = r_cart[op] @ z_of[a] @ r_cart[op].T
    return out


def _has(outcar, pattern: str) -> bool:
    outcar.read_pattern({"_probe": pattern}, terminate_on_match=True)
    return bool(outcar.data.pop("_probe", None))


def outcar_tensors(path) -> dict[str, np.ndarray]:
    """Dielectric-response tensors of a VASP LEPSILON / LCALCEPS OUTCAR, parsed by pymatgen.

    Args:
        path: the OUTCAR.

    Returns:
        dict with, when present: ``born`` (k, 3, 3) e, every Born tensor pymatgen read (several
        blocks are concatenated), ``Z[a, i, j]`` with i = field direction; ``eps`` (3, 3) eps_inf;
        ``eps_ionic`` (3, 3); ``piezo`` and ``piezo_ionic`` (3, 3, 3) C/m^2, expanded from VASP's
        3x6 rows (field x, y, z; columns xx, yy, zz, xy, yz, zx).

    Raises:
        DataError: unparsable OUTCAR or no dielectric response in it.
    """
    from pymatgen.io.vasp.outputs import Outcar

    try:
        outcar = Outcar(str(path))
        if not outcar.lepsilon and _has(outcar, r"BORN EFFECTIVE CHARGES"):
            outcar.read_lepsilon()  # LCALCEPS runs: pymatgen only reads these when LEPSILON = T
            outcar.lepsilon = True
    except Exception as exc:  # pymatgen raises IndexError, KeyError, RuntimeError, ...
        raise DataError(f"{path}: pymatgen could not parse this OUTCAR ({type(exc).__name__}: {exc})") from exc
    if not outcar.lepsilon:
        raise DataError(
            f"{path}: no dielectric response found; is this the OUTCAR of a LEPSILON = .TRUE. or "
            "LCALCEPS = .TRUE. run?"
        )
    out = {}
    born = np.asarray(outcar.born, dtype=float)
    if born.size:
        out["born"] = born
    if _has(outcar, r"MACROSCOPIC STATIC DIELECTRIC TENSOR \("):
        out["eps"] = np.asarray(outcar.dielectric_tensor, dtype=float)
    if _has(outcar, r"PIEZOELECTRIC TENSOR  for field in x, y, z"):
        out["piezo"] = voigt_to_full(np.asarray(outcar.piezo_tensor), 3, "vasp")
    if getattr(outcar, "dfpt", False) and hasattr(outcar, "dielectric_ionic_tensor"):
        out["eps_ionic"] = np.asarray(outcar.dielectric_ionic_tensor, dtype=float)
        out["piezo_ionic"] = voigt_to_full(np.asarray(outcar.piezo_ionic_tensor), 3, "vasp")
    return out
