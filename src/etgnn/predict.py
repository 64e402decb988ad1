"""One prediction path, used by :meth:`etgnn.ETGNN.predict`, ``etgnn predict`` and the ASE calculator.

>>> import etgnn
>>> from ase.build import molecule
>>> model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1},
...                            "targets": {"dipole": {"key": "mu", "level": "structure", "rank": 1}}})
>>> Predictor(model, batch_size=2).predict([molecule("H2O")] * 3)[2]["dipole"].shape
(3,)

Pipeline: the structures (any iterable, or a file streamed by
:func:`etgnn.data.readers.iter_structures`, the reader training uses) are cut into chunks of
``batch_size`` by :func:`chunks`; one background thread reads chunk ``k + 1`` and builds its graphs
while the model runs chunk ``k`` in the calling thread, so the two CPU-bound stages overlap.  At most
two chunks are alive at any time (memory stays flat on trajectories of any length) and results come
back in input order, identical to a serial loop (the worker only builds graphs).

Output files are extended XYZ holding the structure (numbers, positions, cell, pbc), the predictions
(field naming in :func:`prediction_atoms`) and, on request, the input's own labels flattened as
extxyz needs; reader leftovers (CIF ``occupancy`` / ``spacegroup_kinds``, zero ``momenta``, ...) are
never copied.  Reading such a file back with :func:`etgnn.data.readers.read_structures` and
:func:`etgnn.data.labels.extract_label` gives the predicted arrays again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from .errors import ConfigError, DataError

__all__ = ["Predictor", "chunks", "prediction_atoms", "check_output_path", "parse_key_map", "remap_targets",
           "rename_fields", "check_targets_present", "OUTPUT_SUFFIXES"]

#: output file suffixes accepted by :meth:`Predictor.predict_file` (extended XYZ)
OUTPUT_SUFFIXES = (".extxyz", ".xyz")
#: per-atom arrays that describe the structure or a reader's bookkeeping, never labels
_NOT_LABEL_ARRAYS = {"numbers", "positions", "momenta", "masses", "tags", "spacegroup_kinds"}
#: info entries written by ASE's CIF / POSCAR readers, never labels
_NOT_LABEL_INFO = {"occupancy", "spacegroup", "unit_cell"}


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last one shorter), consuming ``items`` lazily."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _where(source: str | None, index: int) -> str:
    return f"{source} structure {index}" if source else f"structure {index}"


def _atoms(item, where: str) -> Atoms:
    """``item`` if it is an ``ase.Atoms``; else a :class:`DataError` saying what is expected."""
    if not isinstance(item, Atoms):
        raise DataError(f"{where}: expected an ase.Atoms, got {type(item).__name__}; predict takes an ase.Atoms, "
                        "an iterable of them or the path of a structure file")
    return item


class Predictor:
    """Run a model over structures in chunks, building the next chunk's graphs in the background.

    Args:
        model: an :class:`etgnn.model.ETGNN` (used on its own device, in eval mode).
        batch_size: structures per forward pass (and per written chunk).
        progress: show a progress bar; it appears only when stderr is a terminal.
        background: build graphs in a worker thread (``False``: all in the calling thread; the
            numbers are the same either way).
        uncertainty: also predict ``<target>_std`` (one standard deviation per component, the
            target's shape; the model needs ``model.uncertainty``, see docs/uncertainty.md).

    Raises:
        ConfigError: ``batch_size < 1``.
    """

    def __init__(self, model, batch_size: int = 32, *, progress: bool = False, background: bool = True,
                 uncertainty: bool = False):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if uncertainty and getattr(model, "uncertainty", None) is None:
            raise ConfigError("this model has no uncertainty: add it with `etgnn calibrate CHECKPOINT -o MODEL.pt` "
                              "(or train with training.uncertainty: llpr)")
        self.model, self.batch_size, self.progress, self.background = model, batch_size, progress, background
        self.uncertainty = uncertainty

    # ------------------------------------------------------------------ in memory
    def predict(self, structures: Atoms | Iterable[Atoms] | str | os.PathLike, *,
                source: str | None = None) -> list[dict]:
        """Predictions for every structure, in input order.

        Args:
            structures: an ``ase.Atoms``, an iterable of them, or the path of a structure file
                (``str`` or ``PathLike``; ``etgnn:<path>`` for a file shipped with etgnn), streamed
                by :func:`etgnn.data.readers.iter_structures`, the reader training uses, in its
                default format detection; messages then name the file.
            source: names the input in messages (default: the path, if one is given).

        Returns:
            one ``{target: array}`` per structure: per-atom targets (n_atoms, 3, ...), per-structure
            targets (3, ...), float64, units of the training data.

        Raises:
            DataError: a missing or unreadable file, an item that is not an ``ase.Atoms``, or a
                structure the model cannot take (naming the file and structure index).
        """
        if isinstance(structures, Atoms):
            structures = [structures]
        elif isinstance(structures, (str, os.PathLike)):
            from .data.dataset import resolve_data_path
            from .data.readers import iter_structures

            path = resolve_data_path(structures)
            source = source or str(path)
            structures = iter_structures(path)
        return [pred for _, pred in self.iter_predict(structures, source=source)]

    def iter_predict(self, structures: Iterable[Atoms], *, source: str | None = None) -> Iterator[tuple[Atoms, dict]]:
        """Yield ``(atoms, prediction)`` pairs one by one (streams: memory bounded by two chunks)."""
        for chunk, preds in self.iter_chunks(structures, source=source):
            yield from zip(chunk, preds)

    def iter_chunks(self, structures: Iterable[Atoms], *, source: str | None = None) -> Iterator[tuple[list, list]]:
        """Yield ``(structures, predictions)`` chunk by chunk.

        Args:
            structures: ase.Atoms objects (a list, a generator, a streamed file, ...).
            source: names the input in messages (``"<source> structure <i>"``).
        """
        from tqdm.auto import tqdm

        total = len(structures) if isinstance(structures, Sequence) else None
        background = self.background and (total is None or total > self.batch_size)
        model = self.model
        was_training = model.training
        model.eval()
        bar = tqdm(total=total, unit="structure", desc="predict", disable=None if self.progress else True)
        try:
            for chunk, graphs, offset in self._prepared(structures, source, background):
                where = [_where(source, offset + k) for k in range(len(chunk))]
                with torch.no_grad():
                    preds = model.predict_graphs(graphs, where=where, uncertainty=self.uncertainty)
                bar.update(len(chunk))
                yield chunk, preds
        finally:
            bar.close()
            model.train(was_training)

    def _prepared(self, structures: Iterable[Atoms], source: str | None, background: bool):
        """Yield ``(chunk, graphs, offset)``; with ``background`` the next chunk is built meanwhile."""
        pending = chunks(structures, self.batch_size)
        model = self.model

        def build(offset: int):
            chunk = next(pending, None)
            if chunk is None:
                return None
            return chunk, [model.graph(_atoms(a, _where(source, offset + k)), where=_where(source, offset + k))
                           for k, a in enumerate(chunk)], offset

        if not background:
            offset = 0
            while (item := build(offset)) is not None:
                yield item
                offset += len(item[0])
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="etgnn-graphs") as pool:
            future = pool.submit(build, 0)
            while (item := future.result()) is not None:
                future = pool.submit(build, item[2] + len(item[0]))
                yield item

    # ------------------------------------------------------------------ files
    def predict_file(self, input_path, output_path, *, format: str | None = None, structure_path=None,
                     keep_labels: bool = False, rename: dict[str, str] | None = None) -> int:
        """Predict every structure of ``input_path`` and write them with predictions as extxyz.

        Args:
            input_path: any file :func:`etgnn.data.readers.iter_structures` reads (extxyz and ASE
                formats streamed, etgnn's formats such as phonopy BORN or OUTCAR read whole), or
                ``etgnn:<path>`` for a file shipped with etgnn.
            output_path: ``*.extxyz`` / ``*.xyz``, overwritten; written chunk by chunk into a
                temporary file that replaces it at the end (an error leaves no partial file).
            format: input format (default: detected).
            structure_path: structure file of a phonopy BORN / OUTCAR input, folder of an id-prop one.
            keep_labels: also write the input's own labels (see :func:`prediction_atoms`).
            rename: ``{new name: input field}`` applied to the input before writing its labels.

        Returns:
            number of structures written.

        Raises:
            ConfigError: an output name that is not extxyz.
            DataError: unreadable input, no structures, or a structure the model cannot take.
        """
        from .data.dataset import resolve_data_path
        from .data.readers import iter_structures

        input_path = resolve_data_path(input_path)  # etgnn:examples_data/... names a shipped file
        output_path = check_output_path(output_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        structures = iter_structures(input_path, format, structure_path=structure_path)
        if rename:
            structures = (rename_fields(a, rename) for a in structures)
        tmp = output_path.with_name(f".{output_path.name}.part{os.getpid()}")
        n = 0
        try:
            with open(tmp, "w") as fh:
                for chunk, preds in self.iter_chunks(structures, source=str(input_path)):
                    out = [prediction_atoms(a, p, self.model.targets, keep_labels=keep_labels) for a, p in zip(chunk, preds)]
                    _write_extxyz(fh, out)
                    n += len(out)
            if n == 0:
                raise DataError(f"{input_path}: no structures to predict")
            os.replace(tmp, output_path)
        finally:
            tmp.unlink(missing_ok=True)
        return n


def _write_extxyz(fh, frames: list[Atoms]) -> None:
    import ase.io

    ase.io.write(fh, frames, format="extxyz")


def check_output_path(path) -> Path:
    """``Path(path)`` if it names an extxyz file.

    Raises:
        ConfigError: any other suffix (e.g. ``X.BORN``): predictions are never written in a
            format other than the one the name announces.
    """
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"{path}: predictions are written as extended XYZ only; name the output "
                          f"*{' or *'.join(OUTPUT_SUFFIXES)} (got {path.suffix or 'no suffix'!r})")
    return path


def _label_items(atoms: Atoms):
    """``(name, value, per_atom)`` of the input's own numeric labels, ready for extxyz."""
    n = len(atoms)
    for name, value in atoms.arrays.items():
        arr = np.asarray(value)
        if name in _NOT_LABEL_ARRAYS or arr.dtype.kind not in "biuf" or arr.shape[:1] != (n,):
            continue
        yield name, arr.reshape(n, -1)[:, 0] if arr[0].size == 1 else arr.reshape(n, -1), True
    for name, value in atoms.info.items():
        if name in _NOT_LABEL_INFO:
            continue
        if isinstance(value, (str, bool, int, float, np.integer, np.floating)):
            yield name, value, False
            continue
        try:
            arr = np.asarray(value)
        except Exception:  # noqa: BLE001 - not array-like: a reader's object, not a label
            continue
        if arr.dtype.kind in "biuf" and arr.size > 0:
            yield name, arr.item() if arr.size == 1 else arr.reshape(-1), False


def prediction_atoms(atoms: Atoms, pred: dict[str, np.ndarray], targets: dict, *,
                     keep_labels: bool = False) -> Atoms:
    """A fresh ``Atoms`` holding the structure of ``atoms`` and the predictions ``pred``.

    Field naming: a per-atom target ``name`` of rank ``M`` becomes the per-atom array ``name``
    (n_atoms, 3**M), row-major (``T[a, b]`` at column ``3 * a + b``; (n_atoms,) for M = 0); a
    per-structure target becomes ``info[name]``, 3**M numbers row-major (a float for M = 0).
    A standard deviation ``<name>_std`` (``Predictor(uncertainty=True)``) is written like ``name``.
    The structure id (``info['id']``) is kept.  With ``keep_labels`` the input's numeric labels are
    written too, per-atom ones flattened to (n_atoms, k); a label named like a prediction is
    written as ``<name>_input``.

    Args:
        atoms: the input structure (not modified).
        pred: ``{target: array}`` as :meth:`Predictor.predict` returns.
        targets: ``{name: Target}`` (``model.targets``; each writes its own prediction,
            :meth:`etgnn.targets.Target.write`).
    """
    from .data.readers import STRUCTURE_ID

    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    if keep_labels:
        for name, value, per_atom in _label_items(atoms):
            key = f"{name}_input" if name in pred else name
            if per_atom:
                out.new_array(key, value)
            else:
                out.info[key] = value
    elif isinstance(atoms.info.get(STRUCTURE_ID), str):
        out.info[STRUCTURE_ID] = atoms.info[STRUCTURE_ID]
    for name, value in pred.items():
        if name in targets:
            targets[name].write(out, value)
        else:  # NAME_std: laid out as NAME
            _write_like(targets[name.removesuffix("_std")], out, name, value)
    return out


def _write_like(target, atoms: Atoms, field: str, value: np.ndarray) -> None:
    """Write ``value`` under ``field`` in the layout :meth:`etgnn.targets.Target.write` uses for ``target``."""
    if target.level == "atom":
        flat = np.asarray(value, dtype=float).reshape(len(atoms), -1)
        atoms.new_array(field, flat[:, 0] if flat.shape[1] == 1 else flat)
    else:
        atoms.info[field] = float(value) if np.ndim(value) == 0 else np.asarray(value, dtype=float).reshape(-1)


# --------------------------------------------------------------------- field names of other data
def parse_key_map(items: Sequence[str]) -> dict[str, str]:
    """``["becs=born_effective_charges", ...]`` -> ``{"becs": "born_effective_charges"}``.

    Raises:
        ConfigError: an item without ``=`` or with an empty side.
    """
    out = {}
    for item in items:
        key, sep, field = item.partition("=")
        if not sep or not key.strip() or not field.strip():
            raise ConfigError(f"--map {item!r} must look like KEY=FIELD, e.g. becs=born_effective_charges")
        out[key.strip()] = field.strip()
    return out


def _target_for(config, key: str) -> str:
    """The target a ``--map`` left-hand side names: a target name or a target's data key."""
    if key in config.targets:
        return key
    hits = [name for name, t in config.targets.items() if t.key == key]
    if not hits:
        expected = ", ".join(f"{n} (key {t.key!r})" for n, t in config.targets.items())
        raise ConfigError(f"--map {key}=...: the checkpoint has no target or data key {key!r}; it expects {expected}")
    return hits[0]


def remap_targets(config, mapping: dict[str, str]):
    """A copy of ``config`` whose targets read their labels from other data fields.

    Args:
        config: the checkpoint's :class:`etgnn.config.Config`.
        mapping: ``{target name or data key: field name in the new data}``.
    """
    targets = dict(config.targets)
    for key, field in mapping.items():
        name = _target_for(config, key)
        targets[name] = dataclasses.replace(targets[name], key=field)
    return dataclasses.replace(config, targets=targets)


def rename_fields(atoms: Atoms, mapping: dict[str, str]) -> Atoms:
    """Copy each input field ``mapping[new]`` of ``atoms`` (info or arrays) to ``new``, in place."""
    for new, old in mapping.items():
        if old in atoms.arrays and old not in ("numbers", "positions"):
            atoms.set_array(new, atoms.arrays.pop(old))
        elif old in atoms.info:
            atoms.info[new] = atoms.info.pop(old)
    return atoms


def check_targets_present(atoms: Atoms, config, source: str) -> None:
    """Raise if ``atoms`` lacks a field a target of ``config`` reads.

    Raises:
        DataError: naming every target the checkpoint expects, the fields missing from this data
            and the fields it has, and how to map them (``--map KEY=FIELD``).
    """
    from .data.labels import _available, _lookup

    missing = []
    for t in config.targets.values():
        try:
            _lookup(atoms, t.key, source)
        except DataError:
            missing.append(t.key)
    if missing:
        expected = ", ".join(f"{n} (field {t.key!r}, {t.level}, rank {t.rank})" for n, t in config.targets.items())
        raise DataError(f"{source}: the checkpoint expects targets {expected}; this data has no field "
                        f"{', '.join(map(repr, missing))} (its fields: {', '.join(_available(atoms)) or 'none'}); "
                        f"map them with --map KEY=FIELD, e.g. --map {missing[0]}=<field name in this data>")
