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

from ..data import keys as K

__all__ = ["chunk_bounds", "sort_by_centre", "slice_batch", "chunked_atom_tensors"]


def _fields(batch, level: str) -> list[K.FieldSpec]:
    return [f for f in K.fields(level=level) if f.name in batch]


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


def sort_by_centre(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Edges sorted by centre and triplets by first edge (stable), with triplet indices remapped.

    Every registered edge field (:mod:`etgnn.data.keys`) is permuted with the edges, every
    triplet field with the triplets; fields that index edges are renumbered.

    Args:
        batch: a batch with geometry fields.

    Returns:
        the batch permuted (a new dict), or ``batch`` itself when already sorted.
    """
    centre, ta = batch[K.EDGE_INDEX][0], batch[K.TRIPLET_A]
    sorted_edges = bool((centre[1:] >= centre[:-1]).all())
    sorted_trips = bool((ta[1:] >= ta[:-1]).all())
    if sorted_edges and sorted_trips:
        return batch
    batch = dict(batch)
    if not sorted_edges:
        perm = torch.sort(centre, stable=True).indices
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.shape[0], device=perm.device)
        for f in _fields(batch, "edge"):
            batch[f.name] = batch[f.name].index_select(f.axis, perm)
        for f in _fields(batch, "triplet"):
            if f.index_of == "edge":
                batch[f.name] = inverse.index_select(0, batch[f.name])
    perm_t = torch.sort(batch[K.TRIPLET_A], stable=True).indices
    for f in _fields(batch, "triplet"):
        batch[f.name] = batch[f.name].index_select(f.axis, perm_t)
    return batch


def slice_batch(batch: dict[str, Tensor], a0: int, a1: int, e0: int, e1: int, t0: int, t1: int) -> dict[str, Tensor]:
    """The edge and triplet fields of centre atoms ``a0:a1`` (edges ``e0:e1``, triplets ``t0:t1``).

    Triplet indices are made local to the chunk's edges; the edge index keeps global atom numbers
    (:func:`chunked_atom_tensors` renumbers them).  Atom and structure fields are not included.

    Raises:
        KeyError: for a batch key at edge or triplet level that the field registry does not know.
    """
    out = {}
    for f in _fields(batch, "edge") + _fields(batch, "triplet"):
        lo, hi = (e0, e1) if f.level == "edge" else (t0, t1)
        value = batch[f.name].narrow(f.axis, lo, hi - lo)
        out[f.name] = value - e0 if f.index_of == "edge" else value
    return out


class _SavedBytes(torch.autograd.graph.saved_tensors_hooks):
    """Counts the bytes of the tensors autograd saves for backward inside the ``with`` block
    (each tensor once; the modules' parameters, which exist anyway, are not counted)."""

    def __init__(self, *modules):
        self.nbytes = 0
        params = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
        seen: set[tuple] = set()

        def pack(t: Tensor) -> Tensor:
            key = (t.data_ptr(), tuple(t.shape), t.dtype)
            if key not in seen and t.untyped_storage().data_ptr() not in params:
                seen.add(key)
                self.nbytes += t.numel() * t.element_size()
            return t

        super().__init__(pack, lambda t: t)


def _chunk_forward(backbone, heads, keys, numbers, edge_index, centre, pick, anchor, *values):
    """Raw per-atom tensors of one chunk, a tuple in the order of ``heads``."""
    sub = dict(zip(keys, values))
    feats = backbone({**sub, K.NUMBERS: numbers, K.EDGE_INDEX: edge_index})
    feats["atom"] = feats["atom"].index_select(0, pick)
    head_view = {**sub, K.EDGE_INDEX: torch.stack([centre, edge_index[1]])}  # centres numbered 0..a1-a0
    out = tuple(head.atom_tensors(feats, head_view) for head in heads.values())
    return out if anchor is None else tuple(o + 0.0 * anchor for o in out)


def chunked_atom_tensors(backbone, heads, batch: dict[str, Tensor], chunk_triplets: int,
                         checkpoint: bool = False, after_chunk=None, store_bytes: float = 0.0,
                         stats: dict | None = None) -> dict[str, Tensor]:
    """Raw per-atom tensors of every head (``TensorHead.atom_tensors``), computed chunk by chunk.

    Args:
        backbone: the :class:`etgnn.nn.backbone.Backbone`.
        heads: mapping name -> :class:`etgnn.nn.heads.TensorHead`.
        batch: the batch with its geometry fields (:func:`etgnn.nn.geometry.edge_geometry`).
        chunk_triplets: about this many triplets per chunk.
        checkpoint: recompute each chunk in backward instead of storing its activations
            (reentrant ``torch.utils.checkpoint``, which records nothing in forward): training
            memory stays that of one chunk, whatever the structure size.
        after_chunk: ``after_chunk({name: chunk's raw tensors}) -> {name: tensors kept}``, called
            once per chunk (e.g. to take a gradient chunk by chunk and keep detached values).
        store_bytes: with ``checkpoint``, store the activations of each chunk, in order, that still
            fits in this many bytes and recompute the others (faster where memory allows; the
            same gradients).  A chunk's size is predicted from the bytes per triplet of the last
            chunk stored, so the total can exceed the budget by that prediction's error (and the
            first chunk is stored whatever its size).
        stats: a dict that receives ``chunks``, ``stored`` (chunks whose activations were kept)
            and ``stored_bytes`` (bytes of tensors they saved for backward, parameters excluded).

    Returns:
        ``{name: (n_atoms, 3**rank)}``, equal to the unchunked ``atom_tensors`` to round-off.
    """
    batch = sort_by_centre(batch)
    numbers, edge_index = batch[K.NUMBERS], batch[K.EDGE_INDEX]
    n_atoms = numbers.shape[0]
    names = list(heads)
    parts: list[tuple[Tensor, ...]] = []
    bounds = chunk_bounds(edge_index[0], batch[K.TRIPLET_A], n_atoms, chunk_triplets)
    stored, stored_bytes, per_triplet = 0, 0, 0.0
    for a0, a1, e0, e1, t0, t1 in bounds:
        sub = slice_batch(batch, a0, a1, e0, e1, t0, t1)
        # the chunk's atoms: its centres and their neighbours, numbered in sorted order
        i, j = edge_index[0, e0:e1], edge_index[1, e0:e1]
        centres = torch.arange(a0, a1, device=i.device, dtype=i.dtype)
        nodes = torch.cat([centres, j]).unique()
        local = torch.stack([torch.searchsorted(nodes, i), torch.searchsorted(nodes, j)])
        pick = torch.searchsorted(nodes, centres)
        sub.pop(K.EDGE_INDEX)
        keys = list(sub)
        args = (numbers.index_select(0, nodes), local, i - a0, pick)
        if checkpoint and store_bytes > 0 and stored_bytes + per_triplet * (t1 - t0) <= store_bytes:
            saved = _SavedBytes(backbone, *heads.values())
            with saved:
                out = _chunk_forward(backbone, heads, keys, *args, None, *sub.values())
            stored, stored_bytes = stored + 1, stored_bytes + saved.nbytes
            per_triplet = saved.nbytes / max(1, t1 - t0)
        elif checkpoint:
            # reentrant checkpointing runs the chunk without recording anything; the inputs are
            # explicit (gradients reach the positions through them) and ``anchor`` requires grad
            # so that the parameters get theirs even when no input does
            anchor = torch.ones((), device=numbers.device, requires_grad=True)
            out = torch.utils.checkpoint.checkpoint(_chunk_forward, backbone, heads, keys, *args, anchor,
                                                    *sub.values(), use_reentrant=True)
        else:
            out = _chunk_forward(backbone, heads, keys, *args, None, *sub.values())
        if after_chunk is not None:
            kept = after_chunk(dict(zip(names, out)))
            out = tuple(kept[name] for name in names)
        parts.append(out)
    if stats is not None:
        stats.update(chunks=len(bounds), stored=stored, stored_bytes=stored_bytes)
    return {name: torch.cat([p[k] for p in parts]) for k, name in enumerate(names)}
