"""Issue 11 items 3 and 10 end to end: ``etgnn evaluate`` keeps and lists sum-rule violators,
and its report (table, JSON, plot) carries rank-2 parts and baselines fitted on the training data."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms

import etgnn
from etgnn.cli import main
from etgnn.config import load_config
from etgnn.data.dataset import make_splits
from etgnn.train import train
from etgnn.data.statistics import training_baselines
from etgnn.targets.metrics import EVALUATION, PARTS, TRAINING


@pytest.fixture
def trained(config, tmp_path):
    """A 2-epoch tiny run (per-atom vectors ``vec``, structure dyads ``dyad``); its config dict."""
    cfg = config(max_epochs=2)
    train(cfg)
    return cfg


@pytest.mark.parity_plots
def test_baselines_come_from_the_training_split(trained, data_file, tmp_path, capsys):
    cfg = load_config(trained)
    run = tmp_path / "run"
    splits = make_splits(cfg, progress=False)
    ckpt = torch.load(run / "best.ckpt", weights_only=False)
    expected = training_baselines(splits["train"], cfg.targets)
    assert ckpt["baselines"] == expected
    train_dyads = np.stack([lab["dyad"] for lab in splits["train"].labels])
    assert expected["dyad"]["mean"] == pytest.approx(train_dyads.mean(axis=0).ravel().tolist(), rel=1e-12)
    assert etgnn.load_model(run / "best.ckpt").baselines == expected

    # the end-of-run report in metrics.json has parts and training baselines
    val = json.loads((run / "metrics.json").read_text())["val"]
    assert val["dyad"]["baseline_source"] == TRAINING and set(val["dyad"]["parts"]) == set(PARTS)
    assert val["vec"]["baseline"] == "per-element mean tensor" and "parts" not in val["vec"]

    # etgnn evaluate on the whole file: baseline MAE is that of the training means
    out, png = tmp_path / "e.json", tmp_path / "p.png"
    assert main(["evaluate", str(run / "best.ckpt"), str(data_file), "-o", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "base_mae" in printed and "aniso" in printed and "no training baselines" not in printed
    m = json.loads(out.read_text())["metrics"]
    frames = ase.io.read(data_file, ":")
    ref = np.stack([a.info["dyad"].reshape(3, 3) for a in frames])
    train_mean = np.asarray(expected["dyad"]["mean"]).reshape(3, 3)
    assert m["dyad"]["baseline_mae"] == pytest.approx(np.abs(ref - train_mean).mean(), rel=1e-6)
    assert m["dyad"]["baseline_mae"] != pytest.approx(np.abs(ref - ref.mean(axis=0)).mean(), rel=1e-6)
    iso = np.trace(ref, axis1=1, axis2=2) / 3
    assert m["dyad"]["parts"]["iso"]["baseline_mae"] == pytest.approx(
        np.abs(iso - np.trace(train_mean) / 3).mean(), rel=1e-6)
    assert m["dyad"]["parts"]["anti"]["r2"] is None  # symmetric target and data
    vec = np.concatenate([a.arrays["vec"] for a in frames])
    z = np.concatenate([a.numbers for a in frames])
    per = expected["vec"]["per_element"]
    base = np.stack([per[int(k)] if int(k) in per else expected["vec"]["mean"] for k in z])
    assert m["vec"]["baseline_mae"] == pytest.approx(np.abs(vec - base).mean(), rel=1e-6)
    assert png.stat().st_size > 1000

    # a checkpoint from before etgnn stored baselines: the evaluation data's own means, and said so
    del ckpt["baselines"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    assert main(["evaluate", str(tmp_path / "old.ckpt"), str(data_file), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dyad*" in printed and "vec*" in printed
    assert "* dyad, vec: the checkpoint holds no training baselines" in printed and "own mean (optimistic)" in printed
    m_old = json.loads(out.read_text())["metrics"]
    assert m_old["dyad"]["baseline_source"] == EVALUATION
    assert m_old["dyad"]["baseline_mae"] == pytest.approx(np.abs(ref - ref.mean(axis=0)).mean(), rel=1e-6)
    assert m_old["dyad"]["mae"] == pytest.approx(m["dyad"]["mae"], rel=1e-12)


def _water(n, bad=()):
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        atoms = Atoms("OH2", positions=np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]) + rng.normal(scale=0.05, size=(3, 3)))
        becs = np.stack([-2 * np.eye(3), np.eye(3), np.eye(3)]) + 0.01 * rng.normal(size=(3, 3, 3))
        becs -= becs.mean(axis=0)
        if k in bad:
            becs[0] += (1.0 + k) * np.eye(3)  # |sum| = (1 + k) sqrt(3)
        atoms.new_array("becs", becs.reshape(3, 9))
        out.append(atoms)
    return out


@pytest.fixture
def bec_model(tmp_path):
    """An untrained per-atom rank-2 model saved with (and without) a training sum-rule threshold."""
    def make(threshold):
        model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1,
                                             "cutoff": 4.0, "triplet_cutoff": 3.0},
                                   "targets": {"bec": {"key": "becs", "level": "atom", "rank": 2, "sum_rule": True}},
                                   "data": {"sum_rule_threshold": threshold, "cache_dir": None}})
        path = tmp_path / f"m{threshold}.pt"
        model.save(path)
        return str(path)
    data = tmp_path / "w.extxyz"
    ase.io.write(data, _water(6, bad=(2, 4)), format="extxyz")
    return make, str(data)


def test_evaluate_keeps_and_lists_sum_rule_violators(bec_model, tmp_path, capsys):
    """Item 3: every structure is evaluated by default (the checkpoint trained with threshold 1.0)."""
    make, data = bec_model
    ckpt, out = make(1.0), tmp_path / "e.json"
    assert main(["evaluate", ckpt, data, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (f"sum rule of 'bec': 2 of 6 structures of {data} have |sum over atoms| > 1 (index in the file: "
            f"|sum|): 2 ({3 * np.sqrt(3):.3g}), 4 ({5 * np.sqrt(3):.3g}); evaluated (drop them with "
            "--drop-sum-rule-violators)") in printed
    report = json.loads(out.read_text())
    assert report["n_evaluated"] == 6 and report["metrics"]["bec"]["n"] == 18
    sr = report["sum_rule"]
    assert sr["dropped"] is False and sr["threshold"] == 1.0 and sr["n_structures"] == 6
    assert [v["index"] for v in sr["violators"]["bec"]] == [2, 4]
    assert [v["abs_sum"] for v in sr["violators"]["bec"]] == pytest.approx([3 * np.sqrt(3), 5 * np.sqrt(3)], rel=1e-6)

    # without a value: the checkpoint's training threshold (1.0) drops both
    assert main(["evaluate", ckpt, data, "-o", str(out), "--drop-sum-rule-violators"]) == 0
    assert "; dropped (--drop-sum-rule-violators)" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["n_evaluated"] == 4 and report["metrics"]["bec"]["n"] == 12 and report["sum_rule"]["dropped"]
    # an explicit threshold between the two violations drops only the larger one
    assert main(["evaluate", ckpt, data, "-o", str(out), "--drop-sum-rule-violators", "6"]) == 0
    report = json.loads(out.read_text())
    assert report["n_evaluated"] == 5 and [v["index"] for v in report["sum_rule"]["violators"]["bec"]] == [4]


def test_drop_option_errors(bec_model, capsys):
    make, data = bec_model
    no_threshold = make(None)
    assert main(["evaluate", no_threshold, data]) == 0  # reported with the reader's 0.1
    assert "2 of 6 structures" in capsys.readouterr().out
    assert main(["evaluate", no_threshold, data, "--drop-sum-rule-violators"]) == 1
    assert (f"{no_threshold} was trained without data.sum_rule_threshold; give --drop-sum-rule-violators a "
            "THRESHOLD") in capsys.readouterr().err
    assert main(["evaluate", no_threshold, data, "--drop-sum-rule-violators", "lots"]) == 1
    assert "--drop-sum-rule-violators takes a number" in capsys.readouterr().err
    assert main(["evaluate", no_threshold, data, "--drop-sum-rule-violators=-1"]) == 1
    assert "--drop-sum-rule-violators must be >= 0, got '-1'" in capsys.readouterr().err
