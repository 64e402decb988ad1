"""Segment sums and means over an index (``torch.index_add`` based, deterministic on CPU)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["scatter_sum", "scatter_mean"]


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum rows of ``src`` (n, ...) into ``dim_size`` segments given by ``index`` (n,) int64."""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Mean of rows of ``src`` per segment; empty segments give zero."""
    total = scatter_sum(src, index, dim_size)
    count = torch.zeros(dim_size, dtype=src.dtype, device=src.device).index_add_(
        0, index, torch.ones_like(index, dtype=src.dtype)
    )
    return total / count.clamp(min=1).reshape(-1, *([1] * (src.dim() - 1)))
