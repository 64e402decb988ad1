"""Loss functions on batches of Cartesian tensors (pure functions, no state).

Every loss takes a prediction and a label of the same shape (n, 3, ..., 3) (``n`` counts atoms
for per-atom targets and structures for per-structure targets; rank 0 is (n,)) and is a mean over
the ``n`` rows of a per-row value, so that ``reduction="sum"`` summed over batches and divided by
the row count gives exactly the data-set mean (used for validation, also across DDP ranks).

The paper's Euclidean loss is the mean Frobenius (vector) norm of the error tensor: invariant under
any rotation ``R`` applied to both tensors (``T -> R.T.R^T`` keeps the Frobenius norm).  Norms are
"safe": exact, zero at zero error, with a finite (zero) gradient there.

Reference: ETGNN, Zhong et al., "Edge-based Tensor prediction via graph neural networks".

>>> import torch
>>> p, y = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[0.0, 4.0, 0.0]])
>>> round(float(euclidean(p, y)), 4)
5.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ..data import keys as K
from ..nn.scatter import scatter_sum

__all__ = ["mse", "mae", "euclidean", "cosine", "sum_rule_penalty", "safe_norm", "LOSSES", "labelled_mask"]

#: Lower bound of the norm product in the denominator of :func:`cosine` (normalised units).
COSINE_EPS = 1e-8


def safe_norm(x: Tensor) -> Tensor:
    """Euclidean norm over all axes but the first, exact, with a finite gradient at zero.

    The double-``where`` trick keeps ``sqrt`` away from 0, so the gradient of a zero row is 0
    instead of NaN; elsewhere it is the usual unit vector ``x / |x|`` (bounded).

    Args:
        x: (n, ...) float.

    Returns:
        (n,) float, zero exactly where the row is zero.
    """
    sq = _flat(x).square().sum(dim=1)
    nonzero = sq > 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def _reduce(per_row: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_row.mean() if per_row.numel() else per_row.sum()
    if reduction == "sum":
        return per_row.sum()
    if reduction == "none":
        return per_row
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _flat(x: Tensor) -> Tensor:
    """(n, ...) -> (n, components); also for n = 0 (where ``reshape(0, -1)`` is ambiguous)."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


def mse(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error over components.

    Args:
        pred, target: (n, 3, ..., 3) float.
        reduction: ``"mean"`` (scalar, mean over rows), ``"sum"`` (sum over rows) or ``"none"`` ((n,)).

    Returns:
        scalar or (n,): per row, the mean of the squared component errors.
    """
    return _reduce(_flat(pred - target).square().mean(dim=1), reduction)


def mae(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error over components; arguments as :func:`mse`."""
    return _reduce(_flat(pred - target).abs().mean(dim=1), reduction)


def euclidean(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """The paper's Euclidean loss: Frobenius (vector) norm of the error tensor of each row.

    Args:
        pred, target: (n, 3, ..., 3) float.
        reduction: as :func:`mse`.

    Returns:
        scalar or (n,): ``||pred_r - target_r||_F`` (safe norm), rotation invariant.
    """
    return _reduce(safe_norm(pred - target), reduction)


def cosine(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """One minus the cosine similarity of the flattened tensors of each row.

    Scale invariant: it fixes only the direction of the tensor in its 3^M-dimensional space, so
    it is best combined with another loss.  A zero row gives cosine 0 (loss 1).

    Args:
        pred, target: (n, 3, ..., 3) float.
        reduction: as :func:`mse`.

    Returns:
        scalar or (n,) in [0, 2].
    """
    p, t = _flat(pred), _flat(target)
    cos = (p * t).sum(dim=1) / (safe_norm(p) * safe_norm(t)).clamp(min=COSINE_EPS)
    return _reduce(1.0 - cos, reduction)


def sum_rule_penalty(pred: Tensor, batch: Tensor, n_graphs: int, reduction: str = "mean") -> Tensor:
    """Norm of the per-structure sum of per-atom tensors (e.g. the charge-neutrality sum rule).

    Args:
        pred: (n_atoms, 3, ..., 3) float, per-atom tensors.
        batch: (n_atoms,) int64, structure of each atom.
        n_graphs: number of structures.
        reduction: as :func:`mse`, over structures.

    Returns:
        scalar or (n_graphs,): ``||sum_{i in s} pred_i||_F`` (safe norm).
    """
    return _reduce(safe_norm(scatter_sum(pred, batch, n_graphs)), reduction)


#: Loss name (``TargetConfig.loss``) -> function.
LOSSES: dict[str, Callable[..., Tensor]] = {"euclidean": euclidean, "mse": mse, "mae": mae, "cosine": cosine}


def labelled_mask(label: Tensor) -> Tensor:
    """(n,) bool: the rows of ``label`` (n, ...) that carry a value (unlabelled rows are NaN in
    every component; see :func:`etgnn.data.labels.labelled`)."""
    return ~torch.isnan(_flat(label)).all(dim=1)

