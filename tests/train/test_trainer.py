"""The training loop: learning, checkpoints, exact resume, time budget, LR schedule, EMA."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import etgnn
from etgnn.config import load_config
from etgnn.errors import ConfigError, DataError
from etgnn.train import evaluate, train
from etgnn.train import trainer as trainer_mod
from etgnn.train.checkpoint import load_checkpoint


def read_log(run_dir) -> list[dict]:
    with open(run_dir / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parity_plots
def test_training_learns_and_writes_run_dir(config, tmp_path):
    result = train(config(max_epochs=8))
    run = tmp_path / "run"
    for name in ("config.yaml", "best.ckpt", "last.ckpt", "log.csv", "metrics.json", "parity_val.png",
                 "parity_test.png"):
        assert (run / name).is_file(), f"{name} missing from the run directory"
    log = read_log(run)
    assert [int(r["epoch"]) for r in log] == list(range(8))
    first, best = float(log[0]["val_loss"]), result.best_val_loss
    assert best < 0.5 * first, f"validation loss did not fall: {first} -> {best}"
    assert result.epochs_run == 8 and result.stopped == "max_epochs"
    assert result.best_val_loss == pytest.approx(min(float(r["val_loss"]) for r in log), rel=1e-6)
    assert float(log[result.best_epoch]["val_loss"]) == pytest.approx(result.best_val_loss, rel=1e-6)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["val"]) == {"vec", "dyad"} and set(metrics["test"]) == {"vec", "dyad"}
    assert metrics["val"]["vec"]["r2"] > 0.5
    assert load_config(run / "config.yaml") == load_config(config(max_epochs=8))


def test_checkpoint_round_trip(config, tmp_path):
    result = train(config(max_epochs=2))
    run = tmp_path / "run"
    ckpt = load_checkpoint(run / "best.ckpt")
    for key in ("config", "state_dict", "optimizer", "scheduler", "ema", "epoch", "best_val_loss", "best_epoch",
                "bad_epochs", "rng", "etgnn_version", "torch_version", "baselines"):
        assert key in ckpt, f"checkpoint lacks {key!r}"
    assert "normalization" not in ckpt  # the statistics are kept once, in the state_dict
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python", "loader"}
    model = etgnn.load_model(run / "best.ckpt")
    from etgnn.data.dataset import make_splits
    from etgnn.data.statistics import compute_statistics

    fitted = compute_statistics(make_splits(load_config(config()), progress=False)["train"], model.targets)
    assert model.heads["vec"].scale.item() == pytest.approx(fitted.targets["vec"].scale)
    assert model.statistics().edges_per_atom == pytest.approx(fitted.edges_per_atom)

    val = make_splits(load_config(config()), progress=False)["val"]
    metrics, pred, ref = evaluate(model, val)
    for name in ("vec", "dyad"):
        for m in ("mae", "rmse", "euclidean", "r2"):
            assert metrics[name][m] == pytest.approx(result.metrics["val"][name][m], rel=1e-6)
    assert pred["vec"].shape == ref["vec"].shape == (val.n_atoms(), 3)
    assert pred["dyad"].shape == (len(val), 3, 3)
    # predict() on the validation structures, read afresh from the file, agrees with evaluate()
    # structure by structure (same batches: the float32 sums add in the same order)
    import ase.io

    frames = ase.io.read(config()["data"]["train"], ":")
    picked = [frames[int(i.rsplit(":", 1)[1])] for i in val.ids]
    again = model.predict(picked, batch_size=model.config.training.batch_size)
    np.testing.assert_allclose(np.concatenate([p["vec"] for p in again]), pred["vec"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.stack([p["dyad"] for p in again]), pred["dyad"], rtol=1e-6, atol=1e-7)
    # ... and the references are the file's labels: the comparison is of the right structures
    np.testing.assert_allclose(np.concatenate([a.arrays["vec"] for a in picked]), ref["vec"], rtol=1e-6)
    assert np.abs(pred["dyad"][1:] - pred["dyad"][:-1]).max() > 1e-3  # structures differ


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_replays_exactly(config, tmp_path, ema_decay):
    """4 epochs straight == 2 epochs, stop, resume to 4 (weights, losses, LR, EMA)."""
    straight = config(max_epochs=4, ema_decay=ema_decay)
    straight["run_dir"] = str(tmp_path / "straight")
    ref = train(straight)
    split = config(max_epochs=2, ema_decay=ema_decay)
    train(split)
    resumed = train(config(max_epochs=4, ema_decay=ema_decay), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.ckpt")
    b = load_checkpoint(tmp_path / "run" / "last.ckpt")
    for key in ("state_dict", "train_state_dict") if ema_decay else ("state_dict",):
        for name, value in a[key].items():
            assert torch.allclose(value, b[key][name], rtol=1e-6, atol=1e-7), f"{key}[{name}] differs after resume"
    log_a, log_b = read_log(tmp_path / "straight"), read_log(tmp_path / "run")
    assert len(log_b) == 4
    for ra, rb in zip(log_a, log_b):
        for col in ("train_loss", "val_loss", "lr"):
            assert float(ra[col]) == pytest.approx(float(rb[col]), rel=1e-6), f"epoch {ra['epoch']} {col}"
    assert resumed.best_val_loss == pytest.approx(ref.best_val_loss, rel=1e-6)
    assert resumed.best_epoch == ref.best_epoch and resumed.epochs_run == 4


def test_sigkill_mid_epoch_then_resume(config, tmp_path):
    """A process killed inside epoch 2 resumes from epoch 2 and ends like an uninterrupted run."""
    straight = config(max_epochs=3)
    straight["run_dir"] = str(tmp_path / "straight")
    train(straight)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(config(max_epochs=3)))
    script = textwrap.dedent(f"""
        import json, os, signal
        import torch
        torch.set_num_threads(1)
        from etgnn.train import trainer
        calls = {{"n": 0}}
        original = trainer.total_loss
        def killing_loss(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2 * 3 + 2:  # second batch of epoch 2 (3 batches per epoch)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        trainer.total_loss = killing_loss
        trainer.train(json.load(open({str(cfg_path)!r})))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert load_checkpoint(tmp_path / "run" / "last.ckpt")["epoch"] == 1
    train(config(max_epochs=3), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.ckpt")["state_dict"]
    b = load_checkpoint(tmp_path / "run" / "last.ckpt")["state_dict"]
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-6, atol=1e-7), f"{name} differs after SIGKILL + resume"
    assert [r["epoch"] for r in read_log(tmp_path / "run")] == ["0", "1", "2"]


def test_max_time_stops_inside_the_first_epoch(config, monkeypatch, tmp_path, capsys):
    """Issue 11 item 4: a fragment of an epoch is not an epoch (not logged, never best.ckpt)."""
    steps = []
    original = trainer_mod.total_loss
    monkeypatch.setattr(trainer_mod, "total_loss", lambda *a, **k: steps.append(1) or original(*a, **k))
    with pytest.warns(UserWarning, match=r"no epoch completed within training.max_time=1e-06 minutes"):
        result = train(config(max_epochs=50, max_time=1e-6))
    assert len(steps) == 1, "the epoch should stop after its first batch once the budget is spent"
    assert result.stopped == "max_time" and result.mid_epoch and result.epochs_run == 0 and result.best_epoch == -1
    assert "stopped mid-epoch 0: training.max_time reached; the partial epoch is discarded" in capsys.readouterr().out
    run = tmp_path / "run"
    assert read_log(run) == [] and not (run / "best.ckpt").exists() and not (run / "last.ckpt").exists()
    assert json.loads((run / "metrics.json").read_text())["stopped_mid_epoch"] is True


def test_max_time_mid_epoch_after_full_epochs_keeps_the_full_ones(config, tmp_path, capsys):
    train(config(max_epochs=2))
    log_before = read_log(tmp_path / "run")
    best_before = load_checkpoint(tmp_path / "run" / "best.ckpt")["epoch"]
    result = train(config(max_epochs=6, max_time=1e-6), resume=True)  # budget spent inside epoch 2
    assert result.mid_epoch and result.stopped == "max_time" and result.epochs_run == 2
    assert result.best_epoch == best_before and "val" in result.metrics  # the best full epoch, evaluated
    assert read_log(tmp_path / "run") == log_before
    assert load_checkpoint(tmp_path / "run" / "last.ckpt")["epoch"] == 1
    assert "stopped mid-epoch 2" in capsys.readouterr().out


def test_resume_removes_temporary_files_of_a_killed_session(config, tmp_path, capsys):
    """Issue 11 item 5: a SIGKILL during checkpointing leaves .last.ckpt.tmpNNNN behind."""
    train(config(max_epochs=1))
    run = tmp_path / "run"
    junk = [run / ".last.ckpt.tmp4242", run / ".best.ckpt.tmp17", run / ".metrics.json.tmp99"]
    for path in junk:
        path.write_bytes(b"half a checkpoint")
    keep = run / ".last.ckpt.tmp-notes"  # not a name etgnn writes
    keep.write_text("mine")
    train(config(max_epochs=2), resume=True)
    assert not any(p.exists() for p in junk) and keep.exists()
    assert "removed .last.ckpt.tmp4242, left by an interrupted session" in capsys.readouterr().out


def test_lr_halves_on_plateau_then_early_stopping(config, tmp_path):
    result = train(config(max_epochs=30, lr=1e-6, lr_patience=0, min_lr=0.0, early_stopping_patience=3))
    lrs = [float(r["lr"]) for r in read_log(tmp_path / "run")]
    assert lrs == pytest.approx([1e-6, 1e-6, 5e-7, 2.5e-7]), lrs
    assert result.stopped == "early_stopping" and result.epochs_run == 4


def test_ema_weights_are_evaluated_and_saved(config, tmp_path):
    result = train(config(max_epochs=3, ema_decay=0.9))
    ckpt = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert ckpt["ema"] is not None and ckpt["ema"]["num_updates"] > 0
    diff = max((ckpt["state_dict"][n] - ckpt["train_state_dict"][n]).abs().max().item() for n in ckpt["ema"]["shadow"])
    assert diff > 1e-6, "EMA weights equal the raw weights"
    for n, v in ckpt["ema"]["shadow"].items():
        assert torch.equal(ckpt["state_dict"][n], v)
    # the saved model (EMA weights) reproduces the validation loss logged for the best epoch
    from etgnn.data.dataset import make_loader, make_splits
    from etgnn.evaluate import evaluate_loader

    model = etgnn.load_model(tmp_path / "run" / "best.ckpt")
    cfg = load_config(config())
    val = make_splits(cfg, progress=False)["val"]
    loss, *_ = evaluate_loader(model, make_loader(val, cfg, shuffle=False))
    assert loss == pytest.approx(result.best_val_loss, rel=1e-5)


def test_run_dir_and_resume_errors(config, tmp_path):
    train(config(max_epochs=1))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config(max_epochs=1))
    changed = config(max_epochs=2)
    changed["model"]["hidden_channels"] = 8
    with pytest.raises(ConfigError, match=r"cannot resume .*model\.hidden_channels: 16 -> 8"):
        train(changed, resume=True)
    with pytest.raises(DataError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_callback_sees_each_validation_and_may_stop(config):
    seen = []

    class Pruned(Exception):
        pass

    def callback(epoch, val_loss):
        seen.append((epoch, val_loss))
        if epoch == 1:
            raise Pruned

    with pytest.raises(Pruned):
        train(config(max_epochs=5), callback=callback)
    assert [e for e, _ in seen] == [0, 1] and all(np.isfinite(v) for _, v in seen)
