"""Error metrics in data units: MAE, RMSE, mean Euclidean error and R^2 per target.

Pooled metrics: MAE, RMSE and R^2 are taken over all tensor components of all rows (atoms or
structures), as in a parity plot of every component; R^2 is about the mean of all components,
so the spread between components (a large trace next to small off-diagonals) counts as
"explained" and predicting the mean tensor already scores R^2 ~0.999.  The Euclidean error is
the mean over rows of the Frobenius (vector) norm of the error tensor (the paper's loss, in data
units).  :class:`MetricAccumulator` keeps running sums so the pooled metrics can be accumulated
batch by batch and summed across DDP ranks (per-epoch validation, ``log.csv``).

The full report (:func:`full_metrics`, used by ``etgnn evaluate`` and the end of ``etgnn train``)
adds, for every target, a baseline beside every metric (the MAE, RMSE, R^2 of a constant
predictor: the per-element mean tensor for per-atom targets, the mean tensor for structure
targets, both fitted on the training data, see :func:`etgnn.data.statistics.training_baselines`) and, for rank-2
targets, the parts of :func:`tensor_parts` separately: isotropic ``tr(T)/3`` (1 value per row),
anisotropic (symmetric traceless, entries i <= j: 6 values) and antisymmetric (entries i < j: 3
values).  A part's R^2 is about the per-component mean of the part, so the mean tensor scores 0.

>>> import torch
>>> acc = MetricAccumulator(["mu"])
>>> acc.update("mu", torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0]]))
>>> acc.compute()["mu"]["mae"]
0.3333333333333333
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.labels import labelled
from ..data.statistics import atomic_numbers, mean_baseline, training_baselines
from .losses import labelled_mask

__all__ = ["METRIC_NAMES", "PARTS", "MetricAccumulator", "compute_metrics", "format_table", "full_metrics",
           "target_metrics", "tensor_parts"]

#: Metric names, in table order.
METRIC_NAMES = ("mae", "rmse", "euclidean", "r2")
#: Parts of a rank-2 tensor reported separately, in table order.
PARTS = ("iso", "aniso", "anti")
#: where a baseline came from
TRAINING, EVALUATION = "training data", "evaluation data"
_UPPER = np.triu_indices(3)  # (i, j) with i <= j: the 6 entries of a symmetric matrix
_STRICT = np.triu_indices(3, 1)  # i < j: the 3 entries of an antisymmetric matrix

# running sums per target: rows, components, sum|e|, sum e^2, sum ||e_row||, sum y, sum y^2
_N_STATS = 7


class MetricAccumulator:
    """Running sums for the metrics of several targets (float64, any device).

    Args:
        names: target names.
        device: device of the sums (the batch device, so DDP can all-reduce ``state``).
    """

    def __init__(self, names: Sequence[str], device: torch.device | str = "cpu"):
        self.names = list(names)
        #: (n_targets, 7) float64 running sums; sum it across ranks to combine partial results.
        self.state = torch.zeros(len(self.names), _N_STATS, dtype=torch.float64, device=device)

    def update(self, name: str, pred: Tensor, ref: Tensor) -> None:
        """Add one batch of one target.

        Args:
            name: target name.
            pred, ref: (n, 3, ..., 3) float, prediction and reference in data units.
        """
        width = int(np.prod(pred.shape[1:]))  # explicit: -1 is ambiguous for zero rows
        p = pred.detach().to(torch.float64).reshape(pred.shape[0], width)
        y = ref.detach().to(torch.float64).reshape(ref.shape[0], width)
        keep = labelled_mask(y)  # unlabelled rows (NaN) are not scored
        p, y = p[keep], y[keep]
        e = p - y
        row = self.names.index(name)
        stats = torch.stack([
            torch.tensor(float(e.shape[0]), dtype=torch.float64, device=e.device),
            torch.tensor(float(e.numel()), dtype=torch.float64, device=e.device),
            e.abs().sum(), e.square().sum(), e.square().sum(dim=1).sqrt().sum(), y.sum(), y.square().sum(),
        ])
        self.state[row] += stats.to(self.state.device)

    def compute(self) -> dict[str, dict[str, float]]:
        """``{target: {"mae", "rmse", "euclidean", "r2", "n"}}``; NaN for targets with no data."""
        out = {}
        for k, name in enumerate(self.names):
            rows, comps, sum_abs, sum_sq, sum_norm, sum_y, sum_y2 = self.state[k].tolist()
            if comps == 0:
                out[name] = {m: float("nan") for m in METRIC_NAMES} | {"n": 0}
                continue
            ss_tot = sum_y2 - sum_y * sum_y / comps
            out[name] = {
                "mae": sum_abs / comps,
                "rmse": float(np.sqrt(sum_sq / comps)),
                "euclidean": sum_norm / rows,
                "r2": 1.0 - sum_sq / ss_tot if ss_tot > 0 else float("nan"),
                "n": int(rows),
            }
        return out


def compute_metrics(predictions: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray]) -> dict:
    """Metrics of whole arrays.

    Args:
        predictions, references: ``{target: (n, 3, ..., 3) array}`` in data units.

    Returns:
        ``{target: {"mae", "rmse", "euclidean", "r2", "n"}}`` as floats.
    """
    acc = MetricAccumulator(list(predictions))
    for name, p in predictions.items():
        acc.update(name, torch.as_tensor(np.asarray(p)), torch.as_tensor(np.asarray(references[name])))
    return acc.compute()


def tensor_parts(t: np.ndarray) -> dict[str, np.ndarray]:
    """Isotropic, anisotropic and antisymmetric parts of rank-2 tensors, as independent entries.

    Args:
        t: (n, 3, 3) array.

    Returns:
        ``{"iso": (n, 1) tr(T)/3, "aniso": (n, 6) entries i <= j of (T + T^T)/2 - tr(T)/3 I,
        "anti": (n, 3) entries i < j of (T - T^T)/2}``.

    >>> {k: v.tolist() for k, v in tensor_parts(np.array([[[3.0, 1, 0], [0, 0, 0], [0, 0, 0]]])).items()}
    {'iso': [[1.0]], 'aniso': [[2.0, 0.5, 0.0, -1.0, 0.0, -1.0]], 'anti': [[0.5, 0.0, 0.0]]}
    """
    t = np.asarray(t, dtype=float)
    iso = np.trace(t, axis1=1, axis2=2) / 3.0
    tt = np.swapaxes(t, 1, 2)
    sym = 0.5 * (t + tt) - iso[:, None, None] * np.eye(3)
    anti = 0.5 * (t - tt)
    return {"iso": iso[:, None], "aniso": sym[:, _UPPER[0], _UPPER[1]], "anti": anti[:, _STRICT[0], _STRICT[1]]}


def _part_metrics(p: np.ndarray, y: np.ndarray, ref_rms: float) -> dict:
    """MAE, RMSE and R^2 of (n, c) arrays; R^2 about the per-component mean of ``y``.

    R^2 is ``None`` when ``y`` is constant (below 1e-10 of ``ref_rms``, the RMS of the whole
    reference tensor), e.g. the antisymmetric part of a symmetric target.
    """
    if y.size == 0:
        return {"mae": None, "rmse": None, "r2": None}
    e = p - y
    ss_tot = float(np.square(y - y.mean(axis=0)).sum())
    defined = ss_tot > 0 and np.sqrt(ss_tot / y.size) > 1e-10 * ref_rms
    return {"mae": float(np.abs(e).mean()), "rmse": float(np.sqrt(np.square(e).mean())),
            "r2": 1.0 - float(np.square(e).sum()) / ss_tot if defined else None}


def _pooled(p: np.ndarray, y: np.ndarray) -> dict:
    """The pooled metrics of :class:`MetricAccumulator` for whole arrays."""
    return compute_metrics({"t": p}, {"t": y})["t"]


def _baseline_prediction(entry: dict, n: int, numbers: np.ndarray | None) -> tuple[np.ndarray, int]:
    """(n, 3**M) baseline rows and the number of rows whose element the baseline has not seen."""
    mean = np.asarray(entry["mean"], dtype=float)
    if numbers is None or n == 0:
        return np.tile(mean, (n, 1)), 0
    table = entry.get("per_element", {})
    known = {int(z) for z in table}
    elements, inverse = np.unique(np.asarray(numbers, dtype=np.int64), return_inverse=True)
    rows = np.stack([np.asarray(table[z], dtype=float) if z in known else mean for z in elements.tolist()])
    unseen = int(np.isin(numbers, [z for z in elements.tolist() if z not in known]).sum())
    return rows[inverse], unseen


def full_metrics(predictions: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray], targets, *,
                 numbers: np.ndarray | None = None, baselines: Mapping | None = None) -> dict:
    """Pooled metrics, baselines and (rank 2) per-part metrics of every target.

    Args:
        predictions, references: ``{target: (n, 3, ..., 3) array}`` in data units.
        targets: ``{name: TargetConfig}`` (``level``, ``rank``) of the model.
        numbers: (total n_atoms,) atomic numbers of the per-atom rows (needed for per-atom targets).
        baselines: :func:`etgnn.data.statistics.training_baselines` of the training data (stored in the checkpoint);
            ``None`` or a missing target: the evaluation references' own means are used instead,
            and ``baseline_source`` says so.

    Returns:
        ``{target: {"mae", "rmse", "euclidean", "r2", "n", "baseline_mae", "baseline_rmse",
        "baseline_r2", "baseline", "baseline_source", "unseen_element_rows"[, "parts": {part:
        {"mae", "rmse", "r2", "baseline_mae", "baseline_rmse", "baseline_r2"}}]}}``.
    """
    return {name: target_metrics(p, references[name], targets[name].level, targets[name].rank, numbers=numbers,
                                 baseline=(baselines or {}).get(name), name=name)
            for name, p in predictions.items()}


def target_metrics(pred: np.ndarray, ref: np.ndarray, level: str, rank: int, *, numbers: np.ndarray | None = None,
                   baseline: Mapping | None = None, name: str = "target") -> dict:
    """Pooled metrics, baseline and (rank 2) per-part metrics of one target (see :func:`full_metrics`).

    Args:
        pred, ref: (n, 3, ..., 3) arrays in data units; rows NaN in every reference component
            are unlabelled and not scored.
        level, rank: the target's.
        numbers: (n,) atomic numbers of the rows (per-atom targets).
        baseline: this target's entry of :func:`etgnn.data.statistics.training_baselines`, or None (the references'
            own means, reported as ``baseline_source``).
        name: the target's name, for messages.
    """
    size = 3**rank
    p = np.asarray(pred, dtype=float).reshape(-1, size)
    y = np.asarray(ref, dtype=float).reshape(-1, size)
    z = None
    if level == "atom":
        if numbers is None or len(numbers) != len(y):
            raise ValueError(f"per-atom target {name!r} needs the atomic numbers of its {len(y)} rows")
        z = np.asarray(numbers)
    keep = labelled(y)  # unlabelled rows (NaN) are not scored
    p, y = p[keep], y[keep]
    z = z[keep] if z is not None else None
    source = TRAINING if baseline is not None else EVALUATION
    entry = baseline if baseline is not None else mean_baseline(y, z)
    b, unseen = _baseline_prediction(entry, len(y), z)
    m = dict(_pooled(p, y))
    bm = _pooled(b, y)
    m.update(baseline_mae=bm["mae"], baseline_rmse=bm["rmse"], baseline_r2=bm["r2"],
             baseline="per-element mean tensor" if z is not None else "mean tensor",
             baseline_source=source, unseen_element_rows=unseen)
    if rank == 2:
        ref_rms = float(np.sqrt(np.square(y).mean())) if y.size else 0.0
        pp, yp, bp = (tensor_parts(a.reshape(-1, 3, 3)) for a in (p, y, b))
        m["parts"] = {}
        for part in PARTS:
            pm = _part_metrics(pp[part], yp[part], ref_rms)
            bpm = _part_metrics(bp[part], yp[part], ref_rms)
            m["parts"][part] = pm | {f"baseline_{k}": v for k, v in bpm.items()}
    return m


def _fmt(v, spec: str = ">10.4g") -> str:
    return f"{'-':>10}" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


#: table columns: (header, key)
_COLUMNS = (("mae", "mae"), ("base_mae", "baseline_mae"), ("rmse", "rmse"), ("base_rmse", "baseline_rmse"),
            ("r2", "r2"), ("base_r2", "baseline_r2"), ("euclidean", "euclidean"))


def format_table(metrics: Mapping[str, Mapping[str, Mapping]]) -> str:
    """Plain-text table, one line per (split, target) and, for rank-2 targets, per part.

    ``base_`` columns are the baseline's (see the module docstring); a ``*`` after a target marks
    a baseline taken from the evaluation data itself (a checkpoint without training baselines).

    Args:
        metrics: ``{split: {target: metrics}}`` of :func:`full_metrics` (or the pooled metrics of
            :func:`compute_metrics`, then without baseline columns filled).
    """
    head = f"{'split':<6} {'target':<20} {'part':<6} " + " ".join(f"{h:>10}" for h, _ in _COLUMNS) + f" {'n':>8}"
    lines = [head, "-" * len(head)]
    notes = set()
    for split, per_target in metrics.items():
        for name, m in per_target.items():
            star = "*" if m.get("baseline_source") == EVALUATION else ""
            if star:
                notes.add(name)
            vals = " ".join(_fmt(m.get(k)) for _, k in _COLUMNS)
            lines.append(f"{split:<6} {name + star:<20} {'all':<6} {vals} {int(m.get('n', 0)):>8}")
            for part, pm in (m.get("parts") or {}).items():
                vals = " ".join(_fmt(pm.get(k)) for _, k in _COLUMNS)
                lines.append(f"{'':<6} {'':<20} {part:<6} {vals} {'':>8}")
    has_base = any("baseline_mae" in m for per in metrics.values() for m in per.values())
    if has_base:
        lines.append("base_: constant predictor, the training data's per-element mean tensor (per-atom targets) "
                     "or mean tensor (structure targets)\n"
                     "parts of rank-2 targets: iso = tr/3, aniso = symmetric traceless, anti = antisymmetric")
    if notes:
        lines.append(f"* {', '.join(sorted(notes))}: the checkpoint holds no training baselines (written before "
                     "etgnn stored them);\n  the baseline is the evaluation data's own mean (optimistic)")
    return "\n".join(lines)
