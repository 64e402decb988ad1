"""The chunked forward pass (``model.chunk_triplets``) and activation checkpointing
(``model.checkpoint``) are exact: same outputs of every head, same gradients, to round-off."""

from __future__ import annotations

import re

import pytest
import torch
from ase.build import make_supercell

from etgnn.config import load_config
from etgnn.data import keys as K
from etgnn.data.batch import collate
from etgnn.errors import ConfigError
from etgnn.nn.chunking import _SavedBytes, chunk_bounds, chunked_atom_tensors

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = 1e-11  # float64 round-off of a different summation order


def _batch(model, structures):
    """One batch of the test molecules and crystals plus a 2x2x2 supercell of the triclinic one."""
    atoms = list(structures.values()) + [make_supercell(structures["triclinic"], 2 * torch.eye(3).numpy())]
    graphs = [model.graph(a) for a in atoms]
    return collate(graphs, dtype=model.dtype)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("num_blocks", [1, 3])
def test_chunked_equals_unchunked(make_model, structures, assert_close, assert_differs, num_blocks):
    full = make_model("float64", num_blocks=num_blocks, chunk_triplets=None)
    chunked = make_model("float64", num_blocks=num_blocks, chunk_triplets=40)
    _same_weights(full, chunked)
    batch = _batch(full, structures)
    n_chunks = len(chunk_bounds(batch[K.EDGE_INDEX][0], batch[K.TRIPLET_A], batch[K.NUMBERS].shape[0], 40))
    assert n_chunks > 10, n_chunks  # the test really splits molecules and crystals into many chunks
    with torch.no_grad():
        expected, actual = full(batch), chunked(batch)
        other = make_model("float64", seed=1, num_blocks=num_blocks, chunk_triplets=None)(batch)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert_close(actual[name], expected[name], TOL, f"{name}, chunked vs one pass")
        assert_differs(other[name], expected[name], TOL, f"{name}, another model")


def test_chunked_sorts_unsorted_edges(make_model, structures, assert_close):
    """Edges in any order (e.g. from another neighbour list) give the same result."""
    full = make_model("float64", chunk_triplets=None)
    chunked = make_model("float64", chunk_triplets=40)
    batch = _batch(full, structures)
    n_edges = batch[K.EDGE_INDEX].shape[1]
    perm = torch.randperm(n_edges, generator=torch.Generator().manual_seed(0))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(n_edges)
    shuffled = dict(batch)
    shuffled[K.EDGE_INDEX] = batch[K.EDGE_INDEX][:, perm]
    shuffled[K.EDGE_SHIFT] = batch[K.EDGE_SHIFT][perm]
    tperm = torch.randperm(batch[K.TRIPLET_A].shape[0], generator=torch.Generator().manual_seed(1))
    shuffled[K.TRIPLET_A] = inverse[batch[K.TRIPLET_A]][tperm]
    shuffled[K.TRIPLET_B] = inverse[batch[K.TRIPLET_B]][tperm]
    with torch.no_grad():
        expected, actual = full(batch), chunked(shuffled)
    for name in expected:
        assert_close(actual[name], expected[name], TOL, f"{name}, shuffled edges and triplets, chunked")


def _stored_chunks(model, batch, store_bytes: float) -> dict:
    """``stats`` of a chunked, checkpointed pass of ``model``'s heads with ``store_bytes``."""
    stats: dict = {}
    heads = {name: model.heads[name] for name in model.heads if name not in model.gradient_targets}
    with torch.enable_grad():
        chunked_atom_tensors(model.backbone, heads, model.geometry(batch), 40, checkpoint=True,
                             store_bytes=store_bytes, stats=stats)
    return stats


