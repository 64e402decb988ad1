"""Training conservative forces (``gradient_of``): through the second derivative, in one process
and with DDP (whose ranks must also agree on a time-based cosine rate)."""

from __future__ import annotations

import pytest

import etgnn
from etgnn.config import load_config
from etgnn.train import train
from etgnn.train.evaluate import evaluate_loader


def test_force_loss_trains_the_energy(energy_forces):
    """Born-Mayer energies and forces: training through -dE/dR brings the force error far below
    the zero-force (mean) baseline."""
    result = train(energy_forces(max_epochs=25, batch_size=6, lr=5e-3))
    m = result.metrics["val"]["forces"]
    assert m["mae"] < 0.25 * m["baseline_mae"], m


def test_ddp_trains_conservative_forces_with_a_time_based_cosine(energy_forces, tmp_path):
    cfg = energy_forces(max_epochs=2, batch_size=6, strategy="ddp", devices=2, device="cpu",
                        lr_schedule="cosine", max_time=30.0)
    result = train(cfg)
    assert result.epochs_run == 2 and result.stopped == "max_epochs"
    from etgnn.data.dataset import make_loader, make_splits

    model = etgnn.load_model(tmp_path / "run" / "best.ckpt")
    c = load_config(cfg)
    loss, *_ = evaluate_loader(model, make_loader(make_splits(c, progress=False)["val"], c, shuffle=False))
    assert loss == pytest.approx(result.best_val_loss, rel=1e-5)
