"""Metrics: hand-checked values, batch accumulation equals the whole-array result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from etgnn.train.metrics import MetricAccumulator, compute_metrics, format_table


def test_metric_values_by_hand():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    pred = np.array([[1.0, 0.0, 3.0], [0.0, 2.0, -4.0]])
    m = compute_metrics({"v": pred}, {"v": ref})["v"]
    err = (pred - ref).ravel()
    assert m["mae"] == pytest.approx(np.abs(err).mean())
    assert m["rmse"] == pytest.approx(np.sqrt((err**2).mean()))
    assert m["euclidean"] == pytest.approx((3.0 + 4.0) / 2)
    y = ref.ravel()
    assert m["r2"] == pytest.approx(1 - (err**2).sum() / ((y - y.mean()) ** 2).sum())
    assert m["n"] == 2


def test_perfect_prediction():
    ref = np.random.default_rng(0).normal(size=(7, 3, 3))
    m = compute_metrics({"t": ref.copy()}, {"t": ref})["t"]
    assert m["mae"] == 0 and m["rmse"] == 0 and m["euclidean"] == 0 and m["r2"] == 1.0


def test_accumulation_over_batches_matches_whole():
    rng = np.random.default_rng(1)
    pred, ref = rng.normal(size=(10, 3, 3)), rng.normal(size=(10, 3, 3))
    acc = MetricAccumulator(["t"])
    for lo, hi in [(0, 3), (3, 4), (4, 10)]:
        acc.update("t", torch.tensor(pred[lo:hi]), torch.tensor(ref[lo:hi]))
    # summing the states of two "ranks" is the same as one accumulator
    half = MetricAccumulator(["t"])
    half.update("t", torch.tensor(pred[:5]), torch.tensor(ref[:5]))
    other = MetricAccumulator(["t"])
    other.update("t", torch.tensor(pred[5:]), torch.tensor(ref[5:]))
    half.state += other.state
    whole = compute_metrics({"t": pred}, {"t": ref})["t"]
    for got in (acc.compute()["t"], half.compute()["t"]):
        for k in ("mae", "rmse", "euclidean", "r2"):
            assert got[k] == pytest.approx(whole[k], rel=1e-12)


def test_empty_and_table():
    acc = MetricAccumulator(["a"])
    assert np.isnan(acc.compute()["a"]["mae"])
    table = format_table({"val": compute_metrics({"a": np.ones((2, 3))}, {"a": np.zeros((2, 3))})})
    assert "val" in table and "mae" in table and "a" in table
