"""Exact forward pass over chunks of centre atoms, for large structures.

Every feature of the model is local to one centre atom ``i``: an edge ``(i, j)`` is updated from
the triplets ``(a, b)`` whose edges both start at ``i``, the triplet features from those two
edges, and a head sums edge and triplet terms onto ``i``.  Only the structure-level pooling (and
the sum rule) mixes atoms, and it acts on the per-atom tensors.  The forward pass can therefore
run over consecutive ranges of centre atoms, each with its own edges and triplets, and give the
same per-atom tensors as one pass over everything (to float round-off: only the order of the
matrix products' blocks differs).

Why: a 10,000-atom NaCl cell at the paper's size has 3 million triplets; one pass allocates
triplet-sized temporaries of 1.5 GB each (and page-faults them in), a chunk of ``chunk_triplets``
triplets keeps every temporary at a few tens of MB, so memory stays flat in the structure size
and the allocator reuses its pages (see ``benchmarks/bench_large.py``).

The chunks need edges sorted by centre and triplets sorted by their first edge, as
:func:`etgnn.data.graph.build_graph` and :func:`etgnn.data.batch.collate` write them; other
orders are sorted first (:func:`sort_by_centre`).
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import Tensor

__all__ = ["chunk_bounds", "sort_by_centre", "slice_geometry", "chunked_atom_tensors", "EDGE_KEYS",
           "TRIPLET_KEYS", "ATOM_KEYS"]

#: Geometry keys (see :class:`etgnn.nn.heads.Geometry`) by what their first axis runs over.
EDGE_KEYS = ("unit", "centre", "fcut", "fcut_trip")
TRIPLET_KEYS = ("ta", "tb")
ATOM_KEYS = ("numbers", "batch")
_OTHER_KEYS = ("n_graphs",)


def chunk_bounds(centre: Tensor, ta: Tensor, n_atoms: int, chunk_triplets: int) -> list[tuple[int, ...]]:
    """Consecutive ranges of centre atoms with about ``chunk_triplets`` triplets each.

    Args:
        centre: (n_edges,) int64 centre atom of each edge, sorted.
        ta: (n_triplets,) int64 first edge of each triplet, sorted.
        n_atoms: number of atoms.
        chunk_triplets: triplets per chunk (a chunk holds at least one atom, so one atom with
            more triplets makes a larger chunk).

    Returns:
        list of ``(a0, a1, e0, e1, t0, t1)``: atoms ``a0:a1``, their edges ``e0:e1`` and
        triplets ``t0:t1``; together they cover every atom, edge and triplet once.
    """
    device = centre.device
    per_atom = torch.bincount(centre.index_select(0, ta), minlength=n_atoms)
    cum = per_atom.cumsum(0)
    n_chunks = max(1, -(-int(ta.shape[0]) // chunk_triplets))
    targets = torch.arange(1, n_chunks, device=device, dtype=cum.dtype) * chunk_triplets
    cuts = torch.searchsorted(cum, targets, right=True)  # first atom past each target
    atoms = torch.cat([cuts.new_zeros(1), cuts, cuts.new_full((1,), n_atoms)]).unique_consecutive()
    edges = torch.searchsorted(centre, atoms)
    trips = torch.searchsorted(ta, edges)
    a, e, t = atoms.tolist(), edges.tolist(), trips.tolist()  # the one host sync of a chunked pass
    return [(a[k], a[k + 1], e[k], e[k + 1], t[k], t[k + 1]) for k in range(len(a) - 1)]


def sort_by_centre(dist: Tensor, edge_index: Tensor, geo: dict) -> tuple[Tensor, Tensor, dict]:
    """Edges sorted by centre and triplets by first edge (stable), with triplet indices remapped.

    Args:
        dist: (n_edges,) edge lengths.
        edge_index: (2, n_edges) [centre, neighbour].
        geo: geometry dict (keys :data:`EDGE_KEYS`, :data:`TRIPLET_KEYS`, ...).

    Returns:
        ``(dist, edge_index, geo)`` permuted; unchanged objects when already sorted.
    """
    centre, ta = edge_index[0], geo["ta"]
    sorted_edges = bool((centre[1:] >= centre[:-1]).all())
    sorted_trips = bool((ta[1:] >= ta[:-1]).all())
    if sorted_edges and sorted_trips:
        return dist, edge_index, geo
    geo = dict(geo)
    if not sorted_edges:
        perm = torch.sort(centre, stable=True).indices
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.shape[0], device=perm.device)
        dist, edge_index = dist.index_select(0, perm), edge_index.index_select(1, perm)
        for key in EDGE_KEYS:
            geo[key] = geo[key].index_select(0, perm)
        for key in TRIPLET_KEYS:
            geo[key] = inverse.index_select(0, geo[key])
    perm_t = torch.sort(geo["ta"], stable=True).indices
    for key in TRIPLET_KEYS:
        geo[key] = geo[key].index_select(0, perm_t)
    return dist, edge_index, geo


def slice_geometry(geo: dict, a0: int, a1: int, e0: int, e1: int, t0: int, t1: int) -> dict:
    """The geometry of centre atoms ``a0:a1`` (edges ``e0:e1``, triplets ``t0:t1``), indices local.

    Raises:
        KeyError: for a geometry key this module does not know how to slice.
    """
    out = {}
    for key, value in geo.items():
        if key in EDGE_KEYS:
            out[key] = value[e0:e1]
        elif key in TRIPLET_KEYS:
            out[key] = value[t0:t1] - e0
        elif key in ATOM_KEYS:
            out[key] = value[a0:a1]
        elif key in _OTHER_KEYS:
            out[key] = value
        else:
            raise KeyError(f"etgnn.nn.chunking: geometry key {key!r} has no slicing rule; add it to "
                           "EDGE_KEYS, TRIPLET_KEYS, ATOM_KEYS or _OTHER_KEYS")
    out["centre"] = out["centre"] - a0
    return out


def _chunk_forward(backbone, heads, keys, numbers, edge_index, pick, dist, anchor, *values):
    """Raw per-atom tensors of one chunk, a tuple in the order of ``heads``."""
    sub = dict(zip(keys, values))
    feats = backbone(numbers, edge_index, dist, sub["unit"], sub["ta"], sub["tb"])
    feats["atom"] = feats["atom"].index_select(0, pick)
    out = tuple(head.atom_tensors(feats, sub) for head in heads.values())
    return out if anchor is None else tuple(o + 0.0 * anchor for o in out)


def chunked_atom_tensors(backbone, heads, numbers: Tensor, edge_index: Tensor, dist: Tensor, geo: dict,
                         chunk_triplets: int, checkpoint: bool = False) -> dict[str, Tensor]:
    """Raw per-atom tensors of every head (``TensorHead.atom_tensors``), computed chunk by chunk.

    Args:
        backbone: the :class:`etgnn.nn.backbone.Backbone`.
        heads: mapping name -> :class:`etgnn.nn.heads.TensorHead`.
        numbers: (n_atoms,) atomic numbers.
        edge_index: (2, n_edges) [centre, neighbour].
        dist: (n_edges,) edge lengths, Angstrom.
        geo: the full :class:`etgnn.nn.heads.Geometry`.
        chunk_triplets: about this many triplets per chunk.
        checkpoint: recompute each chunk in backward instead of storing its activations
            (reentrant ``torch.utils.checkpoint``, which records nothing in forward): training
            memory stays that of one chunk, whatever the structure size.

    Returns:
        ``{name: (n_atoms, 3**rank)}``, equal to the unchunked ``atom_tensors`` to round-off.
    """
    dist, edge_index, geo = sort_by_centre(dist, edge_index, geo)
    n_atoms = numbers.shape[0]
    names = list(heads)
    parts: list[tuple[Tensor, ...]] = []
    for a0, a1, e0, e1, t0, t1 in chunk_bounds(edge_index[0], geo["ta"], n_atoms, chunk_triplets):
        sub = slice_geometry(geo, a0, a1, e0, e1, t0, t1)
        # the chunk's atoms: its centres and their neighbours, numbered in sorted order
        i, j = edge_index[0, e0:e1], edge_index[1, e0:e1]
        centres = torch.arange(a0, a1, device=i.device, dtype=i.dtype)
        nodes = torch.cat([centres, j]).unique()
        local = torch.stack([torch.searchsorted(nodes, i), torch.searchsorted(nodes, j)])
        pick = torch.searchsorted(nodes, centres)
        keys = list(sub)
        if checkpoint:
            # reentrant checkpointing runs the chunk without recording anything; the inputs are
            # explicit (gradients reach the positions through them) and ``anchor`` requires grad
            # so that the parameters get theirs even when no input does
            anchor = torch.ones((), device=dist.device, requires_grad=True)
            out = torch.utils.checkpoint.checkpoint(
                _chunk_forward, backbone, heads, keys, numbers.index_select(0, nodes), local, pick,
                dist[e0:e1], anchor, *sub.values(), use_reentrant=True)
        else:
            out = _chunk_forward(backbone, heads, keys, numbers.index_select(0, nodes), local, pick,
                                 dist[e0:e1], None, *sub.values())
        parts.append(out)
    return {name: torch.cat([p[k] for p in parts]) for k, name in enumerate(names)}
