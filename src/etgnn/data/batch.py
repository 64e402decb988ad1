"""Batching of per-structure graphs into one disjoint graph (PyG style), as torch tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from . import keys as K

__all__ = ["collate", "to_device"]


def collate(
    graphs: Sequence[Mapping[str, np.ndarray]],
    labels: Sequence[Mapping[str, np.ndarray]] | None = None,
    label_levels: Mapping[str, str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Concatenate graphs from :func:`etgnn.data.graph.build_graph` into one batch.

    Node and edge arrays are concatenated; edge indices are offset by the atoms before them and
    triplet indices by the edges before them.  ``_batch``, ``_edge_graph`` and ``_n_atoms`` are added.

    Args:
        graphs: per-structure graph dicts.
        labels: optional per-structure label dicts ``{target_name: array}``.
        label_levels: ``{target_name: "atom" | "structure"}``: per-atom labels are concatenated
            along atoms, per-structure labels stacked along a new first axis.
        dtype: float dtype of the batch.

    Returns:
        dict of tensors; see :mod:`etgnn.data.keys` for shapes.
    """
    n_atoms = np.array([len(g[K.NUMBERS]) for g in graphs], dtype=np.int64)
    n_edges = np.array([g[K.EDGE_INDEX].shape[1] for g in graphs], dtype=np.int64)
    atom_off = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    edge_off = np.concatenate([[0], np.cumsum(n_edges)[:-1]])

    def cat(key, offsets=None, axis=0):
        parts = [g[key] if offsets is None else g[key] + o for g, o in zip(graphs, offsets if offsets is not None else [None] * len(graphs))]
        return np.concatenate(parts, axis=axis)

    batch = {
        K.POSITIONS: torch.as_tensor(cat(K.POSITIONS), dtype=dtype),
        K.NUMBERS: torch.as_tensor(cat(K.NUMBERS)),
        K.CELL: torch.as_tensor(np.stack([g[K.CELL] for g in graphs]), dtype=dtype),
        K.PBC: torch.as_tensor(np.stack([g[K.PBC] for g in graphs])),
        K.N_ATOMS: torch.as_tensor(n_atoms),
        K.BATCH: torch.as_tensor(np.repeat(np.arange(len(graphs)), n_atoms)),
        K.EDGE_INDEX: torch.as_tensor(cat(K.EDGE_INDEX, atom_off, axis=1)),
        K.EDGE_SHIFT: torch.as_tensor(cat(K.EDGE_SHIFT), dtype=dtype),
        K.EDGE_GRAPH: torch.as_tensor(np.repeat(np.arange(len(graphs)), n_edges)),
        K.TRIPLET_A: torch.as_tensor(cat(K.TRIPLET_A, edge_off)),
        K.TRIPLET_B: torch.as_tensor(cat(K.TRIPLET_B, edge_off)),
    }
    if labels is not None:
        for name, level in (label_levels or {}).items():
            arrays = [lab[name] for lab in labels]
            stacked = np.concatenate(arrays) if level == "atom" else np.stack(arrays)
            batch[name] = torch.as_tensor(stacked, dtype=dtype)
    return batch


def to_device(batch: Mapping[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch to ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
