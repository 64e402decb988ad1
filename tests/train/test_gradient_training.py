"""Training conservative forces (``gradient_of``): through the second derivative, in one process
and with DDP (whose ranks must also agree on a time-based cosine rate)."""

from __future__ import annotations

import math

import pytest

import etgnn
from etgnn.config import load_config
from etgnn.train import train
from etgnn.evaluate import evaluate_loader


def test_force_loss_trains_the_energy(energy_forces):
    """Born-Mayer energies and forces: training through -dE/dR brings the force error far below
    the zero-force (mean) baseline."""
    result = train(energy_forces(max_epochs=25, batch_size=6, lr=5e-3))
    m = result.metrics["val"]["forces"]
    assert m["mae"] < 0.25 * m["baseline_mae"], m


#: One rank of a torchrun-style DDP launch (RANK / WORLD_SIZE / MASTER_* in the environment).  Rank
#: 1's clock runs ``SKEW`` times fast (a rank whose clock disagrees); every rank records the
#: elapsed seconds and the rate of each step it takes.
_RANK_SCRIPT = """
import json, os, sys, time

SKEW = 5.0
rank = int(os.environ["RANK"])
if rank == 1:
    real, start = time.monotonic, time.monotonic()
    time.monotonic = lambda: start + SKEW * (real() - start)

import torch

torch.set_num_threads(1)
from etgnn.train import train
from etgnn.train.schedule import LRSchedule

steps = []
before_step = LRSchedule.before_step


def recording(self, epoch, step, elapsed_s):
    lr = before_step(self, epoch, step, elapsed_s)
    steps.append([epoch, step, elapsed_s, lr, time.monotonic()])  # the last: this rank's own clock
    return lr


LRSchedule.before_step = recording
result = train(json.loads(open(sys.argv[1]).read()))
out = {"steps": steps, "epochs_run": result.epochs_run, "stopped": result.stopped,
       "best_val_loss": result.best_val_loss}
open(sys.argv[2] % rank, "w").write(json.dumps(out))
"""


def test_ddp_trains_conservative_forces_with_a_time_based_cosine(energy_forces, tmp_path):
    """Two DDP ranks (launched as torchrun would) train conservative forces under a cosine over
    the wall-clock budget while rank 1's clock runs 5x fast: both ranks must set the same rate
    at every step, from the run time of the fastest clock (else their weights drift apart)."""
    import json
    import os
    import subprocess
    import sys

    from etgnn.train.ddp import free_port

    cfg = energy_forces(max_epochs=2, batch_size=6, strategy="ddp", devices=2, device="cpu",
                        lr_schedule="cosine", max_time=30.0, min_lr=0.0)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "rank.py").write_text(_RANK_SCRIPT)
    env = os.environ | {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                        "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, str(tmp_path / "rank.py"), str(tmp_path / "cfg.json"),
                               str(tmp_path / "rank%d.json")], env=env | {"RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    for r, proc in enumerate(ranks):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"rank {r}:\n{out[-3000:]}"
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["epochs_run"] == 2 and rank0["stopped"] == "max_epochs"
    assert len(rank0["steps"]) == 2 * 3  # 36 training clusters, 2 ranks, batches of 6
    # the same (epoch, step, run seconds, rate) on both ranks, to the last bit
    assert [s[:4] for s in rank0["steps"]] == [s[:4] for s in rank1["steps"]]
    # ... and the run time is rank 1's fast clock: between its first and last step rank 0 counts
    # far more run seconds than its own clock does
    (_, _, run_a, _, own_a), (_, _, run_b, _, own_b) = rank0["steps"][0], rank0["steps"][-1]
    assert run_b - run_a > 2 * (own_b - own_a) > 0, rank0["steps"]
    first = rank0["steps"][0]  # epoch 0, step 0: the time budget alone sets the rate
    assert first[3] == pytest.approx(cfg["training"]["lr"] * 0.5 * (1 + math.cos(math.pi * first[2] / 1800.0)),
                                     rel=1e-12)
    assert first[3] < cfg["training"]["lr"]
    from etgnn.data.dataset import make_loader, make_splits

    # rank 0's weights score the whole validation part as the two ranks did on their halves
    model = etgnn.load_model(tmp_path / "run" / "best.ckpt")
    c = load_config(cfg)
    loss, *_ = evaluate_loader(model, make_loader(make_splits(c, progress=False)["val"], c, shuffle=False))
    assert loss == pytest.approx(rank0["best_val_loss"], rel=1e-5)


def test_forces_alone_train_an_energy(energy_forces, tmp_path):
    """Data with forces and no energies: the energy is learned through its gradient alone (up to
    a constant); it is not scored (no labels) and the forces are learned."""
    import ase.io

    frames = ase.io.read(energy_forces()["data"]["train"], ":")
    for atoms in frames:
        del atoms.info["E"]
    ase.io.write(tmp_path / "forces_only.extxyz", frames, format="extxyz")
    cfg = energy_forces(max_epochs=25, batch_size=6, lr=5e-3)
    cfg["data"]["train"] = str(tmp_path / "forces_only.extxyz")
    result = train(cfg)
    m = result.metrics["val"]
    assert m["energy"]["n"] == 0 and m["forces"]["mae"] < 0.25 * m["forces"]["baseline_mae"], m
    model = etgnn.load_model(tmp_path / "run" / "best.ckpt")
    assert float(model.heads["energy"].scale) == pytest.approx(float(model.heads["forces"].scale))
