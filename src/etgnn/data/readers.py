"""Structure readers: every supported input format -> ``list[ase.Atoms]`` with labels in info/arrays.

Every reader returns plain :class:`ase.Atoms` whose labels sit in ``atoms.info`` (per structure)
or ``atoms.arrays`` (per atom, first axis ``n_atoms``) under the names of the source file, so that
:func:`etgnn.data.labels.extract_label` finds every label the same way.  Calculator results that
ASE moves into a ``SinglePointCalculator`` are copied back under their original names and the
calculator is detached.  A cell whose vectors are all zero is a molecule: its periodic flags are
cleared whatever the file says.  The formats, key names and conventions are documented in
``docs/data_formats.md``.

Formats (``format=`` names):
    ``extxyz``        extended XYZ, read by :func:`ase.io.read`.
    ``ase-db``        ASE SQLite database; key_value_pairs, data (dotted names) and results.
    ``id-prop``       ETGNN/CGCNN folder: ``id_prop.csv`` plus ``<id>.cif`` / ``<id>.vasp`` / ...
    ``json-records``  list of ``{"structure": <pymatgen dict>, ...}`` records (e.g. mlearn).
    ``vasp-outcar``   OUTCAR of a LEPSILON / LCALCEPS run, parsed by pymatgen.
    ``phonopy-born``  phonopy BORN file plus the unit cell it refers to.
"""

from __future__ import annotations

import csv
import difflib
import json
from pathlib import Path
from typing import Callable

import ase
import ase.io
import numpy as np
from ase.io.formats import string2index
from ase.outputs import ArrayProperty, all_outputs

from ..errors import DataError
from ..tensors import voigt_to_full
from ._dfpt import expand_born_charges, outcar_tensors, parse_born_file

__all__ = [
    "FORMATS",
    "BORN_CHARGES",
    "DIELECTRIC",
    "DIELECTRIC_IONIC",
    "PIEZOELECTRIC",
    "PIEZOELECTRIC_IONIC",
    "STRUCTURE_ID",
    "ID_PROP",
    "read_structures",
    "iter_structures",
    "detect_format",
    "read_phonopy_born",
    "read_vasp_outcar",
    "expand_born_charges",
    "parse_born_file",
]

# --- label names written by the readers (ASE's names where ASE has one) ------------------------
#: (n_atoms, 3, 3) float, e | Z[a, i, j] = (Omega/e) dP_i/du[a, j] (i: field, j: displacement)
BORN_CHARGES = "born_effective_charges"
#: (3, 3) float, dimensionless | electronic (clamped-ion) dielectric tensor eps_inf
DIELECTRIC = "dielectric_tensor"
#: (3, 3) float, dimensionless | ionic contribution to the static dielectric tensor
DIELECTRIC_IONIC = "dielectric_ionic"
#: (3, 3, 3) float, C/m^2 | clamped-ion piezoelectric tensor e_ijk = dP_i/d eps_jk
PIEZOELECTRIC = "piezoelectric_tensor"
#: (3, 3, 3) float, C/m^2 | ionic-relaxation part of the piezoelectric tensor
PIEZOELECTRIC_IONIC = "piezoelectric_ionic"
#: str | structure id (file stem of an id_prop folder, ``info['id']``)
STRUCTURE_ID = "id"
#: (k,) float | the numbers of one id_prop.csv row after the id (n_atoms * 3**M for atom tensors)
ID_PROP = "id_prop"

_PER_ATOM_RESULTS = {
    k for k, v in all_outputs.items() if isinstance(v, ArrayProperty) and v.shapespec[:1] == ("natoms",)
}
_STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", "")


