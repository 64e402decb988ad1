"""Error metrics in data units: MAE, RMSE, mean Euclidean error and R^2 per target.

MAE, RMSE and R^2 are taken over all tensor components of all rows (atoms or structures), as
in a parity plot of every component; the Euclidean error is the mean over rows of the Frobenius
(vector) norm of the error tensor (the paper's loss, in data units).  Metrics are computed from
running sums so they can be accumulated batch by batch and summed across DDP ranks.

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

__all__ = ["METRIC_NAMES", "MetricAccumulator", "compute_metrics", "format_table"]

#: Metric names, in table order.
METRIC_NAMES = ("mae", "rmse", "euclidean", "r2")

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
        p = pred.detach().to(torch.float64).reshape(pred.shape[0], -1)
        y = ref.detach().to(torch.float64).reshape(ref.shape[0], -1)
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


def format_table(metrics: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Plain-text table, one line per (split, target).

    Args:
        metrics: ``{split: {target: {metric: value}}}``.
    """
    head = f"{'split':<6} {'target':<20} " + " ".join(f"{m:>12}" for m in METRIC_NAMES) + f" {'n':>8}"
    lines = [head, "-" * len(head)]
    for split, per_target in metrics.items():
        for name, m in per_target.items():
            vals = " ".join(f"{m.get(k, float('nan')):>12.5g}" for k in METRIC_NAMES)
            lines.append(f"{split:<6} {name:<20} {vals} {int(m.get('n', 0)):>8}")
    return "\n".join(lines)
