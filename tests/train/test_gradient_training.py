"""Training conservative forces (``gradient_of``): through the second derivative, in one process
and with DDP (whose ranks must also agree on a time-based cosine rate)."""

from __future__ import annotations

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
