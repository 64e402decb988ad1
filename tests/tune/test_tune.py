"""``etgnn tune`` / ``etgnn sweep`` on tiny budgets: outputs, resuming, pruning, failures, errors.

Data: 30 random H/C/O molecules labelled with an exactly equivariant per-structure symmetric
dyad ``D = I + mean_i sum_j e_ij (x) e_ij exp(-|r_ij|)``; models have 8-16 channels and 1-2
blocks, and trials run 1-2 epochs.
"""

from __future__ import annotations

import csv

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms

import etgnn.train
from etgnn.cli import main
from etgnn.config import load_config
from etgnn.errors import ConfigError, DataError, EtgnnError
from etgnn.tune import Range, load_space_file, sweep, tune
from etgnn.tune.space import override, parse_choice, parse_range, parse_value

optuna = pytest.importorskip("optuna")  # the optional extra etgnn[tune]

TINY_SPACE = {
    "model.hidden_channels": (8, 16),
    "model.num_blocks": (1, 2),
    "model.activation": ("swish", "elu", "silu"),
    "model.cutoff_function": ("polynomial", "cosine"),
    "model.radial_basis": ("gaussian", "bessel"),
    "training.lr": Range(1e-4, 5e-3, log=True),
    "training.batch_size": (8, 16),
}


