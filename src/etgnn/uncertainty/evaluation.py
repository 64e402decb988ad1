"""Predictions with their standard deviations over a labelled dataset, and the metrics of
:mod:`etgnn.uncertainty.metrics` (what ``etgnn evaluate`` reports for a model with uncertainty)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.batch import to_device
from .metrics import uncertainty_metrics

__all__ = ["predict_with_std", "evaluate_uncertainty"]


@torch.no_grad()
def predict_with_std(model, dataset, *, batch_size: int | None = None):
    """``(pred, ref, std)``: ``{target: array}`` over ``dataset`` for the targets with uncertainty.

    Args:
        model: an :class:`etgnn.model.ETGNN` with ``model.uncertainty`` set (LLPR or an ensemble).
        dataset: a labelled :class:`etgnn.data.dataset.GraphDataset`.
        batch_size: structures per batch (default ``training.batch_size``).

    Returns:
        per-atom targets (total n_atoms, 3, ...) in dataset order, structure targets
        (n_structures, 3, ...), float64, data units.
    """
    from ..data.dataset import make_loader

    llpr = model.uncertainty
    if llpr is None:
        raise ValueError("the model has no uncertainty (etgnn calibrate adds it)")
    names = llpr.targets
    pred, ref, std = ({n: [] for n in names} for _ in range(3))
    was_training = model.training
    model.eval()
    try:
        for batch in make_loader(dataset, model.config, shuffle=False, batch_size=batch_size):
            batch = to_device(batch, model.device)
            out, sig = llpr.predict(model, batch)  # LLPR: model(batch) and its std; an ensemble: one pass
            for n in names:
                pred[n].append(out[n].detach().cpu().double().numpy())
                ref[n].append(batch[n].detach().cpu().double().numpy())
                std[n].append(sig[n].cpu().numpy())
    finally:
        model.train(was_training)
    cat = lambda d: {n: np.concatenate(v) for n, v in d.items()}  # noqa: E731
    return cat(pred), cat(ref), cat(std)


def evaluate_uncertainty(model, dataset, *, batch_size: int | None = None) -> dict[str, dict]:
    """``{target: uncertainty_metrics}`` of ``model`` on ``dataset`` (see :func:`predict_with_std`)."""
    pred, ref, std = predict_with_std(model, dataset, batch_size=batch_size)
    return {n: uncertainty_metrics(pred[n], ref[n], std[n]) for n in pred}
