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

    The field registry (:mod:`etgnn.data.keys`) drives it: every field of origin ``"graph"`` is
    concatenated along the axis of its level (stacked for structure fields), and fields that index
    atoms or edges (``index_of``) are offset by the atoms / edges of the structures before them.
    ``_batch``, ``_edge_graph`` and ``_n_atoms`` are added.

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
    offsets = {"atom": np.concatenate([[0], np.cumsum(n_atoms)[:-1]]),
               "edge": np.concatenate([[0], np.cumsum(n_edges)[:-1]])}
    batch = {spec.name: _batch_field(spec, graphs, offsets, dtype) for spec in K.fields(origin="graph")}
    batch[K.N_ATOMS] = torch.as_tensor(n_atoms)
    batch[K.BATCH] = torch.as_tensor(np.repeat(np.arange(len(graphs)), n_atoms))
    batch[K.EDGE_GRAPH] = torch.as_tensor(np.repeat(np.arange(len(graphs)), n_edges))
    if labels is not None:
        for name, level in (label_levels or {}).items():
            arrays = [lab[name] for lab in labels]
            stacked = np.concatenate(arrays) if level == "atom" else np.stack(arrays)
            batch[name] = torch.as_tensor(stacked, dtype=dtype)
    return batch


def _batch_field(spec: K.FieldSpec, graphs, offsets: dict, dtype: torch.dtype) -> torch.Tensor:
    """One registered graph field of every structure, batched as its :class:`FieldSpec` says:
    stacked (structure level) or concatenated along its level axis, indices offset."""
    parts = [g[spec.name] for g in graphs]
    if spec.index_of is not None:
        parts = [p + o for p, o in zip(parts, offsets[spec.index_of])]
    value = np.stack(parts) if spec.level == "structure" else np.concatenate(parts, axis=spec.axis)
    return torch.as_tensor(value, dtype=dtype) if spec.dtype == "float" else torch.as_tensor(value)


def to_device(batch: Mapping[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch to ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
