"""Position and width of one line of a spectrum, for the benchmarks (``anharmonic_ir.py``).

``measure_peak``: the highest peak in a window, its half-maximum crossings and a Lorentzian fit;
``lifetime_width``: the Lorentzian width a line has beyond a reference's (the resolution);
``correlation_fit``: a damped cosine fitted to a current's autocorrelation (no window at all).
Frequencies in cm^-1 unless a name says THz; ``tests/test_anharmonic_ir.py`` checks them on lines
of known position and width.
"""

from __future__ import annotations

import numpy as np

#: 1 THz in cm^-1
THZ_TO_CM1 = 33.35641


def lorentzian(x, height, center, fwhm):
    """Lorentzian of maximum ``height`` at ``center`` with full width ``fwhm`` at half maximum."""
    return height / (1.0 + (2.0 * (x - center) / fwhm) ** 2)


def _crossing(x, y, k, level, step):
    """Where ``y`` falls to ``level`` walking from index ``k`` by ``step``: the root of the cubic
    spline through the grid points around the two that bracket it (nan off the grid)."""
    from scipy.interpolate import CubicSpline
    from scipy.optimize import brentq

    i = k
    while 0 <= i + step < len(y) and y[i + step] > level:
        i += step
    j = i + step
    if not 0 <= j < len(y):
        return float("nan")
    a, b = max(min(i, j) - 2, 0), min(max(i, j) + 3, len(y))
    spline = CubicSpline(x[a:b], y[a:b])
    return float(brentq(lambda u: spline(u) - level, *sorted((x[i], x[j]))))


def measure_peak(freq, y, lo: float = 0.0, hi: float = np.inf, fit_fraction: float = 0.25) -> dict:
    """Position and full width at half maximum of the highest peak of ``y`` between ``lo`` and ``hi``.

    Returns ``max_at`` and ``height`` (the highest grid point), ``halfmax`` (the two crossings),
    ``fwhm``, ``fit_center``, ``fit_fwhm``, ``fit_height`` and ``fit_range``. ``fwhm``: distance between the half-maximum crossings on either side of the maximum, each
    interpolated with a cubic spline through the grid points around it. ``fit_*``: a Lorentzian
    (:func:`lorentzian`) fitted by least squares to the contiguous points around the maximum that
    are above ``fit_fraction`` of it.
    """
    from scipy.optimize import curve_fit

    freq, y = np.asarray(freq, dtype=float), np.asarray(y, dtype=float)
    inside = np.flatnonzero((freq >= lo) & (freq <= hi))
    k = int(inside[np.argmax(y[inside])])
    left, right = _crossing(freq, y, k, y[k] / 2, -1), _crossing(freq, y, k, y[k] / 2, +1)
    a, b = k, k
    while a > 0 and y[a - 1] > fit_fraction * y[k]:
        a -= 1
    while b < len(y) - 1 and y[b + 1] > fit_fraction * y[k]:
        b += 1
    guess = (y[k], freq[k], right - left if np.isfinite(right - left) else 10 * (freq[1] - freq[0]))
    (height, center, fwhm), _ = curve_fit(lorentzian, freq[a:b + 1], y[a:b + 1], p0=guess)
    return {"max_at": float(freq[k]), "height": float(y[k]), "halfmax": [left, right], "fwhm": right - left,
            "fit_center": float(center), "fit_fwhm": float(abs(fwhm)), "fit_height": float(height),
            "fit_range": [float(freq[a]), float(freq[b])]}


def lifetime_width(spectrum_of, target_fwhm: float, lo: float = 0.0, hi: float = np.inf) -> float:
    """The Lorentzian FWHM ``G`` (cm^-1) for which ``spectrum_of(G)``, a ``(freq_cm1, y)`` pair of a
    reference line (e.g. a harmonic run: only as wide as the resolution) broadened by a Lorentzian of
    FWHM ``G`` (``G = 0``: not broadened), has a peak of half-maximum width ``target_fwhm`` between
    ``lo`` and ``hi``; 0 when the reference is already that wide, nan when no width fits."""
    from scipy.optimize import brentq

    def excess(g):
        return measure_peak(*spectrum_of(g), lo, hi)["fwhm"] - target_fwhm

    if not np.isfinite(target_fwhm) or not np.isfinite(excess(0.0)):
        return float("nan")
    if excess(0.0) >= 0:
        return 0.0
    # the broadened reference is at least G wide, so the root lies below target_fwhm
    if not excess(target_fwhm) >= 0:
        return float("nan")
    return float(brentq(excess, 0.0, target_fwhm, xtol=1e-4))


def damped_cosine(t_ps, c0, f_thz, g_thz):
    """Autocorrelation of one line at ``f`` with a Lorentzian FWHM ``g`` (THz): ``c0 cos(2 pi f t) exp(-pi g t)``."""
    return c0 * np.cos(2 * np.pi * f_thz * t_ps) * np.exp(-np.pi * g_thz * t_ps)


def correlation_fit(series, guess_cm1: float) -> dict:
    """:func:`damped_cosine` fitted to the autocorrelation of a current series (``values`` (n_frames, 3),
    ``times`` fs) up to half its length, the longest lag of ``etgnn spectrum ir``, with no window:
    the line's position and lifetime FWHM in cm^-1, free of the spectral resolution. One line only;
    ``guess_cm1`` starts the fit near it."""
    from scipy.optimize import curve_fit

    from etgnn.observables.spectra import autocorrelation

    c = autocorrelation(series.values, max_lag=(len(series.values) - 1) // 2, subtract_mean=True)
    t = np.arange(len(c)) * float(np.median(np.diff(series.times))) / 1000
    (_, f, g), _ = curve_fit(damped_cosine, t, c, p0=(c[0], guess_cm1 / THZ_TO_CM1, 0.1))
    return {"center": float(f * THZ_TO_CM1), "fwhm": float(abs(g) * THZ_TO_CM1)}
