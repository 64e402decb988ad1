"""The field registry drives batching, chunk slicing and the geometry fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

import etgnn
from etgnn.data import keys as K
from etgnn.data.batch import collate
from etgnn.nn.chunking import slice_batch

MODEL = {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1, "dtype": "float64"}


@pytest.fixture
def extra_fields():
    """Two fields registered for one test only: an edge weight and a triplet field that indexes edges."""
    specs = [K.FieldSpec("_test_edge_weight", "edge", ("n_edges",), "float"),
             K.FieldSpec("_test_triplet_edge", "triplet", ("n_triplets",), "int", index_of="edge")]
    for spec in specs:
        K.register(spec)
    yield specs
    for spec in specs:
        del K.FIELDS[spec.name]


def test_a_registered_field_is_batched_as_its_spec_says(extra_fields):
    model = etgnn.build_model({"model": MODEL, "targets": {"mu": {"key": "mu", "level": "structure", "rank": 1}}})
    graphs = [model.graph(molecule("H2O")), model.graph(bulk("Si", "diamond", a=5.43))]
    for g in graphs:
        g["_test_edge_weight"] = np.arange(g[K.EDGE_INDEX].shape[1], dtype=float)
        g["_test_triplet_edge"] = g[K.TRIPLET_B].copy()
    batch = collate(graphs, dtype=torch.float64)
    n0 = graphs[0][K.EDGE_INDEX].shape[1]
    expected = np.concatenate([graphs[0]["_test_edge_weight"], graphs[1]["_test_edge_weight"]])
    np.testing.assert_array_equal(batch["_test_edge_weight"].numpy(), expected)
    assert batch["_test_edge_weight"].dtype == torch.float64
    torch.testing.assert_close(batch["_test_triplet_edge"], batch[K.TRIPLET_B])  # offset like the triplets
    assert int(batch["_test_triplet_edge"].min()) >= 0
    assert int(batch[K.TRIPLET_B][len(graphs[0][K.TRIPLET_B]):].min()) >= n0
    # a chunk of the batch slices it along the edges, like every other edge field
    sub = slice_batch(batch, 0, 1, 2, 5, 0, 0)
    np.testing.assert_array_equal(sub["_test_edge_weight"].numpy(), [2.0, 3.0, 4.0])


def test_every_batch_key_is_registered_and_geometry_is_added_once():
    model = etgnn.build_model({"model": MODEL, "targets": {"mu": {"key": "mu", "level": "structure", "rank": 1}}})
    batch = collate([model.graph(molecule("CH3OH"))], dtype=torch.float64)
    assert set(batch) == {f.name for f in K.FIELDS.values() if f.origin in ("graph", "batch")}
    geo = model.geometry(batch)
    assert set(geo) - set(batch) == {f.name for f in K.fields(origin="geometry")}
    vec = geo[K.EDGE_VECTOR]
    torch.testing.assert_close(geo[K.EDGE_LENGTH], vec.norm(dim=-1))
    torch.testing.assert_close(geo[K.EDGE_UNIT], vec / vec.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(geo[K.EDGE_TRIPLET_CUTOFF], model.backbone.triplet_cutoff_fn(geo[K.EDGE_LENGTH]))


def test_each_cutoff_function_runs_once_per_forward_pass():
    """Geometry once: backbone, radial bases and heads read the cutoff values from the batch."""
    model = etgnn.build_model({"model": MODEL, "targets": {"a": {"key": "a", "level": "structure", "rank": 2},
                                                           "b": {"key": "b", "level": "atom", "rank": 1}}})
    batch = collate([model.graph(molecule("CH3OH"))], dtype=torch.float64)
    calls = {"edge": 0, "triplet": 0}
    hooks = [model.backbone.cutoff_fn.register_forward_hook(lambda *a: calls.__setitem__("edge", calls["edge"] + 1)),
             model.backbone.triplet_cutoff_fn.register_forward_hook(
                 lambda *a: calls.__setitem__("triplet", calls["triplet"] + 1))]
    try:
        model(batch)
    finally:
        for h in hooks:
            h.remove()
    assert calls == {"edge": 1, "triplet": 1}


def test_registry_rejects_an_inconsistent_spec():
    with pytest.raises(ValueError, match="has no n_edges axis"):
        K.FieldSpec("_bad", "edge", ("n_atoms", 3))
    with pytest.raises(ValueError, match="already registered"):
        K.register(K.FieldSpec(K.POSITIONS, "atom", ("n_atoms", 3), "float", "bohr"))