def _molecules(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        k = int(rng.integers(3, 6))
        pos = rng.uniform(0.0, 2.6, size=(k, 3))
        d = pos[None] - pos[:, None]
        r = np.linalg.norm(d, axis=-1)
        if (r + 10 * np.eye(k)).min() < 0.9:
            continue
        e = d / np.where(r > 0, r, 1)[..., None]
        w = np.exp(-r) * (1 - np.eye(k))
        atoms = Atoms(numbers=rng.choice([1, 6, 8], size=k), positions=pos)
        atoms.info["dyad"] = (np.eye(3) + np.einsum("ij,ija,ijb->ab", w, e, e) / k).reshape(-1)
        out.append(atoms)
    return out


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Tiny models gain nothing from intra-op threads (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "mols.extxyz"
    ase.io.write(path, _molecules(30), format="extxyz")
    return path


@pytest.fixture
def base(tmp_path, data_file) -> dict:
    """Tiny base config (2 epochs) writing to ``tmp_path/run``."""
    return {
        "model": {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1, "int_emb_size": 8,
                  "basis_emb_size": 4, "num_radial": 4, "num_spherical": 3, "cutoff": 5.0, "triplet_cutoff": 3.0},
        "targets": {"dyad": {"key": "dyad", "level": "structure", "rank": 2, "symmetry": "ij=ji"}},
        "data": {"train": str(data_file), "split": [0.6, 0.2, 0.2], "cache_dir": None, "num_workers": 0},
        "training": {"max_epochs": 2, "batch_size": 8, "lr": 3e-3, "progress": False},
        "run_dir": str(tmp_path / "run"),
    }


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape[0] > 200


def test_search_outputs_and_resume(base, tmp_path, capsys):
    study_dir = tmp_path / "study"
    result = tune(base, 3, study_dir=study_dir, space=TINY_SPACE, trial_epochs=1, pruner="none")
    assert result.trials_run == 3 and (study_dir / "study.db").is_file()
    assert "3 trials: 3 complete" in capsys.readouterr().out
    rows = _csv(study_dir / "trials.csv")
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    assert set(TINY_SPACE) <= set(rows[0]) and all(r["epochs_run"] == "1" for r in rows)
    best = min(rows, key=lambda r: float(r["value"]))
    cfg = load_config(study_dir / "best_config.yaml")  # loadable as a training config
    assert cfg.model.hidden_channels == int(best["model.hidden_channels"])
    assert cfg.model.activation == best["model.activation"]
    assert cfg.training.lr == pytest.approx(float(best["training.lr"]))
    assert cfg.training.max_epochs == 2  # the base budget, not the trial's
    assert cfg.run_dir == str(study_dir / "best")
    assert (study_dir / f"trial_{best['number']}" / "best.ckpt").is_file()
    _assert_png(study_dir / "parallel_coordinates.png")

    again = tune(base, 4, study_dir=study_dir, space=TINY_SPACE, trial_epochs=1, pruner="none", verbose=False)
    assert again.trials_run == 1 and len(again.study.trials) == 4
    assert len(_csv(study_dir / "trials.csv")) == 4
    assert tune(base, 4, study_dir=study_dir, space=TINY_SPACE, verbose=False).trials_run == 0


def test_running_trials_of_other_workers_count(base, tmp_path):
    study_dir = tmp_path / "shared"
    study_dir.mkdir()
    other = optuna.create_study(storage=f"sqlite:///{study_dir / 'study.db'}", study_name="shared")
    other.ask()  # another worker's trial, still running
    result = tune(base, 2, study_dir=study_dir, space=TINY_SPACE, trial_epochs=1, pruner="none", verbose=False)
    assert result.trials_run == 1
    assert [t.state.name for t in result.study.trials] == ["RUNNING", "COMPLETE"]
    assert _csv(study_dir / "trials.csv")[0]["state"] == "RUNNING"


def test_pruned_trial(base, tmp_path):
    study_dir = tmp_path / "study"
    always = optuna.pruners.ThresholdPruner(upper=0.0)  # every loss is above 0: prune after epoch 0
    result = tune(base, 1, study_dir=study_dir, space=TINY_SPACE, trial_epochs=2, pruner=always, verbose=False)
    (trial,) = result.study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED and list(trial.intermediate_values) == [0]
    (row,) = _csv(study_dir / "trials.csv")
    assert row["state"] == "PRUNED" and row["epochs_run"] == "1" and float(row["last_reported"]) > 0
    assert not (study_dir / "trial_0" / "metrics.json").exists()
    assert result.best_config is None and not (study_dir / "best_config.yaml").exists()
    _assert_png(study_dir / "parallel_coordinates.png")


def test_failed_trial_is_recorded_and_search_goes_on(base, tmp_path, monkeypatch):
    real, calls = etgnn.train.train, []

    def flaky(config, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise EtgnnError("training diverged at epoch 0, batch 1: loss is nan")
        return real(config, **kwargs)

    monkeypatch.setattr(etgnn.train, "train", flaky)
    study_dir = tmp_path / "study"
    result = tune(base, 2, study_dir=study_dir, space=TINY_SPACE, trial_epochs=1, pruner="none", verbose=False)
    assert [t.state.name for t in result.study.trials] == ["FAIL", "COMPLETE"]
    rows = _csv(study_dir / "trials.csv")
    assert "training diverged" in rows[0]["error"] and rows[0]["value"] == ""
    _assert_png(study_dir / "parallel_coordinates.png")

    def broken(config, **kwargs):
        raise DataError("mols.extxyz frame 3: 'dyad' has 8 values, expected 9")

    monkeypatch.setattr(etgnn.train, "train", broken)  # a data problem stops the search
    with pytest.raises(DataError, match="frame 3"):
        tune(base, 3, study_dir=study_dir, space=TINY_SPACE, pruner="none", verbose=False)
    assert len(_csv(study_dir / "trials.csv")) == 3  # reported even so


def test_space_errors(base, tmp_path):
    kw = {"study_dir": tmp_path / "s", "verbose": False}
    with pytest.raises(ConfigError, match=r"search space 'model.hiden_channels': unknown key "
                                          r"model.hiden_channels; did you mean 'hidden_channels'\?"):
        tune(base, 1, space={"model.hiden_channels": (8, 16)}, **kw)
    with pytest.raises(ConfigError, match=r"search space 'model.activation': model.activation must be one of"):
        tune(base, 1, space={"model.activation": ("elu", "gelu")}, **kw)
    with pytest.raises(ConfigError, match=r"search space 'trainig.lr': unknown key config.trainig; did you mean"):
        tune(base, 1, space={"trainig.lr": Range(1e-4, 1e-3, log=True)}, **kw)
    with pytest.raises(ConfigError, match="fixed search settings.*unknown key model.num_block"):
        tune(base, 1, space=TINY_SPACE, fixed={"model.num_block": 2}, **kw)
    with pytest.raises(ConfigError, match="run_dir is set by the search itself"):
        tune(base, 1, space={"run_dir": ("a", "b")}, **kw)
    with pytest.raises(ConfigError, match="search space is empty"):
        tune(base, 1, space={"model.num_blocks": (2, 4)}, overrides=["model.num_blocks=2"], **kw)
    with pytest.raises(ConfigError, match="need low < high"):
        parse_range("training.lr=1e-3:1e-4:log")
    with pytest.raises(ConfigError, match="must look like PATH=LOW:HIGH"):
        parse_range("training.lr=1e-4")
    assert not (tmp_path / "s").exists()  # nothing created before the space is valid

    assert parse_choice("model.num_blocks=2,4") == ("model.num_blocks", (2, 4))
    assert parse_range("training.lr=1e-4:1e-3:log") == ("training.lr", Range(1e-4, 1e-3, True))
    assert parse_value("1e-4") == 1e-4 and override("training.lr", 1e-5) == "training.lr=1.0e-05"
    space_file = tmp_path / "space.yaml"
    space_file.write_text("defaults: false\nmodel.num_blocks: [1, 2]\ntraining.lr: {low: 1e-4, high: 1e-3, log: true}\n"
                          "model.hidden_channels: 16\n")
    space, fixed = load_space_file(space_file)
    assert space == {"model.num_blocks": (1, 2), "training.lr": Range(1e-4, 1e-3, True)}
    assert fixed == {"model.hidden_channels": 16}
    space_file.write_text("model.num_blocks: {low: 1, hihg: 4}\n")
    with pytest.raises(ConfigError, match="space.yaml: search space 'model.num_blocks': a range is a mapping"):
        load_space_file(space_file)


def test_tune_cli(base, tmp_path, capsys):
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(base))
    space_file = tmp_path / "space.yaml"
    space_file.write_text("defaults: false\nmodel.activation: [elu, silu]\ntraining.lr: {low: 1e-3, high: 5e-3}\n")
    study_dir = tmp_path / "cli_study"
    argv = ["tune", str(cfg_path), "training.weight_decay=0.0", "--trials", "2", "--trial-epochs", "1",
            "--space-file", str(space_file), "--choice", "model.hidden_channels=8,16", "--range",
            "model.num_blocks=1:2", "--fix", "training.batch_size=16", "--study-dir", str(study_dir),
            "--pruner", "median", "--seed", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 trials: 2 complete" in out and "hidden_channels" in out and "best_config.yaml" in out
    cfg = load_config(study_dir / "best_config.yaml")
    assert cfg.training.batch_size == 16 and cfg.training.weight_decay == 0.0
    assert cfg.model.activation in ("elu", "silu") and cfg.model.num_blocks in (1, 2)
    rows = _csv(study_dir / "trials.csv")
    assert len(rows) == 2 and "training.batch_size" not in rows[0] and "model.num_blocks" in rows[0]

    assert main(["tune", str(cfg_path), "--trials", "1", "--choice", "model.hidden_chanels=8,16",
                 "--study-dir", str(tmp_path / "bad")]) == 1
    assert "did you mean 'hidden_channels'?" in capsys.readouterr().err
    assert main(["tune", str(cfg_path), "--trials", "3", "--study-dir", str(study_dir), "--space-file",
                 str(space_file), "--choice", "model.hidden_channels=8,32"]) == 1
    assert "keep the space of a study" in capsys.readouterr().err


def test_sweep_and_resume(base, tmp_path, capsys):
    out = tmp_path / "sweep"
    result = sweep(base, "training.batch_size", [8, 16], epochs=1, output_dir=out, verbose=False)
    rows = _csv(out / "sweep.csv")
    assert [r["value"] for r in rows] == ["8", "16"] and {r["status"] for r in rows} == {"trained"}
    assert all(float(r["best_val_loss"]) > 0 and r["epochs_run"] == "1" for r in rows)
    assert result.plot == out / "sweep.png"
    _assert_png(out / "sweep.png")

    (out / "training.batch_size=16" / "metrics.json").unlink()  # as if killed before the end
    again = sweep(base, "training.batch_size", [8, 16, 32], epochs=1, output_dir=out, verbose=False)
    assert [r["status"] for r in again.rows] == ["done before", "resumed", "trained"]
    assert len(_csv(out / "sweep.csv")) == 3
    with pytest.raises(ConfigError, match="holds a sweep made with other settings.*max_epochs: 1 -> 2"):
        sweep(base, "training.batch_size", [8], epochs=2, output_dir=out, verbose=False)
    with pytest.raises(ConfigError, match=r"sweep value training.batch_sise=8: unknown key training.batch_sise"):
        sweep(base, "training.batch_sise", [8], output_dir=tmp_path / "x", verbose=False)

    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(base))
    assert main(["sweep", str(cfg_path), "--param", "training.lr", "--values", "1e-3,3e-3", "--epochs", "1",
                 "--budget-minutes", "1", "--output-dir", str(tmp_path / "lr")]) == 0
    assert "sweep.png" in capsys.readouterr().out
    rows = _csv(tmp_path / "lr" / "sweep.csv")
    assert [float(r["value"]) for r in rows] == [1e-3, 3e-3]
    _assert_png(tmp_path / "lr" / "sweep.png")
