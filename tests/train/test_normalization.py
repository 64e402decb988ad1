"""fit_normalization: isotropic shifts and scales fitted on the training data only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms

import etgnn
from etgnn.data.dataset import GraphDataset
from etgnn.data.graph import build_graph
from etgnn.train.normalization import fit_normalization

TINY = {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1, "dtype": "float64"}


def _dataset(rng, n=12):
    graphs, labels = [], []
    for _ in range(n):
        atoms = Atoms("HHO", positions=rng.normal(scale=0.8, size=(3, 3)) + [[0, 0, 0], [1.5, 0, 0], [0, 1.5, 0]])
        graphs.append(build_graph(atoms, 4.0, 3.0))
        iso = np.array([1.0, 1.0, -2.0])[:, None, None] * np.eye(3)  # H: +1, O: -2 (sums to zero)
        bec = iso + 0.1 * rng.normal(size=(3, 3, 3))
        eps = 5.0 * np.eye(3) + 0.3 * rng.normal(size=(3, 3))
        alpha = 2.0 * np.eye(3) * 1 + 0.1 * rng.normal(size=(3, 3))  # extensive: 3 atoms
        labels.append({"bec": bec, "eps": eps, "alpha": alpha})
    return GraphDataset(graphs, labels, [str(i) for i in range(n)])


def _model():
    return etgnn.build_model({"model": TINY, "targets": {
        "bec": {"key": "b", "level": "atom", "rank": 2},
        "eps": {"key": "e", "level": "structure", "rank": 2, "reduce": "mean"},
        "alpha": {"key": "a", "level": "structure", "rank": 2, "reduce": "sum"},
    }})


def test_per_atom_shift_is_the_element_mean_of_the_isotropic_part():
    ds = _dataset(np.random.default_rng(0))
    model = _model()
    fit_normalization(model, ds)
    y = np.concatenate([lab["bec"] for lab in ds.labels])
    z = np.concatenate([g["_numbers"] for g in ds.graphs])
    for el in (1, 8):
        expected = np.trace(y[z == el], axis1=1, axis2=2).mean() / 3
        assert model.heads["bec"].normalizer.element_shift[el, 0].item() == pytest.approx(expected, rel=1e-10)
    resid = y - model.heads["bec"].normalizer.element_shift[z, 0].numpy()[:, None, None] * np.eye(3)
    assert model.heads["bec"].scale.item() == pytest.approx(np.sqrt(np.mean(resid**2)), rel=1e-10)


def test_intensive_shift_is_global_and_extensive_shift_is_additive():
    ds = _dataset(np.random.default_rng(1), n=20)
    model = _model()
    fit_normalization(model, ds)
    eps_iso = np.mean([np.trace(lab["eps"]) / 3 for lab in ds.labels])
    shift_eps = model.heads["eps"].normalizer.element_shift[:, 0]
    assert shift_eps[1].item() == pytest.approx(eps_iso) and shift_eps[8].item() == pytest.approx(eps_iso)
    # extensive: 2 H + 1 O shifts add up to the mean isotropic part of alpha (one composition only)
    shift_a = model.heads["alpha"].normalizer.element_shift[:, 0]
    alpha_iso = np.mean([np.trace(lab["alpha"]) / 3 for lab in ds.labels])
    assert (2 * shift_a[1] + shift_a[8]).item() == pytest.approx(alpha_iso, rel=1e-4)


def test_untrained_prediction_equals_fitted_shift_when_raw_output_is_zero():
    ds = _dataset(np.random.default_rng(2))
    model = _model()
    fit_normalization(model, ds)
    with torch.no_grad():
        for head in model.heads.values():
            head.scale.zero_()  # switches off the learned part: only the shift remains
    pred = model.predict_graphs(ds.graphs[:1])[0]
    z = ds.graphs[0]["_numbers"]
    shift = model.heads["bec"].normalizer.element_shift[:, 0].numpy()
    np.testing.assert_allclose(pred["bec"], shift[z][:, None, None] * np.eye(3), atol=1e-12)
    n_atoms = sum(len(g["_numbers"]) for g in ds.graphs)
    n_edges = sum(g["_edge_index"].shape[1] for g in ds.graphs)
    n_trip = sum(g["_triplet_a"].shape[0] for g in ds.graphs)
    assert 1.0 / model.backbone.counts.edges_per_atom.item() == pytest.approx(n_atoms / n_edges)
    assert 1.0 / model.backbone.counts.triplets_per_atom.item() == pytest.approx(n_atoms / n_trip)


def test_prediction_on_an_element_absent_from_training_warns():
    ds = _dataset(np.random.default_rng(3))
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(Atoms("LiF", positions=[[0, 0, 0], [1.6, 0, 0]]))  # untrained: no warning
    fit_normalization(model, ds)
    assert model.elements_seen[[1, 8]].all() and int(model.elements_seen.sum()) == 2
    with pytest.warns(UserWarning, match="element\\(s\\) Li, F absent from the training data"):
        model.predict(Atoms("LiF", positions=[[0, 0, 0], [1.6, 0, 0]]))
