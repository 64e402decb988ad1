"""Partial and missing labels: per-atom targets labelled on some atoms only (NaN rows elsewhere),
structures that lack a target altogether, and the MatTen/si_nmr JSON layout (per-atom tensors
listed for the atoms flagged in ``atom_selector`` only)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import write
from pymatgen.io.ase import AseAtomsAdaptor

from etgnn.config import config_to_dict, load_config
from etgnn.data.dataset import load_structures_dataset
from etgnn.data.labels import LabelSpec, extract_label
from etgnn.data.readers import read_structures
from etgnn.errors import DataError
from etgnn.targets import total_loss


def _crystals(n=4):
    out = []
    for k in range(n):
        a = bulk("SiO", "rocksalt", a=4.2 + 0.1 * k) * (2, 1, 1)
        a.rattle(0.05, seed=k)
        out.append(a)
    return out


def _matten_json(path, crystals, rng):
    data = {"structure": {}, "atom_selector": {}, "nmr_tensor": {}, "sigma_iso": {}}
    tensors = {}
    for k, a in enumerate(crystals):
        sel = [bool(z == 14) for z in a.numbers]
        sel[-1] = False  # not every Si labelled
        t = rng.normal(size=(int(np.sum(sel)), 3, 3)) + 400 * np.eye(3)
        data["structure"][str(k)] = AseAtomsAdaptor.get_structure(a).as_dict()
        data["atom_selector"][str(k)] = sel
        data["nmr_tensor"][str(k)] = t.tolist()
        data["sigma_iso"][str(k)] = np.trace(t, axis1=1, axis2=2).tolist()
        tensors[k] = (np.array(sel), t)
    path.write_text(json.dumps(data))
    return tensors


def test_matten_layout_expands_selected_atoms(tmp_path):
    tensors = _matten_json(tmp_path / "nmr.json", _crystals(), np.random.default_rng(0))
    frames = read_structures(tmp_path / "nmr.json")
    assert [f.info["id"] for f in frames] == ["0", "1", "2", "3"]
    for k, f in enumerate(frames):
        sel, t = tensors[k]
        label = extract_label(f, LabelSpec("nmr_tensor", "atom", 2))
        np.testing.assert_array_equal(label[sel], t)
        assert np.isnan(label[~sel]).all()


def test_matten_layout_decides_per_field_over_the_file(tmp_path):
    """A structure-level 3x3 field is not read as per-atom in the record whose 3 flagged atoms
    make its length match: a field is per flagged atom only if it is so in every record."""
    rng = np.random.default_rng(2)
    data = {"structure": {}, "atom_selector": {}, "nmr_tensor": {}, "eps": {}}
    expected = {}
    for k in range(1, 5):  # k Si of 2k atoms flagged: the field 'eps' has 3 rows, as many as k = 3
        a = bulk("SiO", "rocksalt", a=4.2) * (k, 1, 1)
        sel = [bool(z == 14) for z in a.numbers]
        t, eps = rng.normal(size=(k, 3, 3)), rng.normal(size=(3, 3))
        data["structure"][str(k)] = AseAtomsAdaptor.get_structure(a).as_dict()
        data["atom_selector"][str(k)] = sel
        data["nmr_tensor"][str(k)] = t.tolist()
        data["eps"][str(k)] = eps.tolist()
        expected[str(k)] = (np.array(sel), t, eps)
    (tmp_path / "f.json").write_text(json.dumps(data))
    for f in read_structures(tmp_path / "f.json"):
        sel, t, eps = expected[f.info["id"]]
        np.testing.assert_allclose(extract_label(f, LabelSpec("eps", "structure", 2)), eps)
        label = extract_label(f, LabelSpec("nmr_tensor", "atom", 2))
        np.testing.assert_allclose(label[sel], t)
        assert np.isnan(label[~sel]).all()


def test_nan_only_as_whole_rows():
    a = Atoms("SiO", positions=[[0, 0, 0], [1.6, 0, 0]])
    t = np.full((2, 3, 3), np.nan)
    t[0] = np.eye(3)
    a.arrays["z"] = t.reshape(2, 9)
    assert np.isnan(extract_label(a, LabelSpec("z", "atom", 2))[1]).all()
    t[1, 0, 0] = 1.0  # a half-labelled atom is an error
    a.arrays["z"] = t.reshape(2, 9)
    with pytest.raises(DataError, match="structure 0: field 'z' has 8 NaN/inf value"):
        extract_label(a, LabelSpec("z", "atom", 2))


def _config(tmp_path, train, targets):
    return load_config({"model": {"hidden_channels": 8, "triplet_channels": 4, "num_blocks": 1, "cutoff": 4.0,
                                  "triplet_cutoff": 3.0},
                        "targets": targets, "data": {"train": str(train), "cache_dir": None, "num_workers": 1},
                        "run_dir": str(tmp_path / "run")})


def test_mixed_file_and_missing_structure_labels(tmp_path):
    frames = _crystals()
    rng = np.random.default_rng(1)
    for k, a in enumerate(frames):
        a.info["eps"] = (np.eye(3) * (2 + k)).ravel()
        if k % 2 == 0:  # Born charges on half of the structures only
            a.arrays["becs"] = rng.normal(size=(len(a), 9))
    write(tmp_path / "mixed.xyz", frames)
    targets = {"bec": {"key": "becs", "level": "atom", "rank": 2}, "eps": {"key": "eps", "level": "structure", "rank": 2}}
    ds = load_structures_dataset(tmp_path / "mixed.xyz", _config(tmp_path, tmp_path / "mixed.xyz", targets))
    assert [bool(np.isnan(lab["bec"]).all()) for lab in ds.labels] == [False, True, False, True]
    # a structure with no label at all is an error naming it
    del frames[1].info["eps"]
    write(tmp_path / "bad.xyz", frames)
    with pytest.raises(DataError, match=r"bad.xyz structure 1: no label for any target"):
        load_structures_dataset(tmp_path / "bad.xyz", _config(tmp_path, tmp_path / "bad.xyz", targets))
    # a field that no structure has is the usual missing-field error
    typo = {"bec": {"key": "bces", "level": "atom", "rank": 2}, "eps": targets["eps"]}
    with pytest.raises(DataError, match="field 'bces' not found.*did you mean 'becs'"):
        load_structures_dataset(tmp_path / "mixed.xyz", _config(tmp_path, tmp_path / "mixed.xyz", typo))


def test_structures_without_a_targets_field_are_reported_once_per_file_and_target(tmp_path):
    """A field some structures lack (a typo in a few frames, or a partial data set) is said once per
    file and target, with the count and the first indices, also when the graphs come from the cache."""
    frames = _crystals(9)
    rng = np.random.default_rng(1)
    for k, a in enumerate(frames):
        a.info["eps"] = (np.eye(3) * (2 + k)).ravel()
        a.arrays["becs" if k not in (1, 2, 4, 5, 6, 8) else "bces"] = rng.normal(size=(len(a), 9))
    write(tmp_path / "part.xyz", frames)
    targets = {"bec": {"key": "becs", "level": "atom", "rank": 2}, "eps": {"key": "eps", "level": "structure", "rank": 2}}
    config = _config(tmp_path, tmp_path / "part.xyz", targets)
    expected = (f"{tmp_path / 'part.xyz'}: 6 of 9 structures have no label for target 'bec' (field 'becs'): "
                "structures 1, 2, 4, 5, 6 and 1 more; they do not count in its loss and metrics")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_structures_dataset(tmp_path / "part.xyz", config)
    messages = [str(w.message) for w in rec]
    assert messages == [expected + "; structure 1: field 'becs' not found; available: bces, eps; did you mean 'bces'?"]
    cached = load_config({**config_to_dict(config), "data": {**config_to_dict(config)["data"],
                                                             "cache_dir": str(tmp_path / "cache")}})
    for _ in range(2):  # built, then read from the cache
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            load_structures_dataset(tmp_path / "part.xyz", cached)
        assert [str(w.message) for w in rec][0].startswith(expected)
    assert list((tmp_path / "cache").glob("*.sqlite"))


def test_an_energy_learned_only_through_its_forces_is_not_reported(tmp_path):
    """Forces-only data for an energy + conservative-forces model: the energy is unlabelled
    everywhere by design (docs/conventions.md), so no warning; an energy given for some
    structures only is still reported."""
    frames = _crystals(4)
    rng = np.random.default_rng(2)
    for a in frames:
        a.arrays["F"] = rng.normal(size=(len(a), 3))
    targets = {"energy": {"key": "E", "level": "structure", "rank": 0, "reduce": "sum"},
               "forces": {"key": "F", "level": "atom", "rank": 1, "gradient_of": "energy"}}
    for name, energies in (("forces.xyz", ()), ("some_energies.xyz", (0, 2))):
        for k, a in enumerate(frames):
            a.info.pop("E", None)
            if k in energies:
                a.info["E"] = -1.0 * k
        write(tmp_path / name, frames)
        config = _config(tmp_path, tmp_path / name, targets)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            load_structures_dataset(tmp_path / name, config)
        messages = [str(w.message) for w in rec]
        if energies:
            assert len(messages) == 1 and "2 of 4 structures have no label for target 'energy'" in messages[0]
        else:
            assert messages == []


def test_loss_ignores_unlabelled_rows():
    cfg = load_config({"targets": {"z": {"key": "z", "level": "atom", "rank": 2, "loss": "mse"}}})
    pred = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    label = torch.randn(5, 3, 3, dtype=torch.float64)
    label[[1, 3]] = float("nan")
    batch = {"z": label, "_batch": torch.zeros(5, dtype=torch.long), "_n_atoms": torch.tensor([5])}
    loss, _ = total_loss({"z": pred}, batch, cfg.targets, {"z": torch.tensor(2.0)})
    keep = [0, 2, 4]
    expected = (((pred[keep] - label[keep]) / 2.0) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(pred.grad[[1, 3]] == 0) and torch.all(pred.grad[keep] != 0)
    # a batch without any labelled row contributes zero
    batch["z"] = torch.full((5, 3, 3), float("nan"), dtype=torch.float64)
    zero, _ = total_loss({"z": pred}, batch, cfg.targets, {"z": torch.tensor(2.0)})
    assert float(zero.detach()) == 0.0


def test_validation_loss_is_the_training_loss(tmp_path):
    """One loss for training and validation: on the same batch, in eval mode, with a soft
    sum-rule penalty and partial labels, evaluate_loader's loss equals total_loss's."""
    import etgnn
    from etgnn.data.batch import collate
    from etgnn.evaluate import evaluate_loader

    frames = _crystals(3)
    rng = np.random.default_rng(2)
    for k, a in enumerate(frames):
        z = rng.normal(size=(len(a), 3, 3))
        if k == 1:
            z[0] = np.nan  # one unlabelled atom
        a.arrays["becs"] = z.reshape(len(a), 9)
        a.info["eps"] = (np.eye(3) * (2 + k)).ravel()
    targets = {"bec": {"key": "becs", "level": "atom", "rank": 2, "sum_rule_weight": 0.5, "loss": "mse"},
               "eps": {"key": "eps", "level": "structure", "rank": 2, "weight": 2.0}}
    model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 4, "num_blocks": 1, "dtype": "float64"},
                               "targets": targets}).eval()
    labels = [{"bec": extract_label(a, LabelSpec("becs", "atom", 2)), "eps": extract_label(a, LabelSpec("eps", "structure", 2))}
              for a in frames]
    batch = collate([model.graph(a) for a in frames], labels, {"bec": "atom", "eps": "structure"}, dtype=torch.float64)
    with torch.no_grad():
        out = model(batch)
        train_loss, _ = total_loss(out, batch, model.config.targets, {n: h.scale for n, h in model.heads.items()})
    val_loss, metrics, _, _ = evaluate_loader(model, [batch])
    assert val_loss == pytest.approx(float(train_loss), rel=1e-12)
    assert metrics["bec"]["n"] == sum(len(a) for a in frames) - 1  # labelled atoms only
    assert np.isfinite(metrics["bec"]["mae"])


def test_full_metrics_and_baselines_score_labelled_rows_only():
    from etgnn.config import TargetConfig
    from etgnn.targets.metrics import full_metrics

    rng = np.random.default_rng(3)
    p, y = rng.normal(size=(6, 3, 3)), rng.normal(size=(6, 3, 3))
    numbers = np.array([14, 8, 14, 8, 14, 8])
    y_nan = y.copy()
    y_nan[[1, 3]] = np.nan
    targets = {"z": TargetConfig(key="z", level="atom", rank=2)}
    masked = full_metrics({"z": p}, {"z": y_nan}, targets, numbers=numbers)["z"]
    keep = [0, 2, 4, 5]
    direct = full_metrics({"z": p[keep]}, {"z": y[keep]}, targets, numbers=numbers[keep])["z"]
    for key in ("mae", "rmse", "r2", "n", "baseline_mae"):
        assert masked[key] == pytest.approx(direct[key]), key
    assert masked["n"] == 4


def test_no_sum_rule_check_for_targets_without_one(tmp_path, recwarn):
    """A per-atom rank-2 target that obeys no sum rule (NMR shielding) is not checked."""
    frames = _crystals(2)
    for a in frames:
        a.arrays["sigma"] = np.tile((400 * np.eye(3)).ravel(), (len(a), 1))  # sums to 400 n, legitimately
    write(tmp_path / "s.xyz", frames)
    targets = {"sigma": {"key": "sigma", "level": "atom", "rank": 2}}
    load_structures_dataset(tmp_path / "s.xyz", _config(tmp_path, tmp_path / "s.xyz", targets))
    assert not [w for w in recwarn if "sum rule" in str(w.message)]


def _train_weights(tmp_path, train_file, name):
    import etgnn
    from etgnn.train import train

    cfg = {"model": {"hidden_channels": 8, "triplet_channels": 4, "num_blocks": 1, "cutoff": 4.0, "triplet_cutoff": 3.0,
                     "dtype": "float64", "seed": 0},
           "targets": {"nmr": {"key": "nmr_tensor", "level": "atom", "rank": 2, "loss": "mse"}},
           "data": {"train": str(train_file), "split": [0.5, 0.5, 0.0], "split_seed": 0, "cache_dir": None,
                    "num_workers": 0},
           "training": {"max_epochs": 2, "batch_size": 2, "lr": 3e-3, "progress": False, "seed": 0},
           "run_dir": str(tmp_path / name)}
    result = train(cfg)
    model = etgnn.load_model(result.run_dir / "best.ckpt")
    return {k: v.clone() for k, v in model.state_dict().items()}


def _max_diff(a, b) -> float:
    if not a.is_floating_point():
        return 0.0 if torch.equal(a, b) else float("inf")
    return float((a - b).abs().max()) if a.numel() else 0.0


def test_trained_model_does_not_see_unlabelled_entries(tmp_path, single_thread):
    """Labels on some atoms only: training on the si_nmr layout (tensors listed for flagged atoms)
    and on extxyz with NaN rows for the others gives the same weights (to the round-off of the
    8-decimal extxyz positions), all finite (no NaN leaks through a 0 * NaN); changing one
    labelled value changes them far more (the check can fail)."""
    crystals = _crystals()
    tensors = _matten_json(tmp_path / "nmr.json", crystals, np.random.default_rng(0))
    frames = read_structures(tmp_path / "nmr.json")
    for f in frames:  # extxyz holds 2-D arrays: 9 columns per atom, NaN rows written out as they are
        f.arrays["nmr_tensor"] = f.arrays["nmr_tensor"].reshape(len(f), 9)
    write(tmp_path / "nmr.xyz", frames)
    assert np.isnan(read_structures(tmp_path / "nmr.xyz")[0].arrays["nmr_tensor"]).any()
    w_json = _train_weights(tmp_path, tmp_path / "nmr.json", "json")
    w_xyz = _train_weights(tmp_path, tmp_path / "nmr.xyz", "xyz")
    assert w_json.keys() == w_xyz.keys()
    for k in w_json:
        assert torch.isfinite(w_json[k].double()).all(), k
        assert _max_diff(w_json[k], w_xyz[k]) < 1e-6, k
    sel, t = tensors[0]
    frames[0].arrays["nmr_tensor"][np.flatnonzero(sel)[0], 0] += 5.0  # one labelled component
    write(tmp_path / "changed.xyz", frames)
    w_changed = _train_weights(tmp_path, tmp_path / "changed.xyz", "changed")
    assert max(_max_diff(w_json[k], w_changed[k]) for k in w_json) > 1e-3
