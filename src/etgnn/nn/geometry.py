"""Edge geometry, computed once per forward pass into the batch.

Backbone, heads and the chunked pass read these fields (registered in :mod:`etgnn.data.keys`,
origin ``"geometry"``) instead of recomputing them, so there is one definition of the edge
vector, of its length and direction, and of the two smooth cutoffs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor

from ..data import keys as K

__all__ = ["edge_geometry"]


def edge_geometry(batch: Mapping[str, Tensor], cutoff_fn: Callable[[Tensor], Tensor],
                  triplet_cutoff_fn: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """``batch`` with the geometry fields added (a new dict; ``batch`` is not modified).

    Args:
        batch: a batch of :func:`etgnn.data.batch.collate` (positions, edge index and shifts).
        cutoff_fn, triplet_cutoff_fn: the smooth cutoffs of ``model.cutoff`` and
            ``model.triplet_cutoff``, (n,) Angstrom -> (n,).

    Returns:
        ``{**batch, _edge_vector: (n_edges, 3), _edge_length: (n_edges,), _edge_unit: (n_edges, 3),
        _edge_cutoff: (n_edges,), _edge_triplet_cutoff: (n_edges,)}``, differentiable in the
        positions (forces and other derivatives flow through every field).
    """
    pos = batch[K.POSITIONS]
    i, j = batch[K.EDGE_INDEX]
    vec = pos.index_select(0, j) + batch[K.EDGE_SHIFT] - pos.index_select(0, i)
    length = vec.norm(dim=-1)
    return {**batch, K.EDGE_VECTOR: vec, K.EDGE_LENGTH: length, K.EDGE_UNIT: vec / length.unsqueeze(-1),
            K.EDGE_CUTOFF: cutoff_fn(length), K.EDGE_TRIPLET_CUTOFF: triplet_cutoff_fn(length)}
