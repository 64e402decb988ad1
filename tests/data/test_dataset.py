"""Dataset pipeline: graph cache, splits, sum-rule reporting, packaged data paths."""

from __future__ import annotations

import re
import warnings

import ase.io
import numpy as np
import pytest
from ase import Atoms

import etgnn
from etgnn.data import dataset as D
from etgnn.errors import DataError


def _molecules(n, seed=0, bad_sum=()):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]] + rng.normal(scale=0.05, size=(3, 3)))
        becs = np.stack([-2 * np.eye(3), np.eye(3), np.eye(3)]) + 0.01 * rng.normal(size=(3, 3, 3))
        becs -= becs.mean(axis=0)  # obeys the sum rule
        if k in bad_sum:
            becs[0] += 3.0 * np.eye(3)  # |sum| = 3 * sqrt(3)
        atoms.new_array("becs", becs.reshape(3, 9))
        atoms.info["alpha"] = (np.eye(3) + 0.1 * rng.normal(size=(3, 3))).reshape(9)
        out.append(atoms)
    return out


def _config(path, tmp_path, **data):
    return etgnn.load_config({
        "model": {"cutoff": 4.0, "triplet_cutoff": 3.0},
        "targets": {"bec": {"key": "becs", "level": "atom", "rank": 2, "sum_rule": True},
                    "alpha": {"key": "alpha", "level": "structure", "rank": 2}},
        "data": {"train": str(path), "cache_dir": str(tmp_path / "cache"), "num_workers": 0} | data,
    })


def test_labels_are_full_cartesian_and_graphs_match_build_graph(tmp_path):
    path = tmp_path / "m.xyz"
    frames = _molecules(5)
    ase.io.write(path, frames)
    ds = D.load_structures_dataset(path, _config(path, tmp_path), progress=False)
    assert len(ds) == 5 and ds.n_atoms() == 15
    np.testing.assert_allclose(ds.labels[2]["bec"], frames[2].arrays["becs"].reshape(3, 3, 3), atol=1e-7)  # extxyz keeps 8 decimals
    assert ds.labels[2]["alpha"].shape == (3, 3)
    ref = etgnn.data.graph.build_graph(ase.io.read(path, 2), 4.0, 3.0)
    for key, value in ref.items():
        np.testing.assert_allclose(ds.graphs[2][key], value)


def test_second_load_comes_from_the_cache_and_settings_change_the_key(tmp_path, monkeypatch):
    path = tmp_path / "m.xyz"
    ase.io.write(path, _molecules(4))
    cfg = _config(path, tmp_path)
    first = D.load_structures_dataset(path, cfg, progress=False)
    import etgnn.data.readers as readers

    def refuse(*args, **kwargs):
        raise AssertionError("read_structures called although the cache is complete")

    monkeypatch.setattr(readers, "read_structures", refuse)
    second = D.load_structures_dataset(path, cfg, progress=False)
    np.testing.assert_array_equal(first.graphs[1]["_edge_index"], second.graphs[1]["_edge_index"])
    with pytest.raises(AssertionError, match="cache is complete"):  # other cutoff: other key
        D.load_structures_dataset(path, etgnn.load_config(cfg, ["model.triplet_cutoff=2.5"]), progress=False)
    assert len(list((tmp_path / "cache").glob("*.sqlite"))) == 1


def test_max_structures_truncates_each_file_and_says_so(tmp_path):
    path = tmp_path / "m.xyz"
    frames = _molecules(5)
    ase.io.write(path, frames)
    cfg = _config(path, tmp_path, max_structures=3)
    message = f"{path}: data.max_structures = 3: using only the first 3 of its 5 structures"
    with pytest.warns(UserWarning, match=re.escape(message)):
        ds = D.load_structures_dataset(path, cfg, progress=False)
    assert len(ds) == 3
    np.testing.assert_allclose(ds.labels[2]["alpha"], frames[2].info["alpha"].reshape(3, 3), atol=1e-7)
    with pytest.warns(UserWarning, match=re.escape(f"{path}: data.max_structures = 3: using only the first 3 structures (cached)")):
        assert len(D.load_structures_dataset(path, cfg, progress=False)) == 3
    with warnings.catch_warnings():  # a file with no more structures than that: nothing to say
        warnings.simplefilter("error")
        assert len(D.load_structures_dataset(path, _config(path, tmp_path, max_structures=9), progress=False)) == 5


def test_random_split_is_seeded_disjoint_and_follows_the_fractions(tmp_path):
    path = tmp_path / "m.xyz"
    ase.io.write(path, _molecules(20))
    cfg = _config(path, tmp_path)
    a, b = D.make_splits(cfg, progress=False), D.make_splits(cfg, progress=False)
    assert [len(a[k]) for k in ("train", "val", "test")] == [12, 4, 4]
    assert a["val"].ids == b["val"].ids
    ids = a["train"].ids + a["val"].ids + a["test"].ids
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 20
    other = D.make_splits(etgnn.load_config(cfg, ["data.split_seed=1"]), progress=False)
    assert other["val"].ids != a["val"].ids


def test_explicit_validation_file_and_empty_split_error(tmp_path):
    train, val = tmp_path / "t.xyz", tmp_path / "v.xyz"
    ase.io.write(train, _molecules(6))
    ase.io.write(val, _molecules(3, seed=1))
    parts = D.make_splits(_config(train, tmp_path, val=str(val)), progress=False)
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (6, 3, 0)
    tiny = tmp_path / "one.xyz"
    ase.io.write(tiny, _molecules(1))
    with pytest.raises(DataError, match="empty training or validation part"):
        D.make_splits(_config(tiny, tmp_path), progress=False)


def test_sum_rule_violations_are_reported_and_dropped_above_threshold(tmp_path):
    path = tmp_path / "m.xyz"
    ase.io.write(path, _molecules(6, bad_sum=(2, 4)))
    with pytest.warns(UserWarning, match=r"2 structure\(s\) violate the sum rule of 'bec'.*kept"):
        kept = D.load_structures_dataset(path, _config(path, tmp_path), progress=False)
    assert len(kept) == 6
    with pytest.warns(UserWarning, match="dropped"):
        dropped = D.load_structures_dataset(path, _config(path, tmp_path, sum_rule_threshold=1.0), progress=False)
    assert dropped.ids == [f"m.xyz:{k}" for k in (0, 1, 3, 5)]


def test_missing_file_and_packaged_data_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        D.load_structures_dataset(tmp_path / "nope.xyz", _config(tmp_path / "nope.xyz", tmp_path), progress=False)
    shipped = D.resolve_data_path("etgnn:examples_data/molecules.extxyz")
    assert shipped.is_file() and shipped.name == "molecules.extxyz"
