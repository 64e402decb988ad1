"""The peak measurement of ``benchmarks/anharmonic_ir.py`` (``benchmarks/_peaks.py``) on lines of
known position and width, through the benchmark's own spectrum settings (no force field, no model;
the MD itself is the benchmark's, not a test's)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    """The peak tools with the benchmark's ``spectrum`` (``etgnn spectrum ir``'s settings)."""
    peaks, script = _load("_peaks"), _load("anharmonic_ir")
    return SimpleNamespace(**{k: getattr(peaks, k) for k in ("lorentzian", "measure_peak", "lifetime_width",
                                                              "correlation_fit", "THZ_TO_CM1")},
                           spectrum=script.spectrum)


def test_lorentzian_position_and_width_recovered(bench):
    freq = np.arange(0.0, 400.0, 2.08)  # the benchmark's grid spacing, cm^-1
    line = bench.lorentzian(freq, 3.0, 151.3, 11.7)
    peak = bench.measure_peak(freq, line)
    assert peak["fit_center"] == pytest.approx(151.3, abs=1e-6)
    assert peak["fit_fwhm"] == pytest.approx(11.7, abs=1e-6)
    assert peak["fit_height"] == pytest.approx(3.0, abs=1e-6)
    # half-maximum crossings on a cubic spline: 0.8 % wide with only ~6 grid points above half maximum,
    # exact on a fine grid
    assert peak["fwhm"] == pytest.approx(11.7, abs=0.12)
    fine = np.arange(0.0, 400.0, 0.01)
    assert bench.measure_peak(fine, bench.lorentzian(fine, 1.0, 151.3, 11.7))["fwhm"] == pytest.approx(11.7, abs=1e-4)
    # the search window picks the peak inside it, not the highest one (a weaker band at 300 cm^-1)
    both = line + bench.lorentzian(freq, 0.3, 300.0, 30.0)
    assert bench.measure_peak(freq, both)["fit_center"] == pytest.approx(151.3, abs=0.1)
    assert bench.measure_peak(freq, both, 250.0, 350.0)["fit_center"] == pytest.approx(300.0, abs=1.0)


def test_lifetime_width_removes_the_resolution(bench):
    """An undamped line through the spectrum code has the resolution's width; the same line with a
    Lorentzian of FWHM 9 cm^-1 applied is the 'MD'; the lifetime width found is those 9 cm^-1."""
    dt, n = 4.0, 2001
    t = np.arange(n) * dt
    f0 = 4.43e-3  # 1/fs (4.43 THz)
    values = np.stack([np.cos(2 * np.pi * f0 * t + p) for p in (0.0, 1.0, 2.0)], axis=1)
    series = SimpleNamespace(values=values, times=t, temperature=300.0, volume=1455.0)

    def absorption(broadening=None):  # (freq_cm1, absorption) as the benchmark computes them
        spec = bench.spectrum(series, broadening)
        return spec.freq_cm1, spec.columns["absorption"]

    target = bench.measure_peak(*absorption(9.0))["fwhm"]
    resolution = bench.measure_peak(*absorption())["fwhm"]
    assert resolution < target
    assert bench.lifetime_width(absorption, target) == pytest.approx(9.0, abs=1e-3)
    assert bench.lifetime_width(absorption, 0.5 * resolution) == 0.0
    # the time-domain cross-check: an undamped line has zero width and its own frequency
    fit = bench.correlation_fit(series, 150.0)
    assert fit["center"] == pytest.approx(f0 * 1e3 * bench.THZ_TO_CM1, abs=1e-3)
    assert fit["fwhm"] == pytest.approx(0.0, abs=1e-3)
