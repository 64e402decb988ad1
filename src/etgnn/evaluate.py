"""Evaluation on labelled data, beside prediction (:mod:`etgnn.predict`).

``evaluate`` gives metrics in data units (:func:`etgnn.targets.metrics.full_metrics`: pooled,
baselines, rank-2 parts) plus the predictions and references; ``load_evaluation_data`` reads
every structure of a file and reports (and, only when asked, drops) those that break the
acoustic sum rule; ``predict_file`` is the 0.1 name of
:meth:`etgnn.predict.Predictor.predict_file` (the one prediction path).  Training validates with
:func:`evaluate_loader` (every DDP rank its own shard, the sums combined).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
import torch.distributed as dist

from .data import keys as K
from .data.batch import to_device
from .data.dataset import load_structures_dataset, make_loader
from .data.labels import acoustic_sum_violation, obeys_sum_rule
from .data.statistics import atomic_numbers
from .predict import Predictor
from .targets import total_loss
from .targets.losses import labelled_mask
from .targets.metrics import MetricAccumulator, full_metrics

__all__ = ["evaluate", "evaluate_loader", "load_evaluation_data", "sum_rule_violators", "format_sum_rule_report",
           "predict_file"]

#: |sum over atoms| (data units) above which a structure is reported when the checkpoint has no
#: ``data.sum_rule_threshold`` (the same value the data reader reports with)
REPORT_THRESHOLD = 0.1


def _sum_over_ranks(x: torch.Tensor, ctx) -> None:
    """Sum ``x`` over the DDP ranks of ``ctx`` in place (one process: nothing to do)."""
    if ctx is not None and ctx.distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)


@torch.no_grad()
def evaluate_loader(model, loader, *, ctx=None, collect: bool = False):
    """Loss and metrics of ``model`` over every batch of ``loader`` (summed over DDP ranks).

    Args:
        model: an unwrapped :class:`etgnn.model.ETGNN` (its weights are used as they are).
        loader: yields batches with one label tensor per target.
        ctx: distributed context (:class:`etgnn.train.ddp.DistContext`: ``device`` and
            ``distributed``); each rank passes its own shard, results are combined.  Default: one
            process, on the model's device.
        collect: also return the predictions and references (this process's shard).

    Returns:
        ``(loss, metrics, predictions, references)``: ``loss`` is the weighted sum over targets of
        the data-set mean of each target's loss on normalised values (as in training); metrics
        ``{target: {metric: value}}`` in data units; predictions / references
        ``{target: (n, 3, ..., 3) float64 array}`` (``None`` unless ``collect``).
    """
    device = ctx.device if ctx is not None else model.device
    targets = model.targets
    names = list(targets)
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(names, device=device)
    # per target: loss sum, labelled rows, sum-rule penalty sum, structures
    sums = torch.zeros(4, len(names), dtype=torch.float64, device=device)
    preds: dict[str, list] = {n: [] for n in names}
    refs: dict[str, list] = {n: [] for n in names}
    try:
        for batch in loader:
            batch = to_device(batch, device)
            out = model(batch)
            # the training loss itself (every penalty included), summed, then averaged per target
            _, parts = total_loss(out, batch, targets, reduction="sum")
            for k, (name, t) in enumerate(targets.items()):
                sums[0, k] += parts[name].double()
                sums[1, k] += labelled_mask(batch[name]).sum()
                if f"{name}_sum_rule" in parts:
                    sums[2, k] += parts[f"{name}_sum_rule"].double()
                    sums[3, k] += batch[K.N_ATOMS].shape[0]
                acc.update(name, out[name], batch[name])  # scores labelled rows only
                if collect:  # every row, unlabelled ones (NaN references) included: full_metrics masks them
                    preds[name].append(out[name].detach().cpu().double().numpy())
                    refs[name].append(batch[name].detach().cpu().double().numpy())
    finally:
        model.train(was_training)
    _sum_over_ranks(sums, ctx)
    _sum_over_ranks(acc.state, ctx)
    weights = torch.tensor([t.config.weight for t in targets.values()], dtype=torch.float64, device=device)
    penalty = torch.tensor([t.config.sum_rule_weight for t in targets.values()], dtype=torch.float64,
                           device=device)
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
        "n", "baseline_mae", ..., "parts": ...}}`` of :func:`etgnn.targets.metrics.full_metrics` in
        data units (baselines from ``model.baselines``, the training data's means, else from
        ``dataset`` itself), and ``{target: array}`` with per-atom targets (total n_atoms, 3, ...)
        in dataset order and per-structure targets (n_structures, 3, ...), float64.
    """
    loader = make_loader(dataset, model.config, shuffle=False, batch_size=batch_size)
    _, _, preds, refs = evaluate_loader(model, loader, collect=True)
    metrics = full_metrics(preds, refs, model.targets, numbers=atomic_numbers(dataset),
                           baselines=getattr(model, "baselines", None))
    return metrics, preds, refs


def sum_rule_violators(dataset, targets, threshold: float) -> dict[str, list[dict]]:
    """Structures whose per-atom rank-2 labels break the acoustic sum rule.

    Args:
        dataset: a :class:`etgnn.data.dataset.GraphDataset`.
        targets: ``{name: TargetConfig}``; per-atom rank-2 targets with ``sum_rule`` or a
            ``sum_rule_weight`` are checked (:func:`etgnn.data.labels.obeys_sum_rule`).
        threshold: report ``|sum over atoms|`` (Frobenius norm, data units) above this.

    Returns:
        ``{target: [{"index": position in dataset, "id": structure id, "abs_sum": float}]}``
        for every per-atom rank-2 target (an empty list when none breaks it).
    """
    out = {}
    for name, t in targets.items():
        if obeys_sum_rule(t):
            viol = [acoustic_sum_violation(lab[name]) for lab in dataset.labels]
            out[name] = [{"index": i, "id": dataset.ids[i], "abs_sum": v} for i, v in enumerate(viol) if v > threshold]
    return out


def load_evaluation_data(path, config, *, drop_threshold: float | None = None, format: str | None = None,
                         structure_path=None, progress: bool = True):
    """Every structure of ``path`` for evaluation, with its sum-rule violators.

    Unlike training, nothing is dropped unless ``drop_threshold`` is given (the checkpoint's
    ``data.sum_rule_threshold`` is not applied silently).

    Args:
        path: labelled data file.
        config: the checkpoint's :class:`etgnn.config.Config` (targets, graph settings).
        drop_threshold: drop structures with ``|sum over atoms|`` above this (data units).
        format, structure_path, progress: as :func:`etgnn.data.dataset.load_structures_dataset`.

    Returns:
        ``(dataset, report)``: the dataset evaluated (every structure, or the kept ones) and
        ``{"threshold", "dropped": bool, "n_structures": read, "violators": {target: [{"index"
        (in the file), "id", "abs_sum"}]}}``.
    """
    threshold = drop_threshold if drop_threshold is not None else (config.data.sum_rule_threshold or REPORT_THRESHOLD)
    keep_all = dataclasses.replace(config, data=dataclasses.replace(config.data, sum_rule_threshold=None))
    with warnings.catch_warnings():  # reported below, with the evaluation's threshold and action
        warnings.filterwarnings("ignore", message=".*violate the sum rule")
        full = load_structures_dataset(path, keep_all, progress=progress, format=format,
                                       structure_path=structure_path)
    violators = sum_rule_violators(full, config.targets, threshold)
    report = {"threshold": threshold, "dropped": drop_threshold is not None, "n_structures": len(full),
              "violators": violators}
    if drop_threshold is None:
        return full, report
    bad = {v["index"] for vs in violators.values() for v in vs}
    return full.subset([i for i in range(len(full)) if i not in bad]), report


def format_sum_rule_report(report: dict, source: str) -> str:
    """One line per per-atom rank-2 target: how many structures break the sum rule, which, and
    whether they were evaluated or dropped (``""`` when there is no such target)."""
    lines = []
    action = "dropped (--drop-sum-rule-violators)" if report["dropped"] else "evaluated (drop them with --drop-sum-rule-violators)"
    for name, bad in report["violators"].items():
        if not bad:
            lines.append(f"sum rule of {name!r}: all {report['n_structures']} structures of {source} within "
                         f"|sum| <= {report['threshold']:g}")
            continue
        shown = ", ".join(f"{v['index']} ({v['abs_sum']:.3g})" for v in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        lines.append(f"sum rule of {name!r}: {len(bad)} of {report['n_structures']} structures of {source} have "
                     f"|sum over atoms| > {report['threshold']:g} (index in the file: |sum|): {shown}{more}; {action}")
    return "\n".join(lines)


def predict_file(model, input_path, output_path, *, batch_size: int = 32, format: str | None = None,
                 progress: bool = True, structure_path=None, keep_labels: bool = False) -> int:
    """Predict every structure of ``input_path`` and write them as extxyz; see :mod:`etgnn.predict`.

    A thin wrapper of :meth:`etgnn.predict.Predictor.predict_file` (kept for etgnn 0.1 callers).
    """
    return Predictor(model, batch_size=batch_size, progress=progress).predict_file(
        input_path, output_path, format=format, structure_path=structure_path, keep_labels=keep_labels)
