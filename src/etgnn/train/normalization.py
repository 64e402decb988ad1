"""Per-target normalisation fitted on the training part only (etgnn 0.1 interface).

The statistics are computed by the pure function :func:`etgnn.data.statistics.compute_statistics`
and given to :func:`etgnn.build_model`, which is how training builds its model.
:func:`fit_normalization` remains for code that already holds a model: it loads the statistics
into that model's normalisers (the same buffers ``build_model`` fills).
"""

from __future__ import annotations

import torch

from ..data.statistics import Statistics, compute_statistics

__all__ = ["fit_normalization", "load_statistics"]


@torch.no_grad()
def load_statistics(model, stats: Statistics) -> None:
    """Copy ``stats`` into ``model``: normalisers, neighbour counts, elements seen, baselines."""
    counts = model.backbone.counts
    counts.edges_per_atom.fill_(stats.edges_per_atom)
    counts.triplets_per_atom.fill_(stats.triplets_per_atom)
    model.elements_seen.zero_()
    if stats.elements:
        model.elements_seen[torch.as_tensor(stats.elements, dtype=torch.long)] = True
    for name, head in model.heads.items():
        t = stats.targets[name]
        norm = head.normalizer
        norm.scale.fill_(t.scale)
        norm.element_shift.zero_()
        for z, coef in t.shift.items():
            norm.element_shift[int(z), : norm.n_iso] = torch.as_tensor(coef, dtype=norm.element_shift.dtype)
    model.baselines = stats.baselines


def fit_normalization(model, train, ridge: float = 1e-6) -> dict:
    """Compute the statistics of ``train`` and load them into ``model``.

    Returns:
        ``{target: {"scale": float, "shift": {Z: [...]}}}`` plus ``edges_per_atom`` and
        ``triplets_per_atom`` (a summary for logs).
    """
    stats = compute_statistics(train, model.targets, ridge=ridge)
    load_statistics(model, stats)
    return summary(stats)


def summary(stats: Statistics) -> dict:
    """The statistics as the plain summary dict training logs print."""
    out: dict = {"edges_per_atom": stats.edges_per_atom, "triplets_per_atom": stats.triplets_per_atom}
    for name, t in stats.targets.items():
        out[name] = {"scale": t.scale, "shift": t.shift}
    return out
