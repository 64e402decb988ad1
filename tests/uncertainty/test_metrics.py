"""Uncertainty metrics (issue 26 item 3) on errors drawn with known standard deviations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etgnn.uncertainty import calibration_curve, format_uncertainty_table, uncertainty_metrics


def _draw(n=20000, factor=1.0, seed=0):
    rng = np.random.default_rng(seed)
    std = rng.uniform(0.05, 2.0, size=(n, 1)) * rng.uniform(0.5, 1.5, size=(n, 3))  # rows differ
    ref = rng.standard_normal((n, 3))
    pred = ref + factor * std * rng.standard_normal((n, 3))
    return pred, ref, std


def test_calibrated_gaussian_errors():
    pred, ref, std = _draw()
    m = uncertainty_metrics(pred, ref, std)
    assert m["coverage_1sigma"] == pytest.approx(math.erf(1 / math.sqrt(2)), abs=0.01)
    assert m["coverage_2sigma"] == pytest.approx(math.erf(2 / math.sqrt(2)), abs=0.005)
    assert m["miscalibration_area"] < 0.01
    expected_nll = np.mean(0.5 * np.log(2 * np.pi * std**2) + 0.5)
    assert m["nll"] == pytest.approx(expected_nll, abs=0.02)
    assert m["spearman"] > 0.5  # sigma varies 40x across rows, so it ranks the errors
    assert m["n_rows"] == 20000 and m["n_components"] == 60000


def test_overconfident_sigma_is_miscalibrated_and_a_shuffled_sigma_ranks_nothing():
    pred, ref, std = _draw(factor=3.0)
    m = uncertainty_metrics(pred, ref, std)
    assert m["coverage_2sigma"] < 0.55 and m["miscalibration_area"] > 0.2
    good = uncertainty_metrics(*_draw())
    assert m["nll"] > good["nll"] + 0.5
    pred, ref, std = _draw()
    shuffled = uncertainty_metrics(pred, ref, np.random.default_rng(1).permutation(std))
    assert abs(shuffled["spearman"]) < 0.05


def test_spearman_is_the_rank_correlation_of_row_sigma_and_row_error():
    pred, ref, std = _draw(n=300, seed=2)
    m = uncertainty_metrics(pred, ref, std)
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731 - no ties in continuous draws
    e = rank(np.sqrt(np.mean((pred - ref) ** 2, axis=1)))
    s = rank(np.sqrt(np.mean(std**2, axis=1)))
    assert m["spearman"] == pytest.approx(np.corrcoef(e, s)[0, 1], abs=1e-12)


def test_unlabelled_rows_and_zero_sigma_components_are_left_out():
    pred, ref, std = _draw(n=1000)
    ref[:10] = np.nan
    std[10:20, 2] = 0.0
    m = uncertainty_metrics(pred.reshape(1000, 3), ref, std)
    assert m["n_rows"] == 990 and m["n_zero_sigma"] == 10 and m["n_components"] == 990 * 3 - 10
    assert np.isfinite(m["nll"])


def test_calibration_curve_and_table():
    expected, observed = calibration_curve(np.abs(np.random.default_rng(0).standard_normal(50000)))
    assert np.abs(expected - observed).max() < 0.01 and observed[0] == 0 and observed[-1] == 1
    text = format_uncertainty_table({"test": {"bec": uncertainty_metrics(*_draw(n=100))}})
    assert "bec" in text and "spearman" in text