@pytest.mark.parametrize("checkpoint", ["blocks", "chunks", "chunks+budget"])
def test_checkpoint_gradients_equal(make_model, structures, assert_close, monkeypatch, checkpoint):
    """Parameter and position gradients with checkpointing equal those without; with a memory
    budget, chunks that are stored and chunks that are recomputed mix in one backward pass."""
    names = ["bec", "forces", "dielectric", "piezo", "energy"]
    ref = make_model("float64", targets=names, chunk_triplets=None)
    base = _batch(ref, structures)
    n_chunks = len(chunk_bounds(base[K.EDGE_INDEX][0], base[K.TRIPLET_A], base[K.NUMBERS].shape[0], 40))
    if checkpoint == "chunks+budget":
        full = _stored_chunks(ref, base, float("inf"))
        half = _stored_chunks(ref, base, full["stored_bytes"] / 2)
        assert full["stored"] == full["chunks"] > 10 and 0 < half["stored"] < full["chunks"], (full, half)
        ckpt = make_model("float64", targets=names, chunk_triplets=40, checkpoint="chunks",
                          checkpoint_budget_gb=full["stored_bytes"] / 2e9)
    else:
        ckpt = make_model("float64", targets=names, chunk_triplets=40, checkpoint=checkpoint)
    _same_weights(ref, ckpt)
    # count the chunks recomputed in backward (reentrant checkpoints; blocks use non-reentrant ones)
    recomputed = []
    original = torch.utils.checkpoint.checkpoint

    def counting(fn, *args, use_reentrant=None, **kwargs):
        recomputed.extend([True] if use_reentrant else [])
        return original(fn, *args, use_reentrant=use_reentrant, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)

    def grads(model):
        batch = dict(base)
        batch[K.POSITIONS] = base[K.POSITIONS].clone().requires_grad_(True)
        model.zero_grad()
        out = model(batch)
        loss = sum((v * torch.linspace(0.5, 1.5, v.numel(), dtype=v.dtype).reshape(v.shape)).square().sum()
                   for v in out.values())
        loss.backward()
        return batch[K.POSITIONS].grad.clone(), {k: p.grad.clone() for k, p in model.named_parameters()
                                                 if p.grad is not None}

    try:
        pos_ref, par_ref = grads(ref)
        pos_ck, par_ck = grads(ckpt)
    finally:
        ref.zero_grad(set_to_none=True)
        ckpt.zero_grad(set_to_none=True)
    expected = {"blocks": (0, 0), "chunks": (n_chunks, n_chunks), "chunks+budget": (1, n_chunks - 1)}[checkpoint]
    assert n_chunks > 10 and expected[0] <= len(recomputed) <= expected[1], (checkpoint, len(recomputed), n_chunks)
    assert_close(pos_ck, pos_ref, TOL, f"position gradient, checkpoint={checkpoint}")
    assert par_ck.keys() == par_ref.keys() and len(par_ref) > 20
    # on the scale of the largest gradient: some vanish exactly (the sum rule cancels a bias's)
    scale = max(float(g.abs().max()) for g in par_ref.values())
    for k in par_ref:
        assert_close(par_ck[k], par_ref[k], TOL, f"gradient of {k}, checkpoint={checkpoint}", scale=scale)


def test_checkpoint_budget_keeps_chunks_within_it(make_model, structures):
    """Chunks are stored, in order, while their activations fit the budget; the rest recomputed."""
    model = make_model("float64", targets=["bec", "dielectric"], chunk_triplets=None)
    batch = _batch(model, structures)
    full = _stored_chunks(model, batch, float("inf"))
    none = _stored_chunks(model, batch, 0.0)
    assert none == {"chunks": full["chunks"], "stored": 0, "stored_bytes": 0}
    for fraction in (0.25, 0.5, 0.75):
        part = _stored_chunks(model, batch, fraction * full["stored_bytes"])
        # a chunk's size is predicted from the bytes per triplet of the last chunk stored: a few
        # percent off between chunks of different structures, so allow 10 % over the budget
        assert 0 < part["stored"] < full["chunks"], (fraction, part)
        assert (fraction - 0.1) * full["stored_bytes"] < part["stored_bytes"] <= 1.1 * fraction * full["stored_bytes"]


def test_saved_bytes_counts_activations_not_parameters():
    lin = torch.nn.Linear(4, 3, dtype=torch.float64)
    x = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    counter = _SavedBytes(lin)
    with counter:
        y = lin(x)  # saves x (10 x 4 float64) and the weight (a parameter: not counted)
        (y * y).sum()  # saves y twice: counted once (10 x 3)
    assert counter.nbytes == 10 * 4 * 8 + 10 * 3 * 8


def test_chunk_bounds_cover_everything():
    # atoms 0..3; atom 0: edges 0,1 (2 triplets); atom 1: none; atom 2: edges 2,3,4 (6); atom 3: edge 5
    centre = torch.tensor([0, 0, 2, 2, 2, 3])
    ta = torch.tensor([0, 1, 2, 2, 3, 3, 4, 4])
    bounds = chunk_bounds(centre, ta, 4, 3)
    assert bounds == [(0, 2, 0, 2, 0, 2), (2, 4, 2, 6, 2, 8)]
    assert chunk_bounds(centre, ta, 4, 100) == [(0, 4, 0, 6, 0, 8)]


@pytest.mark.parametrize("model, message", [
    ({"chunk_triplets": 0}, "model.chunk_triplets must be >= 1 or null, got 0"),
    ({"checkpoint": "chunks", "chunk_triplets": None},
     "model.checkpoint: chunks needs model.chunk_triplets (an integer, e.g. 16384)"),
    ({"checkpoint": "all"}, "model.checkpoint must be one of ['none', 'blocks', 'chunks'], got 'all'"),
    ({"checkpoint": "blocks", "checkpoint_budget_gb": 4},
     "model.checkpoint_budget_gb applies to model.checkpoint: chunks, not 'blocks'"),
    ({"checkpoint": "chunks", "checkpoint_budget_gb": -1},
     "model.checkpoint_budget_gb must be >= 0 or null, got -1.0"),
])
def test_config_errors(model, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config({"model": model, "targets": {"mu": {"key": "mu", "level": "structure", "rank": 1}}})
