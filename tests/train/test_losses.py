"""Losses: zero exactly at a perfect prediction, rotation invariant, hand-checked values."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from etgnn.targets import losses, total_loss

INVARIANT = ["mse", "euclidean", "cosine"]  # MAE of components is not rotation invariant


def random_rotation(seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def rotate(t: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Apply ``rot`` to every index of (n, 3, ..., 3) tensors."""
    for axis in range(1, t.dim()):
        t = torch.movedim(torch.tensordot(t, rot, dims=([axis], [1])), -1, axis)
    return t


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("name", INVARIANT)
def test_rotation_invariant(name, rank):
    p, y = randn(5, *(3,) * rank, seed=1), randn(5, *(3,) * rank, seed=2)
    rot = random_rotation(rank)
    before = losses.LOSSES[name](p, y)
    after = losses.LOSSES[name](rotate(p, rot), rotate(y, rot))
    assert torch.allclose(before, after, rtol=1e-12, atol=0), f"{name} rank {rank}: {before} vs {after}"


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
@pytest.mark.parametrize("name", ["mse", "mae", "euclidean"])
def test_zero_iff_equal(name, rank):
    y = randn(4, *(3,) * rank, seed=3)
    assert losses.LOSSES[name](y.clone(), y) == 0.0
    p = y.clone()
    p.reshape(-1)[5 % p.numel()] += 1e-3  # one component of one row off
    assert losses.LOSSES[name](p, y) > 0.0


def test_euclidean_matches_hand_computation():
    p = np.array([[[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.eye(3)])
    y = np.array([np.eye(3), np.zeros((3, 3))])
    expected = np.mean([2.0, np.sqrt(3.0)])  # ||[[0,2,0],0,0]|| = 2, ||I|| = sqrt(3)
    got = losses.euclidean(torch.tensor(p), torch.tensor(y))
    assert abs(float(got) - expected) < 1e-9
    per_row = losses.euclidean(torch.tensor(p), torch.tensor(y), reduction="none")
    assert np.allclose(per_row.numpy(), [2.0, np.sqrt(3.0)], atol=1e-9)
    assert abs(float(losses.euclidean(torch.tensor(p), torch.tensor(y), reduction="sum")) - 2 * expected) < 1e-9


def test_finite_gradient_at_zero_error():
    y = randn(3, 3, 3, seed=4)
    for name in ("euclidean", "cosine"):
        p = y.clone().requires_grad_(True)
        losses.LOSSES[name](p, y).backward()
        assert torch.isfinite(p.grad).all(), name
    p = y.clone().requires_grad_(True)
    losses.euclidean(p, y).backward()
    assert p.grad.abs().max() == 0.0


def test_cosine_values():
    y = randn(6, 3, seed=5)
    assert float(losses.cosine(2.5 * y, y)) == pytest.approx(0.0, abs=1e-9)  # scale invariant
    assert float(losses.cosine(-y, y)) == pytest.approx(2.0, abs=1e-9)
    p = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    assert float(losses.cosine(p, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))) == pytest.approx(1.0)


def test_mse_mae_values():
    p, y = torch.tensor([[1.0, -2.0, 0.0]]), torch.zeros(1, 3)
    assert float(losses.mse(p, y)) == pytest.approx(5.0 / 3.0)
    assert float(losses.mae(p, y)) == pytest.approx(1.0)


def test_sum_rule_penalty():
    batch = torch.tensor([0, 0, 1, 1, 1])
    z = randn(5, 3, 3, seed=6)
    z[:2] -= z[:2].mean(0)  # structure 0 neutral
    z[2:] -= z[2:].mean(0)  # structure 1 neutral
    assert float(losses.sum_rule_penalty(z, batch, 2)) == pytest.approx(0.0, abs=1e-9)
    z[4] += torch.eye(3, dtype=torch.float64)  # structure 1 off by I: ||I|| = sqrt(3)
    per = losses.sum_rule_penalty(z, batch, 2, reduction="none")
    assert np.allclose(per.numpy(), [0.0, np.sqrt(3.0)], atol=1e-9)


def test_total_loss_normalises_and_weights():
    from etgnn.config import TargetConfig

    targets = {"a": TargetConfig(key="a", level="atom", rank=1, loss="euclidean", weight=2.0),
               "b": TargetConfig(key="b", level="structure", rank=2, loss="mse", weight=0.5)}
    out = {"a": randn(4, 3, seed=7), "b": randn(2, 3, 3, seed=8)}
    lab = {"a": randn(4, 3, seed=9), "b": randn(2, 3, 3, seed=10)}
    one = {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}
    total, parts = total_loss(out, lab, targets, one)
    assert float(total) == pytest.approx(2.0 * float(losses.euclidean(out["a"], lab["a"]))
                                         + 0.5 * float(losses.mse(out["b"], lab["b"])))
    # target "a" in different units (x 100) with scale 100: same normalised loss
    scaled_out = {"a": 100 * out["a"], "b": out["b"]}
    scaled_lab = {"a": 100 * lab["a"], "b": lab["b"]}
    total2, parts2 = total_loss(scaled_out, scaled_lab, targets, {"a": torch.tensor(100.0), "b": one["b"]})
    assert float(total2) == pytest.approx(float(total), rel=1e-12)
    assert set(parts2) == {"a", "b"}


def test_sum_rule_weight_adds_soft_penalty():
    import etgnn

    cfg = etgnn.load_config({"targets": {"b": {"key": "b", "level": "atom", "rank": 2, "sum_rule_weight": 0.5}}})
    out = {"b": torch.ones(3, 3, 3)}
    batch = {"b": torch.ones(3, 3, 3), "_batch": torch.tensor([0, 0, 1]), "_n_atoms": torch.tensor([2, 1])}
    total, parts = total_loss(out, batch, cfg.targets, {"b": torch.tensor(1.0)})
    # structure sums: 2*ones (norm 6) and ones (norm 3): mean 4.5, times the weight 0.5
    assert parts["b_sum_rule"].item() == pytest.approx(4.5)
    assert total.item() == pytest.approx(2.25)


def test_sum_rule_weight_needs_atom_level():
    import etgnn

    with pytest.raises(etgnn.ConfigError, match="sum_rule_weight"):
        etgnn.load_config({"targets": {"e": {"key": "e", "rank": 2, "sum_rule_weight": 1.0}}})
