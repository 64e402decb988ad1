"""Label extraction: a field of an :class:`ase.Atoms` -> a full Cartesian float64 tensor.

Readers (:mod:`etgnn.data.readers`) leave labels as the source wrote them: flattened, full,
Voigt, per-atom tensors flattened into one info vector (``id_prop``).  :func:`extract_label`
is the single place that turns them into full Cartesian tensors and rejects bad values with a
message naming the file, the structure, the field and what was expected.

Accepted forms of a rank-``M`` value (``T[a, b]`` at ``3 * a + b`` when flattened, row-major):

=========  ================================================================================
level      accepted
=========  ================================================================================
structure  full ``(3,)*M``; ``3**M`` numbers; Voigt: 6 (M=2, symmetric), 3x6 (M=3), 6x6 (M=4)
atom       ``(n_atoms, 3, ..., 3)``; ``(n_atoms, 3**M)``; ``(n_atoms * 3**M,)``; per-atom Voigt
           3x6 / 6x6 for M = 3 / 4 only: per-atom rank-2 tensors (Born charges) are not
           symmetric, so 6 values per atom are rejected
=========  ================================================================================
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import ase
import numpy as np

from ..errors import ConfigError, DataError, ShapeError
from ..tensors import VOIGT_ORDERS, to_cartesian

__all__ = ["LabelSpec", "MissingLabel", "labelled", "labelled_rows", "extract_label", "acoustic_sum_violation", "obeys_sum_rule", "sum_rule_violations", "check_sum_rule"]

_LEVELS = ("atom", "structure")
_VOIGT_SIZE = {2: 6, 3: 18, 4: 36}
_STRUCTURAL = {"numbers", "positions"}


@dataclass(frozen=True)
class LabelSpec:
    """What a target needs from the data.

    Attributes:
        key: field name in ``atoms.info`` / ``atoms.arrays`` (or calculator results); dotted
            names (``outputs.forces``) are looked up as given, then through nested dicts.
        level: ``"atom"`` (one tensor per atom) or ``"structure"`` (one per structure).
        rank: tensor rank ``M >= 0``.
        voigt_order: Voigt order (``"vasp"`` xx yy zz xy yz zx, or ``"standard"`` xx yy zz yz
            xz xy) used when a value comes in Voigt form; no factors of 2 are applied.
        transpose: swap the two indices of rank-2 values (inputs whose Born charges have the
            displacement direction first).

    Raises:
        ConfigError: on an unknown level or Voigt order, a negative rank, or ``transpose``
            with a rank other than 2.
    """

    key: str
    level: str
    rank: int
    voigt_order: str = "vasp"
    transpose: bool = False

    def __post_init__(self):
        if self.level not in _LEVELS:
            raise ConfigError(f"LabelSpec {self.key!r}: level must be one of {_LEVELS}, got {self.level!r}")
        if not isinstance(self.rank, int) or self.rank < 0:
            raise ConfigError(f"LabelSpec {self.key!r}: rank must be an integer >= 0, got {self.rank!r}")
        if self.voigt_order not in VOIGT_ORDERS:
            raise ConfigError(
                f"LabelSpec {self.key!r}: voigt_order must be one of {sorted(VOIGT_ORDERS)}, got {self.voigt_order!r}"
            )
        if self.transpose and self.rank != 2:
            raise ConfigError(f"LabelSpec {self.key!r}: transpose applies to rank-2 tensors only, rank is {self.rank}")

    @classmethod
    def from_target(cls, target) -> "LabelSpec":
        """The spec of a target: an :class:`etgnn.config.TargetConfig` (or a
        :class:`etgnn.targets.Target`, through its ``config``)."""
        c = getattr(target, "config", target)
        return cls(key=c.key, level=c.level, rank=c.rank, voigt_order=c.voigt_order, transpose=c.transpose)

    def shape(self, n_atoms: int) -> tuple[int, ...]:
        """Shape of one structure's label: (n_atoms, 3, ...) per atom, (3, ...) per structure."""
        return ((n_atoms,) if self.level == "atom" else ()) + (3,) * self.rank


class MissingLabel(DataError):
    """A structure has no field for a target (it may still be labelled for the others)."""


def labelled(rows) -> np.ndarray:
    """(n,) bool: which of the rows (n, ...) carry a value; an unlabelled atom or structure is NaN
    in every component.  The torch twin is :func:`etgnn.targets.losses.labelled_mask`."""
    a = np.asarray(rows, dtype=float)
    flat = a.reshape(a.shape[0], int(np.prod(a.shape[1:])))  # explicit width: also for zero rows
    return ~np.isnan(flat).all(axis=1) if flat.shape[1] else np.ones(flat.shape[0], dtype=bool)


