"""Evaluation on labelled data and streamed prediction of structure files.

``evaluate`` gives metrics in data units plus the predictions and references; ``predict_file``
is the 0.1 name of :meth:`etgnn.predict.Predictor.predict_file` (the one prediction path).
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import keys as K
from ..data.batch import to_device
from .ddp import DistContext, all_reduce_sum
from .losses import total_loss
from .metrics import MetricAccumulator

__all__ = ["evaluate", "evaluate_loader", "predict_file", "iter_structures"]

from ..data.readers import iter_structures  # noqa: E402  (0.1 location of the streaming reader)


@torch.no_grad()
def evaluate_loader(model, loader, *, ctx: DistContext | None = None, collect: bool = False):
    """Loss and metrics of ``model`` over every batch of ``loader`` (summed over DDP ranks).

    Args:
        model: an unwrapped :class:`etgnn.model.ETGNN` (its weights are used as they are).
        loader: yields batches with one label tensor per target.
        ctx: distributed context; each rank passes its own shard, results are combined.
        collect: also return the predictions and references (this process's shard).

    Returns:
        ``(loss, metrics, predictions, references)``: ``loss`` is the weighted sum over targets of
        the data-set mean of each target's loss on normalised values (as in training); metrics
        ``{target: {metric: value}}`` in data units; predictions / references
        ``{target: (n, 3, ..., 3) float64 array}`` (``None`` unless ``collect``).
    """
    ctx = ctx or DistContext(device=model.device)
    targets = model.config.targets
    names = list(targets)
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(names, device=ctx.device)
    # per target: loss sum, labelled rows, sum-rule penalty sum, structures
    sums = torch.zeros(4, len(names), dtype=torch.float64, device=ctx.device)
    scales = {name: model.heads[name].scale for name in names}
    preds: dict[str, list] = {n: [] for n in names}
    refs: dict[str, list] = {n: [] for n in names}
    try:
        for batch in loader:
            batch = to_device(batch, ctx.device)
            out = model(batch)
            # the training loss itself (every penalty included), summed, then averaged per target
            _, parts = total_loss(out, batch, targets, scales, reduction="sum")
            for k, (name, t) in enumerate(targets.items()):
                labelled = ~torch.isnan(batch[name].reshape(batch[name].shape[0], -1)).all(dim=1)
                pred, ref = out[name][labelled], batch[name][labelled]
                sums[0, k] += parts[name].double()
                sums[1, k] += pred.shape[0]
                if f"{name}_sum_rule" in parts:
                    sums[2, k] += parts[f"{name}_sum_rule"].double()
                    sums[3, k] += batch[K.N_ATOMS].shape[0]
                acc.update(name, pred, ref)
                if collect:
                    preds[name].append(pred.detach().cpu().double().numpy())
                    refs[name].append(ref.detach().cpu().double().numpy())
    finally:
        model.train(was_training)
    all_reduce_sum(sums, ctx)
    all_reduce_sum(acc.state, ctx)
    weights = torch.tensor([t.weight for t in targets.values()], dtype=torch.float64, device=ctx.device)
    penalty = torch.tensor([getattr(t, "sum_rule_weight", 0.0) for t in targets.values()], dtype=torch.float64,
                           device=ctx.device)
    loss = float((weights * sums[0] / sums[1].clamp(min=1) + penalty * sums[2] / sums[3].clamp(min=1)).sum())
    if not collect:
        return loss, acc.compute(), None, None
    shape = {n: (0,) + (3,) * targets[n].rank for n in names}
    cat = {n: np.concatenate(preds[n]) if preds[n] else np.zeros(shape[n]) for n in names}
    ref = {n: np.concatenate(refs[n]) if refs[n] else np.zeros(shape[n]) for n in names}
    return loss, acc.compute(), cat, ref


def evaluate(model, dataset, *, batch_size: int | None = None):
    """Metrics, predictions and references of ``model`` on a labelled dataset.

    Args:
        model: an :class:`etgnn.model.ETGNN` (used on its current device).
        dataset: a :class:`etgnn.data.dataset.GraphDataset` with labels for every target of the
            model (e.g. from :func:`etgnn.data.dataset.load_structures_dataset`).
        batch_size: structures per batch (default ``training.batch_size`` of the model's config).

    Returns:
        ``(metrics, predictions, references)``: ``{target: {"mae", "rmse", "euclidean", "r2",
        "n"}}`` in data units, and ``{target: array}`` with per-atom targets (total n_atoms, 3, ...)
        in dataset order and per-structure targets (n_structures, 3, ...), float64.
    """
    from ..data.dataset import make_loader

    loader = make_loader(dataset, model.config, shuffle=False, batch_size=batch_size)
    _, metrics, preds, refs = evaluate_loader(model, loader, collect=True)
    return metrics, preds, refs


def predict_file(model, input_path, output_path, *, batch_size: int = 32, format: str | None = None,
                 progress: bool = True, structure_path=None, keep_labels: bool = False) -> int:
    """Predict every structure of ``input_path`` and write them as extxyz; see :mod:`etgnn.predict`.

    A thin wrapper of :meth:`etgnn.predict.Predictor.predict_file` (kept for etgnn 0.1 callers).
    """
    from ..predict import Predictor

    return Predictor(model, batch_size=batch_size, progress=progress).predict_file(
        input_path, output_path, format=format, structure_path=structure_path, keep_labels=keep_labels)