def _absorb_calc(atoms: ase.Atoms) -> ase.Atoms:
    """Move calculator results into info/arrays under their own names; detach the calculator.

    ASE stores stress in Voigt form (xx, yy, zz, yz, xz, xy); it is expanded to the full (3, 3)
    tensor here (per-atom ``stresses`` to (n_atoms, 3, 3)), as inside etgnn every tensor is full.
    """
    calc = atoms.calc
    results = dict(getattr(calc, "results", {}) or {})
    for key, value in results.items():
        value = np.asarray(value)
        if key == "stress" and value.shape == (6,):
            value = voigt_to_full(value, 2, "standard")
        elif key == "stresses" and value.ndim == 2 and value.shape[1] == 6:
            value = np.stack([voigt_to_full(v, 2, "standard") for v in value])
        if key in _PER_ATOM_RESULTS and value.ndim >= 1 and value.shape[0] == len(atoms):
            atoms.set_array(key, value)
        else:
            atoms.info[key] = value.item() if value.ndim == 0 else value
    atoms.calc = None
    return atoms


def _fix_molecule(atoms: ase.Atoms) -> ase.Atoms:
    """Clear the periodic flag of every axis whose cell vector is zero (molecules)."""
    zero = np.linalg.norm(np.asarray(atoms.cell), axis=1) == 0.0
    if zero.any():
        atoms.pbc = np.asarray(atoms.pbc) & ~zero
    return atoms


def _flatten(obj, prefix: str = "") -> dict:
    """Nested dicts -> one dict with dotted keys (``{"outputs": {"energy": 1}}`` -> ``outputs.energy``)."""
    out = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _place(atoms: ase.Atoms, key: str, value) -> None:
    """Store ``value`` in arrays if it is numeric, at least 2-D and ``n_atoms`` long, else in info.

    1-D lists stay in info even when ``n_atoms`` long, so a (6,) stress of a 6-atom cell is never
    mistaken for a per-atom scalar; :func:`etgnn.data.labels.extract_label` searches both places.
    """
    arr = None
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            arr = None
    if arr is not None and arr.ndim >= 2 and arr.shape[0] == len(atoms) and key not in ("numbers", "positions"):
        atoms.set_array(key, arr)
    else:
        atoms.info[key] = arr if arr is not None else value


def _read_structure_file(path: Path, what: str = "structure file") -> ase.Atoms:
    """One structure from a POSCAR / CIF / any ASE-readable file, wrapped in :class:`DataError`."""
    fmt = {".cif": "cif", ".vasp": "vasp", ".poscar": "vasp"}.get(path.suffix.lower())
    if fmt is None and ("POSCAR" in path.name.upper() or "CONTCAR" in path.name.upper()):
        fmt = "vasp"
    try:
        return ase.io.read(path, format=fmt, index=0)
    except Exception as exc:  # ASE raises many types for malformed files
        raise DataError(f"{path}: could not read this {what} ({type(exc).__name__}: {exc})") from exc


# --- format readers: (path, index, structure_path, symprec) -> list[Atoms] -------------------------
def _read_extxyz(path: Path, index, structure_path, symprec) -> list[ase.Atoms]:
    try:
        frames = ase.io.read(path, format="extxyz", index=index)
    except Exception as exc:
        raise DataError(f"{path}: not a readable extxyz file ({type(exc).__name__}: {exc})") from exc
    frames = [frames] if isinstance(frames, ase.Atoms) else list(frames)
    return [_absorb_calc(a) for a in frames]


def _read_ase_db(path: Path, index, structure_path, symprec) -> list[ase.Atoms]:
    import ase.db

    try:
        rows = list(ase.db.connect(str(path), type="db").select())
    except Exception as exc:
        raise DataError(f"{path}: not a readable ASE database ({type(exc).__name__}: {exc})") from exc
    frames = []
    for row in _select(rows, index, path):
        atoms = _absorb_calc(row.toatoms())
        atoms.info.update(row.key_value_pairs)
        for key, value in _flatten(dict(row.data or {})).items():
            _place(atoms, key, value)
        frames.append(atoms)
    return frames


def _find_by_id(root: Path, sid: str) -> Path | None:
    for suffix in _STRUCTURE_SUFFIXES:
        candidate = root / f"{sid}{suffix}"
        if candidate.is_file():
            return candidate
    candidate = root / sid / "POSCAR"
    return candidate if candidate.is_file() else None


