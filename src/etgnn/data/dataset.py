"""Datasets of precomputed graphs and labels: reading, parallel graph building, disk cache, splits.

A :class:`GraphDataset` holds, per structure, the neighbour graph (numpy arrays, see
:mod:`etgnn.data.keys`) and the labels of every target as full Cartesian float64 arrays
(per-atom (n_atoms, 3, ...), per-structure (3, ...)).  Graphs are built once, in parallel, and
cached in an SQLite file keyed by the data file's content, the target fields and the graph
settings, so a second run starts at once.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sqlite3
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .._paths import PACKAGE_PREFIX, resolve_data_path  # noqa: F401  (etgnn.data.dataset.resolve_data_path: public)
from .._warnings import warn
from ..config import Config
from ..errors import DataError
from .cache import resolve_cache_dir
from . import keys as K
from .batch import collate
from .graph import build_graph
from .labels import LabelSpec, MissingLabel, acoustic_sum_violation, extract_label, labelled_rows, obeys_sum_rule

__all__ = [
    "GraphDataset",
    "EpochSampler",
    "load_structures_dataset",
    "make_splits",
    "make_loader",
    "label_specs",
    "graph_settings",
    "obeys_sum_rule",
    "resolve_data_path",
]

#: bump when the cached graph layout changes
CACHE_FORMAT = 1


class GraphDataset(Dataset):
    """Precomputed graphs and labels; item ``i`` is ``(graph, labels)``.

    Attributes:
        graphs: per-structure graph dicts.
        labels: per-structure ``{target: array}``.
        ids: structure identifiers (``"<file>:<index>"`` or the data's own id).
        source: where the data came from (for messages).
    """

    def __init__(self, graphs: list[dict], labels: list[dict], ids: list[str], source: str = "<memory>"):
        if not len(graphs) == len(labels) == len(ids):
            raise ValueError("graphs, labels and ids must have the same length")
        self.graphs, self.labels, self.ids, self.source = graphs, labels, ids, source

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int):
        return self.graphs[i], self.labels[i]

    def subset(self, indices: Sequence[int]) -> "GraphDataset":
        """A new dataset with the given structures (shares the arrays)."""
        return GraphDataset([self.graphs[i] for i in indices], [self.labels[i] for i in indices],
                            [self.ids[i] for i in indices], self.source)

    def n_atoms(self) -> int:
        return int(sum(len(g[K.NUMBERS]) for g in self.graphs))


def label_specs(config: Config) -> dict:
    """``{target: LabelSpec}`` describing what each target reads from the data."""
    return {name: LabelSpec.from_target(t) for name, t in config.targets.items()}


def graph_settings(config: Config) -> dict:
    """The model settings that determine a graph."""
    m = config.model
    return {"cutoff": m.cutoff, "triplet_cutoff": m.triplet_cutoff, "max_neighbors": m.max_neighbors}


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _content_digest(path: Path) -> str:
    if path.is_dir():
        parts = [f"{p.relative_to(path)}:{_file_digest(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return _file_digest(path)


def _build_one(item, settings: dict):
    index, atoms, where = item
    return index, build_graph(atoms, where=where, **settings)


class _Cache:
    """SQLite store of pickled (graph, labels, id) rows for one key."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute("CREATE TABLE IF NOT EXISTS rows (idx INTEGER PRIMARY KEY, blob BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")

    def complete(self) -> int | None:
        row = self.db.execute("SELECT v FROM meta WHERE k='n'").fetchone()
        return int(row[0]) if row else None

    def read(self) -> list:
        return [pickle.loads(b) for (b,) in self.db.execute("SELECT blob FROM rows ORDER BY idx")]

    def write(self, rows: list) -> None:
        with self.db:
            self.db.execute("DELETE FROM rows")
            self.db.executemany("INSERT INTO rows VALUES (?, ?)",
                                ((i, pickle.dumps(r, protocol=5)) for i, r in enumerate(rows)))
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('n', ?)", (str(len(rows)),))

    def close(self):
        self.db.close()


def load_structures_dataset(path, config: Config, *, progress: bool = True, format: str | None = None,
                            structure_path=None) -> GraphDataset:
    """Read a data file, extract every target's labels and build the graphs (cached).

    Args:
        path: data file or folder (any format of :func:`etgnn.data.readers.read_structures`).
        config: gives the targets (keys, ranks, levels) and the graph settings.
        progress: show a progress bar while building graphs.
        format: reader format; default ``config.data.format`` or auto-detection.
        structure_path: structure file of a phonopy BORN / OUTCAR file, or folder of an id-prop one.

    Raises:
        DataError: unreadable file, missing/ill-shaped/non-finite labels (naming file, structure
            and field), bad structures.
    """
    from .readers import read_structures

    path = resolve_data_path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    fmt = format or config.data.format
    specs = label_specs(config)
    settings = graph_settings(config)
    cache_path = None
    cache_dir = resolve_cache_dir(config.data.cache_dir)
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps({
            "content": _content_digest(path), "format": fmt, "settings": settings,
            "labels": {n: repr(spec) for n, spec in specs.items()}, "cache_format": CACHE_FORMAT,
            "max_structures": config.data.max_structures,
            **({"structure_path": _content_digest(Path(structure_path))} if structure_path else {}),
        }, sort_keys=True).encode()).hexdigest()[:24]
        cache_path = cache_dir / f"{path.name}-{key}.sqlite"
        rows = _read_cache(cache_path)
        if rows is not None:
            if config.data.max_structures is not None and len(rows) == config.data.max_structures:
                warn(f"{path}: data.max_structures = {config.data.max_structures}: using only the first "
                     f"{len(rows)} structures (cached)")
            return _finish(rows, config, path)
    structures = read_structures(path, format=fmt, structure_path=structure_path)
    if config.data.max_structures is not None and len(structures) > config.data.max_structures:
        warn(f"{path}: data.max_structures = {config.data.max_structures}: using only the first "
             f"{config.data.max_structures} of its {len(structures)} structures")
        structures = structures[: config.data.max_structures]
    if not structures:
        raise DataError(f"{path} contains no structures")
    labels, first_missing = _extract_labels(structures, config.targets, str(path))
    graphs = _build_graphs(structures, settings, str(path), config.data.num_workers, progress)
    ids = [str(a.info.get("id", f"{path.name}:{i}")) for i, a in enumerate(structures)]
    rows = list(zip(graphs, labels, ids))
    if cache_path is not None:
        try:
            cache = _Cache(cache_path)
            cache.write(rows)  # one transaction: a killed write leaves no complete marker
            cache.close()
        except (OSError, sqlite3.Error) as exc:  # derived data: go on without it
            warn(f"graph cache {cache_path} cannot be written ({type(exc).__name__}: {exc}); going on without "
                 "it (set data.cache_dir to a folder you can write to, or to null)")
    return _finish(rows, config, path, first_missing)


def _extract_labels(structures, targets, source: str) -> tuple[list[dict[str, np.ndarray]], dict]:
    """Labels of every structure (:func:`etgnn.data.labels.extract_label` with each target's
    :class:`~etgnn.data.labels.LabelSpec`, as :meth:`etgnn.targets.Target.read`); a structure may
    lack some targets (stored as NaN), not all; the energy of a ``gradient_of`` target may be
    absent everywhere.

    Args:
        targets: ``{name: TargetConfig}`` (or ``{name: Target}``).

    Returns:
        ``(labels, first_missing)``: one ``{target: array}`` per structure, and per target the
        :class:`~etgnn.data.labels.MissingLabel` of the first structure without its field (or None).

    Raises:
        DataError: a structure with no label for any target, or a target that no structure has
            (the first structure's message names the field and the closest available one).
    """
    specs = {name: LabelSpec.from_target(t) for name, t in targets.items()}
    labels, missing = [], {name: None for name in specs}
    for i, atoms in enumerate(structures):
        row = {}
        for name, spec in specs.items():
            try:
                row[name] = extract_label(atoms, spec, source=source, index=i)
            except MissingLabel as exc:
                missing[name] = missing[name] or exc
                row[name] = np.full(spec.shape(len(atoms)), np.nan)
        if not any(labelled_rows(row[n], s.level).any() for n, s in specs.items()):
            raise DataError(f"{source} structure {i}: no label for any target ({', '.join(repr(s.key) for s in specs.values())})")
        labels.append(row)
    # an energy whose gradient is a target may have no labels at all: it is then learned from the
    # forces alone (up to a constant)
    energies = {getattr(t, "config", t).gradient_of for t in targets.values()} - {None}
    for name, spec in specs.items():
        if (missing[name] is not None and name not in energies
                and not any(labelled_rows(lab[name], spec.level).any() for lab in labels)):
            raise missing[name]
    return labels, missing


def _read_cache(path: Path) -> list | None:
    """The rows of a complete cache file; ``None`` if absent or incomplete.

    A file that is not a readable cache (half-written, overwritten, foreign) is derived data: it
    is reported, deleted and rebuilt by the caller.
    """
    if not path.exists():
        return None
    try:
        cache = _Cache(path)
        try:
            return cache.read() if cache.complete() is not None else None
        finally:
            cache.close()
    except (sqlite3.DatabaseError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        warn(f"graph cache {path} is unreadable ({type(exc).__name__}: {exc}); deleting and rebuilding it")
        path.unlink(missing_ok=True)
        return None


def _build_graphs(structures, settings, source, workers, progress):
    from tqdm.auto import tqdm

    items = [(i, a, f"{source} structure {i}") for i, a in enumerate(structures)]
    graphs: list = [None] * len(items)
    bar = tqdm(total=len(items), desc="building graphs", unit="structure",
               disable=None if progress else True)  # None: on a terminal only
    if workers and workers > 1 and len(items) > 64:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for i, g in pool.map(partial(_build_one, settings=settings), items, chunksize=16):
                graphs[i] = g
                bar.update(1)
    else:
        for item in items:
            i, g = _build_one(item, settings)
            graphs[i] = g
            bar.update(1)
    bar.close()
    return graphs


#: structure indices listed in the warning about structures without a target's label
_SHOWN_UNLABELLED = 5


def _report_unlabelled(labels: list[dict], config: Config, path: Path, first_missing: dict | None = None) -> None:
    """Warn once per target that some structures of ``path`` lack: how many, and the first indices.

    A field name with a typo in some frames, or a data set labelled for a target in part only,
    then does not go unnoticed.  ``first_missing`` (``{target: MissingLabel}``, when the file was
    just read rather than taken from the cache) adds the first structure's message: the fields it
    has and the closest one.
    """
    through_gradient = {t.gradient_of for t in config.targets.values() if t.gradient_of}
    for name, t in config.targets.items():
        spec = LabelSpec.from_target(t)
        bare = np.flatnonzero([not labelled_rows(lab[name], spec.level).any() for lab in labels])
        if bare.size == 0 or (name in through_gradient and bare.size == len(labels)):
            continue  # an energy unlabelled everywhere is learned through its forces, by design
        shown = ", ".join(str(k) for k in bare[:_SHOWN_UNLABELLED])
        more = f" and {bare.size - _SHOWN_UNLABELLED} more" if bare.size > _SHOWN_UNLABELLED else ""
        first = (first_missing or {}).get(name)
        detail = f"; {str(first).removeprefix(f'{path} ')}" if first is not None else ""
        warn(f"{path}: {bare.size} of {len(labels)} structures have no label for target {name!r} (field {spec.key!r}): "
             f"structures {shown}{more}; they do not count in its loss and metrics{detail}")


def _finish(rows, config: Config, path: Path, first_missing: dict | None = None) -> GraphDataset:
    """Report structures without a target's label (:func:`_report_unlabelled`), report (and
    optionally drop) structures that violate the sum rule; wrap as a dataset."""
    graphs, labels, ids = (list(x) for x in zip(*rows)) if rows else ([], [], [])
    _report_unlabelled(labels, config, path, first_missing)
    keep = np.ones(len(rows), dtype=bool)
    for name, t in config.targets.items():
        if not obeys_sum_rule(t):
            continue
        viol = np.array([acoustic_sum_violation(lab[name]) for lab in labels])
        threshold = config.data.sum_rule_threshold
        bad = np.flatnonzero(viol > (threshold if threshold is not None else 0.1))
        if bad.size:
            action = "dropped" if threshold is not None else "kept (set data.sum_rule_threshold to drop them)"
            shown = ", ".join(f"{ids[k]} ({viol[k]:.2f})" for k in bad[:5])
            warnings.warn(f"{path}: {bad.size} structure(s) violate the sum rule of {name!r} "
                          f"(|sum over atoms| in data units, above {threshold or 0.1}): {shown}"
                          f"{' ...' if bad.size > 5 else ''}; {action}", stacklevel=3)
            if threshold is not None:
                keep[bad] = False
    idx = np.flatnonzero(keep)
    return GraphDataset([graphs[i] for i in idx], [labels[i] for i in idx], [ids[i] for i in idx], str(path))


def make_splits(config: Config, *, progress: bool = True) -> dict[str, GraphDataset]:
    """Train/val/test datasets from ``data.train`` / ``data.val`` / ``data.test`` or a seeded split.

    With only ``data.train`` it is split randomly (seed ``data.split_seed``) by ``data.split``
    (default 60/20/20); with ``data.test`` but no ``data.val``, the train file is split into
    train and val in the proportion of the first two fractions.

    Raises:
        DataError: no ``data.train``, or a split leaves the training or validation part empty.
    """
    d = config.data
    if not d.train:
        raise DataError("no training data: set data.train in the config (or data.train=PATH on the command line)")
    full = load_structures_dataset(d.train, config, progress=progress)
    out = {}
    if d.val:
        out["train"] = full
        out["val"] = load_structures_dataset(d.val, config, progress=progress)
        out["test"] = load_structures_dataset(d.test, config, progress=progress) if d.test else full.subset([])
    else:
        rng = np.random.default_rng(d.split_seed)
        perm = rng.permutation(len(full))
        f_train, f_val, f_test = d.split
        if d.test:
            f_train, f_val, f_test = f_train / (f_train + f_val), f_val / (f_train + f_val), 0.0
        n_train = int(round(f_train * len(full)))
        n_val = int(round(f_val * len(full))) if f_test > 0 else len(full) - n_train
        out["train"] = full.subset(perm[:n_train])
        out["val"] = full.subset(perm[n_train : n_train + n_val])
        out["test"] = (load_structures_dataset(d.test, config, progress=progress) if d.test
                       else full.subset(perm[n_train + n_val :]))
    if len(out["train"]) == 0 or len(out["val"]) == 0:
        raise DataError(f"split of {d.train} ({len(full)} structures) leaves an empty training or "
                        f"validation part: {len(out['train'])}/{len(out['val'])}; add data or change data.split")
    return out


class EpochSampler(Sampler):
    """Random order that depends only on ``(seed, epoch)``, so resumed runs replay identically.

    Call :meth:`set_epoch` before each epoch (same API as ``DistributedSampler``).  With
    ``shuffle=False`` the order is the dataset order.
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _collate_items(items, levels: dict, dtype: torch.dtype):
    graphs, labels = zip(*items)
    return collate(graphs, labels, levels, dtype=dtype)


_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make_loader(dataset: GraphDataset, config: Config, *, shuffle: bool, seed: int = 0,
                batch_size: int | None = None, sampler: Sampler | None = None) -> DataLoader:
    """DataLoader yielding collated batches with one label tensor per target.

    Labels: per-atom targets (n_atoms, 3, ...), per-structure targets (n_graphs, 3, ...), in the
    model's dtype.  Without an explicit ``sampler`` an :class:`EpochSampler` is used.
    """
    levels = {name: t.level for name, t in config.targets.items()}
    dtype = _TORCH_DTYPES[config.model.dtype]
    return DataLoader(
        dataset,
        batch_size=batch_size or config.training.batch_size,
        sampler=sampler if sampler is not None else EpochSampler(len(dataset), shuffle, seed),
        collate_fn=partial(_collate_items, levels=levels, dtype=dtype),
        num_workers=0,
    )
