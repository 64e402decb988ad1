"""Training-set statistics, computed by one pure function and handed to :func:`etgnn.build_model`.

``compute_statistics(train, targets)`` returns a :class:`Statistics`: the mean numbers of edges
and triplets per atom (the heads divide their sums over neighbours by them), the elements seen,
and per target an output scale and an isotropic shift (:class:`TargetStatistics`), plus the
constant predictors the metrics' baselines use.  Nothing is written into a model: the model is
built from them (:class:`etgnn.nn.normalize.ScaleShift`, :class:`etgnn.nn.normalize.NeighbourCounts`)
and keeps them once, as buffers of its ``state_dict`` (``model.statistics()`` reads them back).

The shift uses isotropic tensors only, so equivariance is untouched: per element for per-atom
targets and for extensive (``reduce: sum``) structure targets, one global value for intensive
structure targets; the scale is the RMS per component of what remains.  Only labelled rows count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from ..tensors import isotropic_tensors
from . import keys as K
from .labels import labelled

__all__ = ["Statistics", "TargetStatistics", "compute_statistics", "training_baselines", "mean_baseline",
           "atomic_numbers", "DEFAULT_EDGES_PER_ATOM", "DEFAULT_TRIPLETS_PER_ATOM"]

#: Edges and triplets per atom assumed by a model built without statistics (about what a 6 / 4
#: Angstrom cutoff pair gives in a dense solid); training replaces them by the training set's means.
DEFAULT_EDGES_PER_ATOM = 32.0
DEFAULT_TRIPLETS_PER_ATOM = 128.0


@dataclass
class TargetStatistics:
    """Normalisation of one target.

    Attributes:
        scale: output scale, data units (RMS per component of the labels after the shift).
        shift: ``{Z: [coefficients on the isotropic tensors of the rank]}`` (empty: no shift).
    """

    scale: float = 1.0
    shift: dict[int, list[float]] = field(default_factory=dict)


@dataclass
class Statistics:
    """Everything a model takes from its training data.

    Attributes:
        edges_per_atom, triplets_per_atom: mean counts over the training atoms (at least 1).
        elements: atomic numbers present in the training structures (empty: unknown).
        targets: ``{target: TargetStatistics}``.
        baselines: the metrics' constant predictors (:func:`training_baselines`).
    """

    edges_per_atom: float = DEFAULT_EDGES_PER_ATOM
    triplets_per_atom: float = DEFAULT_TRIPLETS_PER_ATOM
    elements: list[int] = field(default_factory=list)
    targets: dict[str, TargetStatistics] = field(default_factory=dict)
    baselines: dict | None = None

    def to_dict(self) -> dict:
        """Plain types (JSON / YAML / torch.save friendly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Statistics":
        targets = {n: TargetStatistics(float(t["scale"]), {int(z): list(v) for z, v in t.get("shift", {}).items()})
                   for n, t in d.get("targets", {}).items()}
        return cls(float(d["edges_per_atom"]), float(d["triplets_per_atom"]), [int(z) for z in d.get("elements", [])],
                   targets, d.get("baselines"))


def _iso_coefficients(y: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of ``y`` (n, 3**M) on the isotropic basis (n_iso, 3**M)."""
    return np.linalg.solve(basis @ basis.T, basis @ y.T).T  # (n, n_iso)


def _scale(y: np.ndarray) -> float:
    scale = float(np.sqrt(np.mean(y**2))) if y.size else 1.0
    return scale if np.isfinite(scale) and scale >= 1e-12 else 1.0


def _atom_target(y: np.ndarray, z: np.ndarray, basis: np.ndarray) -> TargetStatistics:
    """Per-atom target: per-element mean isotropic part, then the RMS of the rest."""
    shift = {}
    if basis.shape[0] and len(y):
        coef = _iso_coefficients(y, basis)
        table = np.zeros((z.max() + 1, basis.shape[0]))
        for el in np.unique(z):
            table[el] = coef[z == el].mean(axis=0)
            shift[int(el)] = table[el].tolist()
        y = y - table[z] @ basis
    return TargetStatistics(_scale(y), shift)


def _structure_target(y: np.ndarray, numbers: list[np.ndarray], basis: np.ndarray, extensive: bool,
                      ridge: float) -> TargetStatistics:
    """Structure target: one global isotropic shift (intensive) or additive per-element shifts
    fitted by ridge-regularised least squares on the compositions (extensive)."""
    shift = {}
    if basis.shape[0] and len(y) and not extensive:
        # intensive: one global isotropic shift.  A per-element fit on composition fractions
        # over-fits (64 elements, ~1000 crystals) and was measured to hurt the dielectric tensor
        # of phonondb_bec_eps (docs/model.md).
        coef = _iso_coefficients(y, basis).mean(axis=0)
        shift = {z: coef.tolist() for z in range(1, 119)}
        y = y - coef @ basis
    elif basis.shape[0] and len(y):
        coef = _iso_coefficients(y, basis)
        elements = np.unique(np.concatenate(numbers))
        comp = np.zeros((len(numbers), len(elements)))
        owner = np.repeat(np.arange(len(numbers)), [len(z) for z in numbers])
        np.add.at(comp, (owner, np.searchsorted(elements, np.concatenate(numbers))), 1.0)
        sol = np.linalg.solve(comp.T @ comp + ridge * np.eye(len(elements)), comp.T @ coef)
        shift = {int(el): sol[k].tolist() for k, el in enumerate(elements)}
        y = y - (comp @ sol) @ basis
    return TargetStatistics(_scale(y), shift)


def mean_baseline(y: np.ndarray, numbers: np.ndarray | None) -> dict:
    """``{"mean": [3**M]}`` plus ``"per_element": {Z: [3**M]}`` when ``numbers`` (per-atom) is given.

    Args:
        y: (n, 3**M) rows; numbers: (n,) atomic numbers of the rows, or ``None`` (structures).
    """
    out = {"mean": y.mean(axis=0).tolist() if len(y) else [0.0] * y.shape[1]}
    if numbers is not None:
        elements, inverse = np.unique(np.asarray(numbers, dtype=np.int64), return_inverse=True)
        sums = np.zeros((len(elements), y.shape[1]))
        np.add.at(sums, inverse, y)
        means = sums / np.bincount(inverse, minlength=len(elements))[:, None]
        out["per_element"] = {int(z): means[k].tolist() for k, z in enumerate(elements)}
    return out


def atomic_numbers(dataset) -> np.ndarray:
    """(total n_atoms,) atomic numbers of a :class:`~etgnn.data.dataset.GraphDataset`, in its order."""
    return (np.concatenate([np.asarray(g[K.NUMBERS]) for g in dataset.graphs]) if len(dataset)
            else np.zeros(0, dtype=np.int64))


def training_baselines(dataset, targets) -> dict:
    """The constant predictors the baselines use, fitted on (training) data.

    Args:
        dataset: a :class:`etgnn.data.dataset.GraphDataset` (the training part).
        targets: ``{name: TargetConfig}`` (``level``, ``rank``).

    Returns:
        ``{target: {"mean": [3**M], "per_element": {Z: [3**M]}}}`` (``per_element`` for per-atom
        targets only), plain lists so it is stored in checkpoints as it is.
    """
    out = {}
    numbers = atomic_numbers(dataset)
    for name, t in targets.items():
        size = 3**t.rank
        rows = [np.asarray(lab[name], dtype=float).reshape(-1, size) for lab in dataset.labels]
        y = np.concatenate(rows) if rows else np.zeros((0, size))
        keep = labelled(y)
        out[name] = mean_baseline(y[keep], numbers[keep] if t.level == "atom" else None)
    return out


def compute_statistics(train, targets: Mapping, ridge: float = 1e-6) -> Statistics:
    """The statistics of a training set (a pure function: nothing is modified).

    Args:
        train: the training :class:`etgnn.data.dataset.GraphDataset`.
        targets: ``{name: Target}`` or ``{name: TargetConfig}`` (``level``, ``rank``, ``reduce``,
            ``isotropic``).
        ridge: Tikhonov regulariser of the per-element least squares (extensive structure targets).

    Returns:
        :class:`Statistics`.
    """
    numbers = [np.asarray(g[K.NUMBERS]) for g in train.graphs]
    n_atoms = max(sum(len(z) for z in numbers), 1)
    n_edges = sum(g[K.EDGE_INDEX].shape[1] for g in train.graphs)
    n_trip = sum(g[K.TRIPLET_A].shape[0] for g in train.graphs)
    all_z = np.concatenate(numbers) if numbers else np.zeros(0, dtype=np.int64)
    stats = Statistics(edges_per_atom=max(n_edges / n_atoms, 1.0), triplets_per_atom=max(n_trip / n_atoms, 1.0),
                       elements=np.unique(all_z).tolist())
    for name, t in targets.items():
        config = getattr(t, "config", t)
        size = 3**config.rank
        use_iso = config.isotropic or config.rank == 0
        basis = isotropic_tensors(config.rank).reshape(-1, size).double().numpy() if use_iso else np.zeros((0, size))
        if config.level == "atom":
            y = np.concatenate([lab[name].reshape(-1, size) for lab in train.labels]) if train.labels else np.zeros((0, size))
            keep = labelled(y)  # labelled atoms only
            stats.targets[name] = _atom_target(y[keep], all_z[keep], basis)
        else:
            y = np.stack([lab[name].reshape(size) for lab in train.labels]) if train.labels else np.zeros((0, size))
            keep = labelled(y)  # labelled structures only
            kept = [z for z, k in zip(numbers, keep) if k]
            stats.targets[name] = _structure_target(y[keep], kept, basis, config.reduce == "sum", ridge)
    for name, t in targets.items():  # an energy learned from forces alone: the forces' scale (eV/A x 1 A)
        config = getattr(t, "config", t)
        energy = config.gradient_of
        if energy is not None and not any(labelled(np.asarray(lab[energy]).reshape(1, -1)).any() for lab in train.labels):
            stats.targets[energy] = TargetStatistics(stats.targets[name].scale, {})
    stats.baselines = training_baselines(train, {n: getattr(t, "config", t) for n, t in targets.items()})
    return stats