def labelled_rows(label: np.ndarray, level: str) -> np.ndarray:
    """:func:`labelled` of one structure's label: (n_atoms,) for per-atom labels, (1,) for a
    structure label."""
    a = np.asarray(label, dtype=float)
    return labelled(a if level == "atom" else a.reshape(1, -1))


def _where(atoms: ase.Atoms, source: str, index: int) -> str:
    sid = atoms.info.get("id")
    return f"{source} structure {index}" + (f" ({sid})" if isinstance(sid, str) else "")


def _available(atoms: ase.Atoms) -> list[str]:
    keys = set(atoms.info) | (set(atoms.arrays) - _STRUCTURAL)
    results = getattr(atoms.calc, "results", None) or {}
    return sorted(keys | set(results))


def _lookup(atoms: ase.Atoms, key: str, where: str):
    """Value of ``key``: info, then arrays, then calculator results, then nested dicts."""
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays and key not in _STRUCTURAL:
        return atoms.arrays[key]
    results = getattr(atoms.calc, "results", None) or {}
    if key in results:
        return results[key]
    head, _, rest = key.partition(".")
    node = atoms.info.get(head)
    for part in rest.split(".") if rest else ():
        node = node.get(part) if isinstance(node, dict) else None
    if rest and node is not None:
        return node
    available = _available(atoms)
    close = difflib.get_close_matches(key, available, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise MissingLabel(f"{where}: field {key!r} not found; available: {', '.join(available) or '(none)'}{hint}")


def _forms(rank: int, per_atom: bool) -> str:
    forms = f"{3**rank}"
    if rank in _VOIGT_SIZE and not (per_atom and rank == 2):
        forms += f" or {_VOIGT_SIZE[rank]} (Voigt)"
    return forms


def _structure_tensor(a: np.ndarray, spec: LabelSpec, where: str) -> np.ndarray:
    if spec.rank == 0:
        if a.size != 1:
            raise ShapeError(f"{where}: field {spec.key!r} has {a.size} values, expected 1 (a scalar)")
        return a.reshape(())
    ok = a.size == 3**spec.rank or a.size == _VOIGT_SIZE.get(spec.rank)
    if not ok:
        raise ShapeError(
            f"{where}: field {spec.key!r} has {a.size} values (shape {a.shape}), expected "
            f"{_forms(spec.rank, False)} (rank-{spec.rank} structure tensor)"
        )
    return to_cartesian(a, spec.rank, spec.voigt_order)


def _atom_tensors(a: np.ndarray, spec: LabelSpec, n: int, where: str) -> np.ndarray:
    rank = spec.rank
    if a.ndim >= 2 and a.shape[0] != n:
        raise ShapeError(
            f"{where}: field {spec.key!r} has shape {a.shape}, expected (n_atoms={n}, ...) for a per-atom tensor"
        )
    if a.size % n:
        raise ShapeError(
            f"{where}: field {spec.key!r} has {a.size} values for {n} atoms, expected "
            f"{n} x {3**rank} = {n * 3**rank} (rank-{rank} tensor per atom)"
        )
    per_atom = a.reshape(n, -1)
    k = per_atom.shape[1]
    if k == 3**rank:
        return per_atom.reshape((n,) + (3,) * rank)
    if rank in (3, 4) and k == _VOIGT_SIZE[rank]:
        return np.stack([to_cartesian(row, rank, spec.voigt_order) for row in per_atom])
    why = ""
    if rank == 2 and k == 6:
        why = "; Voigt input is rejected for per-atom rank-2 tensors because Born charges are not symmetric"
    raise ShapeError(
        f"{where}: field {spec.key!r} has {k} values per atom, expected {_forms(rank, True)} "
        f"(rank-{rank} tensor{why})"
    )


def _check_finite(t: np.ndarray, spec: LabelSpec, where: str) -> None:
    """No inf anywhere; NaN only as a whole unlabelled atom (every component of its tensor) or a
    whole unlabelled structure tensor."""
    rows = t.reshape(t.shape[0] if spec.level == "atom" else 1, -1)
    unlabelled = np.isnan(rows).all(axis=1) if rows.shape[1] else np.zeros(rows.shape[0], dtype=bool)
    bad = np.argwhere((~np.isfinite(rows) & ~unlabelled[:, None]).reshape(t.shape))
    if len(bad):
        first = tuple(int(i) for i in bad[0])
        what = f"atom {first[0]}, component {first[1:]}" if spec.level == "atom" else f"component {first}"
        raise DataError(f"{where}: field {spec.key!r} has {len(bad)} NaN/inf value(s), first at {what}")


def extract_label(atoms: ase.Atoms, spec: LabelSpec, *, source: str = "<memory>", index: int = 0) -> np.ndarray:
    """Read the field ``spec.key`` of ``atoms`` as a full Cartesian float64 tensor.

    Args:
        atoms: one structure (from :func:`etgnn.data.readers.read_structures` or ASE).
        spec: what to read.
        source: file name for error messages.
        index: structure index in ``source`` for error messages.

    Returns:
        level ``"atom"``: (n_atoms, 3, ..., 3) with ``rank`` trailing axes ((n_atoms,) for rank 0);
        level ``"structure"``: (3, ..., 3) (() for rank 0).  Units are those of the data.

    Raises:
        DataError: missing field (the message lists the available ones and the closest name),
            non-numeric or NaN/inf values.
        ShapeError: a number of values that fits none of the accepted forms.

    >>> a = ase.Atoms("NaCl", positions=[[0, 0, 0], [1, 0, 0]])
    >>> a.arrays["becs"] = np.tile(np.eye(3).ravel(), (2, 1))
    >>> extract_label(a, LabelSpec("becs", "atom", 2)).shape
    (2, 3, 3)
    """
    where = _where(atoms, source, index)
    value = _lookup(atoms, spec.key, where)
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: field {spec.key!r} is not numeric ({type(value).__name__}: {value!r:.60})") from exc
    if spec.level == "atom":
        t = _atom_tensors(a, spec, len(atoms), where)
    else:
        t = _structure_tensor(a, spec, where)
    if spec.transpose:
        t = np.swapaxes(t, -1, -2)
    _check_finite(t, spec, where)
    return np.array(t, dtype=np.float64)


def obeys_sum_rule(target) -> bool:
    """A per-atom rank-2 target declared to sum to zero over each structure (``sum_rule`` or a
    ``sum_rule_weight``): Born charges, atomic polar tensors.  Only those are checked; an NMR
    shielding or a per-atom polarizability obeys no such rule (a :class:`etgnn.targets.Target`
    or its ``TargetConfig``)."""
    target = getattr(target, "config", target)
    return target.level == "atom" and target.rank == 2 and (target.sum_rule or target.sum_rule_weight > 0)


def acoustic_sum_violation(becs) -> float:
    """Charge-neutrality (acoustic) sum-rule violation of Born charges.

    Args:
        becs: (n_atoms, 3, 3) Born effective charges, e.

    Returns:
        Frobenius norm of ``sum_a Z[a]``, e (0 for an exactly neutral set).

    Raises:
        ShapeError: if ``becs`` is not (n_atoms, 3, 3).

    >>> acoustic_sum_violation(np.stack([np.eye(3), -np.eye(3)]))
    0.0
    """
    z = np.asarray(becs, dtype=float)
    if z.ndim != 3 or z.shape[1:] != (3, 3):
        raise ShapeError(f"Born charges must have shape (n_atoms, 3, 3), got {z.shape}")
    if np.isnan(z).any():  # some atoms unlabelled: the sum over the structure is unknown
        return 0.0
    return float(np.linalg.norm(z.sum(axis=0)))


def _check_bec_spec(spec: LabelSpec) -> None:
    if spec.level != "atom" or spec.rank != 2:
        raise ConfigError(
            f"the acoustic sum rule applies to per-atom rank-2 tensors; {spec.key!r} is level "
            f"{spec.level!r}, rank {spec.rank}"
        )


def sum_rule_violations(structures, spec: LabelSpec, source: str = "<memory>") -> np.ndarray:
    """Acoustic sum-rule violation of every structure.

    Args:
        structures: sequence of Atoms.
        spec: a per-atom rank-2 label (Born charges).
        source: file name for error messages.

    Returns:
        (n_structures,) float64, e (see :func:`acoustic_sum_violation`).
    """
    _check_bec_spec(spec)
    return np.array(
        [acoustic_sum_violation(extract_label(a, spec, source=source, index=i)) for i, a in enumerate(structures)]
    )


def check_sum_rule(structures, spec: LabelSpec, threshold: float, source: str = "<memory>") -> list[int]:
    """Indices of the structures whose Born charges violate the acoustic sum rule.

    Args:
        structures: sequence of Atoms.
        spec: a per-atom rank-2 label (Born charges).
        threshold: largest accepted ``|sum_a Z[a]|_F``, e.
        source: file name for error messages.

    Returns:
        Sorted indices ``i`` with violation > ``threshold``; the caller reports or drops them.

    Raises:
        ConfigError: if ``spec`` is not per-atom rank 2 or ``threshold`` is negative.
    """
    if not threshold >= 0:
        raise ConfigError(f"sum-rule threshold must be >= 0 (units of e), got {threshold}")
    violations = sum_rule_violations(structures, spec, source)
    return [int(i) for i in np.flatnonzero(violations > threshold)]
