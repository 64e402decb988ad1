"""Learning-rate schedules: plateau == ReduceLROnPlateau, cosine over epochs or wall clock, warm-up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from etgnn.config import TrainingConfig, load_config
from etgnn.errors import ConfigError
from etgnn.train import train
from etgnn.train.checkpoint import load_checkpoint
from etgnn.train.schedule import LRSchedule

from .test_trainer import read_log


def _opt(lr=1e-3):
    return torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=lr)


def test_plateau_decays_like_reduce_lr_on_plateau():
    rng = np.random.default_rng(0)
    losses = np.cumsum(rng.normal(0.0, 1.0, 60)) + 100.0  # a random walk: plateaus and improvements
    tr = TrainingConfig(lr=1e-3, lr_factor=0.5, lr_patience=2, min_lr=1e-5)
    ref_opt, opt = _opt(), _opt()
    ref = ReduceLROnPlateau(ref_opt, mode="min", factor=0.5, patience=2, min_lr=1e-5)
    ours = LRSchedule(opt, tr, steps_per_epoch=3)
    seen = []
    for epoch, loss in enumerate(losses):
        for step in range(3):
            assert ours.before_step(epoch, step, 0.0) == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12)
        seen.append(opt.param_groups[0]["lr"])
        ref.step(float(loss))
        ours.after_epoch(float(loss))
    assert len(set(seen)) >= 4, f"the walk should decay the rate several times: {sorted(set(seen))}"
    assert min(seen) == pytest.approx(1e-5)  # the floor is reached and kept


def test_plateau_state_of_reduce_lr_on_plateau_loads():
    """Checkpoints written before the schedule option hold a ReduceLROnPlateau state."""
    ref_opt = _opt()
    ref = ReduceLROnPlateau(ref_opt, mode="min", factor=0.5, patience=0, min_lr=0.0)
    for loss in (1.0, 2.0, 3.0):
        ref.step(loss)
    ours = LRSchedule(_opt(), TrainingConfig(lr=1e-3, lr_patience=0, min_lr=0.0), steps_per_epoch=1)
    ours.load_state_dict(ref.state_dict())
    assert ours.before_step(3, 0, 0.0) == pytest.approx(ref_opt.param_groups[0]["lr"]) == pytest.approx(2.5e-4)
    assert ours.best == 1.0 and ours.bad_epochs == ref.num_bad_epochs


def test_cosine_over_epochs():
    tr = TrainingConfig(lr=1e-3, min_lr=1e-5, lr_schedule="cosine", max_epochs=8)
    s = LRSchedule(_opt(), tr, steps_per_epoch=4)
    for epoch in range(8):
        for step in range(4):
            p = (epoch + step / 4) / 8
            assert s.rate(epoch, step, 0.0) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * p)))
    assert s.rate(4, 0, 0.0) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert not s.finished(6, 0.0) and s.finished(7, 0.0)
    s.after_epoch(1.0)
    for _ in range(20):  # validation plateaus do not touch a cosine schedule
        s.after_epoch(2.0)
    assert s.rate(4, 0, 0.0) == pytest.approx(0.5 * (1e-3 + 1e-5))


def test_cosine_over_wall_clock_ends_at_the_budget():
    tr = TrainingConfig(lr=2e-3, min_lr=0.0, lr_schedule="cosine", max_epochs=1000, max_time=10.0)
    s = LRSchedule(_opt(), tr, steps_per_epoch=5)
    assert s.rate(0, 0, 0.0) == pytest.approx(2e-3)
    assert s.rate(3, 2, 300.0) == pytest.approx(1e-3)  # half of 10 minutes
    assert s.rate(3, 2, 600.0) == pytest.approx(0.0, abs=1e-15)
    assert s.rate(3, 2, 900.0) == pytest.approx(0.0, abs=1e-15)  # past the budget: the floor
    assert not s.finished(3, 599.0) and s.finished(3, 600.0)


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_linear_warmup_per_step(schedule):
    tr = TrainingConfig(lr=1e-3, min_lr=0.0, lr_schedule=schedule, max_epochs=100, warmup_epochs=2)
    s = LRSchedule(_opt(), tr, steps_per_epoch=4)
    bare = LRSchedule(_opt(), TrainingConfig(lr=1e-3, min_lr=0.0, lr_schedule=schedule, max_epochs=100),
                      steps_per_epoch=4)
    ramp = [s.rate(e, k, 0.0) for e in range(2) for k in range(4)]
    assert ramp == pytest.approx([bare.rate(e, k, 0.0) * (4 * e + k + 1) / 8 for e in range(2) for k in range(4)])
    for e, k in ((2, 0), (3, 1), (50, 2)):  # after the warm-up: the bare schedule
        assert s.rate(e, k, 0.0) == pytest.approx(bare.rate(e, k, 0.0))


def test_schedule_options_are_validated():
    with pytest.raises(ConfigError, match=r"training.lr_schedule must be one of \['plateau', 'cosine'\], got 'step'"):
        load_config({"targets": {"f": {"key": "f", "level": "atom", "rank": 1}}, "training": {"lr_schedule": "step"}})
    with pytest.raises(ConfigError, match="training.warmup_epochs must be >= 0, got -1.0"):
        load_config({"targets": {"f": {"key": "f", "level": "atom", "rank": 1}}, "training": {"warmup_epochs": -1}})
    with pytest.raises(ConfigError, match=r"need 0 <= training.min_lr <= training.lr, got min_lr 0.01 and lr 0.001"):
        load_config({"targets": {"f": {"key": "f", "level": "atom", "rank": 1}}, "training": {"min_lr": 0.01}})


def test_cosine_training_follows_the_schedule_and_resumes_exactly(config, tmp_path):
    """The logged rate is the cosine's at each epoch's last step; 2 + resumed 2 epochs == 4 straight."""
    opts = dict(lr_schedule="cosine", min_lr=1e-5, warmup_epochs=1)
    straight = config(max_epochs=4, **opts)
    straight["run_dir"] = str(tmp_path / "straight")
    result = train(straight)
    assert result.stopped == "max_epochs" and result.epochs_run == 4
    steps = 3  # 24 training molecules / batch 8
    expected = [1e-5 + (3e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * (e + (steps - 1) / steps) / 4)) for e in range(4)]
    lrs = [float(r["lr"]) for r in read_log(tmp_path / "straight")]
    assert lrs == pytest.approx(expected, rel=1e-5)

    class Interrupt(Exception):
        pass

    def stop_after_epoch_1(epoch, val_loss):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):  # the same config (horizon 4 epochs), interrupted after 2
        train(config(max_epochs=4, **opts), callback=stop_after_epoch_1)
    train(config(max_epochs=4, **opts), resume=True)
    assert [float(r["lr"]) for r in read_log(tmp_path / "run")] == pytest.approx(lrs, rel=1e-6)
    a = load_checkpoint(tmp_path / "straight" / "last.ckpt")["state_dict"]
    b = load_checkpoint(tmp_path / "run" / "last.ckpt")["state_dict"]
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-6, atol=1e-7), f"{name} differs after resume"


def test_resuming_a_finished_cosine_run_trains_nothing_and_says_why(config, tmp_path, capsys):
    opts = dict(lr_schedule="cosine", min_lr=0.0)
    train(config(max_epochs=2, **opts))
    before = load_checkpoint(tmp_path / "run" / "last.ckpt")
    result = train(config(max_epochs=2, **opts), resume=True)
    assert result.epochs_run == 2 and result.stopped == "max_epochs"
    assert "the cosine schedule of this run is complete (2 epochs" in capsys.readouterr().out
    after = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert after["epoch"] == before["epoch"] == 1
    # a longer horizon continues the anneal from where it stands (epoch 2 of 4: half the rate)
    train(config(max_epochs=4, **opts), resume=True)
    lrs = [float(r["lr"]) for r in read_log(tmp_path / "run")]
    assert len(lrs) == 4 and lrs[2] == pytest.approx(3e-3 * 0.5 * (1 + math.cos(math.pi * (2 + 2 / 3) / 4)), rel=1e-5)