def _read_id_prop(path: Path, index, structure_path, symprec) -> list[ase.Atoms]:
    csv_path = path / "id_prop.csv" if path.is_dir() else path
    root = Path(structure_path) if structure_path is not None else csv_path.parent
    try:
        with open(csv_path, newline="") as fh:
            rows = [(n + 1, r) for n, r in enumerate(csv.reader(fh)) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: could not read ({type(exc).__name__}: {exc})") from exc
    records = []
    for k, (line, row) in enumerate(rows):
        sid = row[0].strip()
        try:
            values = np.array([float(c) for c in row[1:] if c.strip()], dtype=float)
        except ValueError as exc:
            if k == 0:  # a header line such as "id,xx,xy,..."
                continue
            raise DataError(f"{csv_path} line {line} ({sid}): non-numeric value ({exc})") from exc
        if values.size == 0:
            raise DataError(f"{csv_path} line {line} ({sid}): no numbers after the structure id")
        records.append((line, sid, values))
    frames = []
    for line, sid, values in _select(records, index, csv_path):
        file = _find_by_id(root, sid)
        if file is None:
            tried = ", ".join(f"{sid}{s}" for s in _STRUCTURE_SUFFIXES) + f", {sid}/POSCAR"
            raise DataError(f"{csv_path} line {line}: no structure file for id '{sid}' in {root} (tried {tried})")
        atoms = _read_structure_file(file)
        atoms.info[STRUCTURE_ID] = sid
        atoms.info[ID_PROP] = values
        frames.append(atoms)
    return frames


def _atoms_from_pymatgen(d: dict, where: str) -> ase.Atoms:
    from pymatgen.core import Molecule, Structure

    try:
        obj = Molecule.from_dict(d) if d.get("@class") == "Molecule" else Structure.from_dict(d)
    except Exception as exc:
        raise DataError(f"{where}: 'structure' is not a pymatgen Structure dict ({type(exc).__name__}: {exc})") from exc
    if not obj.is_ordered:
        raise DataError(f"{where}: disordered structure (partial occupancies) cannot be a graph")
    numbers = [site.specie.Z for site in obj]
    if isinstance(obj, Molecule):
        return ase.Atoms(numbers=numbers, positions=obj.cart_coords, pbc=False)
    return ase.Atoms(numbers=numbers, positions=obj.cart_coords, cell=obj.lattice.matrix, pbc=obj.lattice.pbc)


def _read_json_records(path: Path, index, structure_path, symprec) -> list[ase.Atoms]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({type(exc).__name__}: {exc})") from exc
    records = _columns_to_records(data) if _is_columnar(data) else [data] if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of records, got {type(data).__name__}")
    selected = _selected_fields(records)
    frames = []
    for i in _select(list(range(len(records))), index, path):
        rec = records[i]
        where = f"{path} structure {i}"
        if not isinstance(rec, dict) or "structure" not in rec:
            keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise DataError(f"{where}: record has no 'structure' key (got {keys})")
        atoms = _atoms_from_pymatgen(rec["structure"], where)
        if "id" in rec:
            atoms.info["id"] = str(rec["id"])
        rec = _expand_selected(rec, len(atoms), where, selected)
        for key, value in _flatten({k: v for k, v in rec.items() if k not in ("structure", "id")}).items():
            _place(atoms, key, value)
        frames.append(atoms)
    return frames


def _is_columnar(data) -> bool:
    """The MatTen layout: ``{field: {structure_id: value}}`` with pymatgen dicts under ``structure``."""
    if not isinstance(data, dict) or not isinstance(data.get("structure"), dict):
        return False
    column = data["structure"]
    return "sites" not in column and all(isinstance(v, dict) and "sites" in v for v in column.values())


def _columns_to_records(data: dict) -> list[dict]:
    ids = list(data["structure"])
    return [{"id": sid, **{field: values[sid] for field, values in data.items()
                           if isinstance(values, dict) and sid in values}} for sid in ids]


_NOT_LABELS = ("structure", "id", "atom_selector")


def _numeric_rows(value) -> int | None:
    """Length of a list of numbers or of numeric lists, else None."""
    if not isinstance(value, list) or not value or isinstance(value[0], (str, dict)):
        return None
    return len(value)


def _selected_fields(records: list) -> set[str]:
    """Fields given for the flagged atoms of ``atom_selector`` only: those with one entry per
    flagged atom in every record where fewer atoms than all are flagged.

    Deciding over the whole file keeps a structure-level field (e.g. a 3 x 3 tensor) whole in a
    record that happens to flag 3 atoms.  (A file in which every record flags the same number of
    atoms as such a field has rows cannot tell the two apart: the field is then taken per atom.)
    """
    evidence: dict[str, list[bool]] = {}
    for rec in records:
        if not isinstance(rec, dict) or rec.get("atom_selector") is None:
            continue
        sites = rec["structure"].get("sites") if isinstance(rec.get("structure"), dict) else None
        n_sel = int(np.sum(np.asarray(rec["atom_selector"], dtype=bool)))
        if sites is None or n_sel == len(sites):
            continue
        for key, value in rec.items():
            rows = _numeric_rows(value) if key not in _NOT_LABELS else None
            if rows is not None:
                evidence.setdefault(key, []).append(rows == n_sel)
    return {key for key, per_flagged in evidence.items() if all(per_flagged)}


def _expand_selected(rec: dict, n_atoms: int, where: str, fields) -> dict:
    """The per-flagged-atom ``fields`` (:func:`_selected_fields`, e.g. the si_nmr shielding
    tensors) become (n_atoms, ...) arrays with NaN on the atoms not flagged in ``atom_selector``,
    which etgnn treats as unlabelled."""
    selector = rec.get("atom_selector")
    if selector is None:
        return rec
    mask = np.asarray(selector, dtype=bool)
    if mask.shape != (n_atoms,):
        raise DataError(f"{where}: atom_selector has {mask.size} entries for {n_atoms} atoms")
    out = dict(rec)
    n_sel = int(mask.sum())
    for key in fields:
        if key not in rec or n_sel == n_atoms or _numeric_rows(rec[key]) is None:
            continue
        arr = np.asarray(rec[key], dtype=float)
        full = np.full((n_atoms,) + arr.shape[1:], np.nan)
        full[mask] = arr
        out[key] = full
    return out


def _born_structure_path(born: Path) -> Path:
    stem = born.name[: -len(".BORN")] if born.name.upper().endswith(".BORN") else ""
    candidate = born.with_name(f"{stem}.POSCAR-unitcell" if stem else "POSCAR-unitcell")
    if not candidate.is_file():
        raise DataError(
            f"{born}: no unit cell beside this BORN file (looked for {candidate.name}); pass "
            "structure_path= the POSCAR of the unit cell the BORN file refers to"
        )
    return candidate


def read_phonopy_born(path, structure_path=None, symprec: float = 1e-5) -> ase.Atoms:
    """Read a phonopy BORN file and expand its Born charges to every atom of the unit cell.

    Args:
        path: the BORN file (``X.BORN`` pairs with ``X.POSCAR-unitcell``, ``BORN`` with
            ``POSCAR-unitcell``, unless ``structure_path`` is given).
        structure_path: the unit cell the BORN file refers to (any ASE-readable file).
        symprec: spglib distance tolerance, Angstrom.

    Returns:
        Atoms with ``arrays['born_effective_charges']`` (n_atoms, 3, 3), units of e, in the etgnn
        convention ``Z[a, i, j] = (Omega/e) dP_i/du[a, j]`` (phonopy's own, no transpose), and
        ``info['dielectric_tensor']`` (3, 3) eps_inf.

    Raises:
        DataError: unreadable file, missing unit cell, wrong number of tensors.
    """
    path = Path(path)
    cell_path = Path(structure_path) if structure_path is not None else _born_structure_path(path)
    atoms = _read_structure_file(cell_path, "unit cell")
    eps, z_indep = parse_born_file(path)
    atoms.set_array(BORN_CHARGES, expand_born_charges(atoms, z_indep, symprec=symprec, source=str(path)))
    atoms.info[DIELECTRIC] = eps
    return atoms


def _read_born(path: Path, index, structure_path, symprec) -> list[ase.Atoms]:
    return _select([read_phonopy_born(path, structure_path, symprec)], index, path)


def _outcar_structure(path: Path, structure_path) -> ase.Atoms:
    if structure_path is not None:
        return _read_structure_file(Path(structure_path))
    try:
        return _absorb_calc(ase.io.read(path, format="vasp-out", index=-1))
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    suffix = path.name[len("OUTCAR") :] if path.name.upper().startswith("OUTCAR") else ""
    for name in (f"POSCAR{suffix}", f"CONTCAR{suffix}", "POSCAR", "CONTCAR"):
        if (path.parent / name).is_file():
            return _read_structure_file(path.parent / name)
    raise DataError(
        f"{path}: could not read the structure from the OUTCAR ({reason}) and found no POSCAR or "
        "CONTCAR beside it; pass structure_path="
    )


def read_vasp_outcar(path, structure_path=None) -> ase.Atoms:
    """Read the dielectric response of a VASP LEPSILON / LCALCEPS run from its OUTCAR.

    Born tensors are kept as VASP prints them (rows = field direction, the etgnn convention);
    when the OUTCAR holds several Born blocks the last one is kept.

    Args:
        path: the OUTCAR.
        structure_path: structure file; by default the OUTCAR itself (ASE) or else a POSCAR /
            CONTCAR in the same folder.

    Returns:
        Atoms with ``arrays['born_effective_charges']`` (n_atoms, 3, 3) e and, when present,
        ``info['dielectric_tensor']`` (3, 3) eps_inf, ``info['dielectric_ionic']`` (3, 3),
        ``info['piezoelectric_tensor']`` and ``info['piezoelectric_ionic']`` (3, 3, 3) C/m^2.

    Raises:
        DataError: unparsable OUTCAR, no dielectric response in it, or no structure.
    """
    path = Path(path)
    tensors = outcar_tensors(path)
    atoms = _outcar_structure(path, structure_path)
    n = len(atoms)
    if "born" in tensors:
        born = tensors["born"]
        if born.ndim != 3 or len(born) % n:
            raise DataError(f"{path}: {len(born)} Born tensors do not fit the {n} atoms of the structure")
        atoms.set_array(BORN_CHARGES, born[-n:])
    names = {"eps": DIELECTRIC, "eps_ionic": DIELECTRIC_IONIC, "piezo": PIEZOELECTRIC,
             "piezo_ionic": PIEZOELECTRIC_IONIC}
    for short, key in names.items():
        if short in tensors:
            atoms.info[key] = tensors[short]
    return atoms


def _read_outcar(path: Path, index, structure_path, symprec) -> list[ase.Atoms]:
    return _select([read_vasp_outcar(path, structure_path)], index, path)


#: format name -> reader(path, index, structure_path, symprec) -> list[Atoms]
FORMATS: dict[str, Callable[..., list[ase.Atoms]]] = {
    "extxyz": _read_extxyz,
    "ase-db": _read_ase_db,
    "id-prop": _read_id_prop,
    "json-records": _read_json_records,
    "vasp-outcar": _read_outcar,
    "phonopy-born": _read_born,
}


def _select(items: list, index, path) -> list:
    """Apply an ASE-style index (``":"``, ``"-1"``, ``"2:10:2"``, int or slice) to ``items``."""
    idx = string2index(index) if isinstance(index, str) else index
    try:
        picked = items[idx]
    except (IndexError, TypeError) as exc:
        raise DataError(f"{path}: index {index!r} does not select from {len(items)} structures") from exc
    return list(picked) if isinstance(idx, slice) else [picked]


def detect_format(path) -> str:
    """Guess the format name of ``path`` from its name, then from its first bytes.

    Raises:
        DataError: when nothing matches; the message lists the known formats.
    """
    path = Path(path)
    name, suffix = path.name, path.suffix.lower()
    if path.is_dir():
        if (path / "id_prop.csv").is_file():
            return "id-prop"
        raise DataError(f"{path}: a folder must hold id_prop.csv (ETGNN/CGCNN layout) to be read")
    by_name = [
        (name == "id_prop.csv", "id-prop"),
        (suffix in (".xyz", ".extxyz"), "extxyz"),
        (suffix == ".db", "ase-db"),
        (suffix == ".json", "json-records"),
        (name == "BORN" or suffix == ".born", "phonopy-born"),
        ("OUTCAR" in name.upper(), "vasp-outcar"),
    ]
    for hit, fmt in by_name:
        if hit:
            return fmt
    with open(path, "rb") as fh:
        head = fh.read(256)
    first = head.split(b"\n", 1)[0].strip()
    if head.startswith(b"SQLite format 3"):
        return "ase-db"
    if first.isdigit():
        return "extxyz"
    if head.lstrip()[:1] in (b"[", b"{"):
        return "json-records"
    raise DataError(f"{path}: cannot tell the file format; pass format= one of {sorted(FORMATS)}")


def read_structures(path, format: str | None = None, index=":", *, structure_path=None, symprec: float = 1e-5):
    """Read structures and their labels from any supported format.

    Args:
        path: file or folder (see :data:`FORMATS` and ``docs/data_formats.md``).
        format: format name; detected from the name / content when ``None``.
        index: ASE-style selection: ``":"`` (all), ``"-1"``, ``"0:100"``, an int or a slice.
        structure_path: structure file for ``phonopy-born`` / ``vasp-outcar``, or the folder of
            structure files for ``id-prop`` (default: beside the data file).
        symprec: spglib tolerance (Angstrom) used to expand phonopy Born charges.

    Returns:
        list of Atoms; positions/cell in Angstrom, cell rows are lattice vectors, labels in
        ``info`` / ``arrays`` under the names of the source (see the format table in the docs).

    Raises:
        DataError: missing or unreadable file, unknown format (with the known ones listed), or a
            format-specific problem; messages name the file and, when known, the structure.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    fmt = format if format is not None else detect_format(path)
    if fmt not in FORMATS:
        close = difflib.get_close_matches(str(fmt), FORMATS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"{path}: unknown format {fmt!r}; known formats: {', '.join(sorted(FORMATS))}{hint}")
    frames = FORMATS[fmt](path, index, structure_path, symprec)
    return [_fix_molecule(a) for a in frames]


def iter_structures(path, format: str | None = None, *, structure_path=None, symprec: float = 1e-5):
    """Yield the structures of ``path`` one by one, prepared exactly as :func:`read_structures` does.

    extxyz and every other ASE-readable format (CIF, POSCAR, ASE trajectories) are streamed frame
    by frame with :func:`ase.io.iread`, so memory stays flat on long trajectories; each frame gets
    the same treatment as in training (calculator results absorbed under their own names, zero
    cells made non-periodic).  etgnn's own formats (id-prop, json-records, ase-db, phonopy-born,
    vasp-outcar) are read whole by :func:`read_structures`.

    Args:
        path: file or folder.
        format: a :data:`FORMATS` name or an ASE format name; detected when ``None`` (anything
            :func:`detect_format` does not know is left to ASE).
        structure_path, symprec: as in :func:`read_structures`.

    Raises:
        DataError: missing or unreadable file (naming it).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    fmt = format
    if fmt is None:
        try:
            fmt = detect_format(path)
        except DataError:
            fmt = None  # let ASE guess from the name (CIF, POSCAR, .traj, ...)
    if fmt in FORMATS and fmt != "extxyz":
        yield from read_structures(path, format=fmt, structure_path=structure_path, symprec=symprec)
        return
    frames = ase.io.iread(path, index=":", format=fmt)
    k = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # ASE raises many types for malformed files
            raise DataError(f"{path}: could not read structure {k} ({type(exc).__name__}: {exc})") from exc
        yield _fix_molecule(_absorb_calc(atoms))
        k += 1
