"""A model file written by etgnn 0.1.0 (tests/fixtures, made with that release) still loads and
predicts exactly what it predicted then, with a warning that says how to get a continuous model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, molecule

import etgnn

FIXTURES = Path(__file__).parent / "fixtures"


def _assert_predicts_as_saved(model, fixture: str, rtol: float, atol: float) -> None:
    """The model's predictions for a molecule and a crystal equal those stored with its fixture."""
    ref = np.load(FIXTURES / fixture)
    preds = model.predict([molecule("CH3OH"), bulk("ZnO", "wurtzite", a=3.25, c=5.2)])
    for i, item in enumerate(preds):
        for name, value in item.items():
            np.testing.assert_allclose(value, ref[f"{name}_{i}"], rtol=rtol, atol=atol, err_msg=f"{name} {i}")


def test_v010_checkpoint_predicts_as_it_did():
    with pytest.warns(UserWarning, match="written by etgnn 0.1.0.*retrain it"):
        model = etgnn.load_model(FIXTURES / "model_v0.1.0.pt")
    _assert_predicts_as_saved(model, "model_v0.1.0_predictions.npz", rtol=1e-5, atol=1e-6)
    assert not model.config.model.smooth_triplets
    assert not any(t.mixed or t.chiral or t.four_body for t in model.config.targets.values())


def test_format2_checkpoint_predicts_as_it_did():
    """Format 2 (etgnn before the Target redesign) kept scale and shift as head buffers and a copy
    of the neighbour normalisations in every head; it loads into the normalisers and the
    backbone's neighbour counts and predicts what it did (fixture written by commit 0294ca5)."""
    model = etgnn.load_model(FIXTURES / "model_format2.pt")
    _assert_predicts_as_saved(model, "model_format2_predictions.npz", rtol=1e-12, atol=1e-12)
    stats = model.statistics()
    assert stats.edges_per_atom == pytest.approx(12.5) and stats.triplets_per_atom == pytest.approx(40.0)
    assert [stats.targets[n].scale for n in ("bec", "beta", "eps")] == [2.0, 3.0, 4.0]
    assert stats.elements == [1, 6, 8, 30]


def test_statistics_are_stored_once(tmp_path):
    """No copy of a statistic in the model file: one scale and shift per target, one pair of
    neighbour counts for the model."""
    model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 4, "num_blocks": 1},
                               "targets": {"a": {"key": "a", "level": "atom", "rank": 2},
                                           "b": {"key": "b", "level": "structure", "rank": 1}}})
    keys = list(model.checkpoint()["state_dict"])
    assert [k for k in keys if "per_atom" in k] == ["backbone.counts.edges_per_atom", "backbone.counts.triplets_per_atom"]
    assert [k for k in keys if k.endswith(("scale", "element_shift"))] == [
        "heads.a.normalizer.scale", "heads.a.normalizer.element_shift",
        "heads.b.normalizer.scale", "heads.b.normalizer.element_shift"]
    assert "normalization" not in model.checkpoint()


def test_new_checkpoint_loads_without_warning(tmp_path, recwarn):
    model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 4, "num_blocks": 1},
                               "targets": {"beta": {"key": "beta", "level": "structure", "rank": 3}}})
    model.save(tmp_path / "m.pt")
    again = etgnn.load_model(tmp_path / "m.pt")
    assert again.config == model.config
    assert not [w for w in recwarn if "0.1.0" in str(w.message)]


def test_newer_format_is_refused_with_the_remedy(tmp_path):
    import torch

    model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 4, "num_blocks": 1},
                               "targets": {"mu": {"key": "mu", "level": "structure", "rank": 1}}})
    ckpt = model.checkpoint()
    assert ckpt["format_version"] == etgnn.model.CHECKPOINT_FORMAT == 3
    ckpt["format_version"] = 99
    torch.save(ckpt, tmp_path / "future.pt")
    with pytest.raises(etgnn.DataError, match=r"format 99, newer than this etgnn .* upgrade etgnn"):
        etgnn.load_model(tmp_path / "future.pt")


def test_training_checkpoints_carry_the_format(tmp_path):
    from etgnn.train.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "x.ckpt", config={}, state_dict={}, optimizer={}, epoch=0)
    assert load_checkpoint(tmp_path / "x.ckpt")["format_version"] == etgnn.model.CHECKPOINT_FORMAT
