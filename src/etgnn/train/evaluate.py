"""Evaluation on labelled data and streamed prediction of structure files.

``evaluate`` gives metrics in data units plus the predictions and references; ``predict_file``
streams a (long) trajectory through the model in chunks and appends the predictions to an extxyz
file, so memory stays bounded by one chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..data.batch import to_device
from ..errors import DataError
from .ddp import DistContext, all_reduce_sum
from .losses import LOSSES
from .metrics import MetricAccumulator

__all__ = ["evaluate", "evaluate_loader", "predict_file", "iter_structures"]


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
    sums = torch.zeros(2, len(names), dtype=torch.float64, device=ctx.device)  # loss sums, row counts
    preds: dict[str, list] = {n: [] for n in names}
    refs: dict[str, list] = {n: [] for n in names}
    try:
        for batch in loader:
            batch = to_device(batch, ctx.device)
            out = model(batch)
            for k, (name, t) in enumerate(targets.items()):
                scale = model.heads[name].scale.to(out[name].dtype)
                sums[0, k] += LOSSES[t.loss](out[name] / scale, batch[name] / scale, reduction="sum").double()
                sums[1, k] += out[name].shape[0]
                acc.update(name, out[name], batch[name])
                if collect:
                    preds[name].append(out[name].detach().cpu().double().numpy())
                    refs[name].append(batch[name].detach().cpu().double().numpy())
    finally:
        model.train(was_training)
    all_reduce_sum(sums, ctx)
    all_reduce_sum(acc.state, ctx)
    weights = torch.tensor([t.weight for t in targets.values()], dtype=torch.float64, device=ctx.device)
    loss = float((weights * sums[0] / sums[1].clamp(min=1)).sum())
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


def iter_structures(path, format: str | None = None) -> Iterator:
    """Yield the structures of ``path`` one by one (extxyz and ASE formats are streamed).

    etgnn's own formats (id-prop folders, JSON records, phonopy BORN, OUTCAR) are read whole by
    :func:`etgnn.data.readers.read_structures`.

    Raises:
        DataError: missing or unreadable file.
    """
    import ase.io

    from ..data.readers import FORMATS, detect_format, read_structures

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    fmt = format
    if fmt is None:
        try:
            fmt = detect_format(path)
        except DataError:
            fmt = None  # let ASE guess
    if fmt in FORMATS and fmt != "extxyz":
        yield from read_structures(path, format=fmt)
        return
    try:
        for k, atoms in enumerate(ase.io.iread(path, index=":", format=fmt)):
            zero = np.linalg.norm(np.asarray(atoms.cell), axis=1) == 0.0
            atoms.pbc = np.asarray(atoms.pbc) & ~zero  # molecules written with pbc="T T T"
            yield atoms
    except DataError:
        raise
    except Exception as exc:  # ASE raises many types for malformed files
        raise DataError(f"{path}: could not read structures ({type(exc).__name__}: {exc})") from exc


def _attach(atoms, pred: dict[str, np.ndarray], levels: dict[str, str]) -> None:
    """Store predictions on ``atoms`` under the target names (see :func:`predict_file`)."""
    results = getattr(atoms.calc, "results", None)
    for name, value in pred.items():
        if results is not None:
            results.pop(name, None)  # a prediction replaces a same-named calculator result
        if levels[name] == "atom":
            flat = value.reshape(len(atoms), -1)
            atoms.arrays.pop(name, None)
            atoms.new_array(name, flat[:, 0] if flat.shape[1] == 1 else flat)
        else:
            atoms.info[name] = float(value) if value.ndim == 0 else value.reshape(-1)


def predict_file(model, input_path, output_path, *, batch_size: int = 32, format: str | None = None,
                 progress: bool = True) -> int:
    """Predict every structure of ``input_path`` and write them with predictions as extxyz.

    Field naming in the output: a per-atom target ``name`` of rank ``M`` becomes the per-atom
    array ``name`` of shape (n_atoms, 3**M), row-major (``T[a, b]`` at column ``3 * a + b``;
    (n_atoms,) for M = 0); a per-structure target becomes ``atoms.info[name]``, 3**M numbers
    flattened row-major (a float for M = 0).  Units are those of the training data.

    Args:
        model: an :class:`etgnn.model.ETGNN`.
        input_path: structure file (any format of :func:`iter_structures`).
        output_path: extxyz file, overwritten; written chunk by chunk.
        batch_size: structures per forward pass and per written chunk.
        format: input format (default: detected).
        progress: tqdm progress bar.

    Returns:
        number of structures written.
    """
    from tqdm.auto import tqdm

    model.eval()
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    levels = {name: head.level for name, head in model.heads.items()}
    tmp = output_path.with_name(f".{output_path.name}.part{os.getpid()}")
    tmp.unlink(missing_ok=True)
    n = 0
    bar = tqdm(unit="structure", desc="predict", disable=not progress)
    try:
        chunk: list = []
        for atoms in iter_structures(input_path, format):
            chunk.append(atoms)
            if len(chunk) == batch_size:
                n += _write_chunk(model, chunk, tmp, levels, n)
                bar.update(len(chunk))
                chunk = []
        if chunk:
            n += _write_chunk(model, chunk, tmp, levels, n)
            bar.update(len(chunk))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    if n == 0:
        raise DataError(f"{input_path}: no structures to predict")
    os.replace(tmp, output_path)
    return n


def _write_chunk(model, chunk, path: Path, levels, offset: int) -> int:
    import ase.io

    graphs = [model.graph(a, where=f"structure {offset + k}") for k, a in enumerate(chunk)]
    for atoms, pred in zip(chunk, model.predict_graphs(graphs)):
        _attach(atoms, pred, levels)
    ase.io.write(path, chunk, format="extxyz", append=True)
    return len(chunk)
