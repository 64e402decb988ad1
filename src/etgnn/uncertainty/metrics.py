"""How good an uncertainty is: rank correlation with the error, coverage, calibration, likelihood.

Pure numpy on arrays of predictions, labels and standard deviations of one target (rows x
components); unlabelled rows (NaN labels) are left out, and so are components whose sigma is
exactly zero (a component a symmetry forbids: zero prediction, zero sigma).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfinv
from scipy.stats import spearmanr

__all__ = ["uncertainty_metrics", "format_uncertainty_table", "calibration_curve", "UNCERTAINTY_METRICS"]

#: keys of :func:`uncertainty_metrics`, in table order, with their column titles
UNCERTAINTY_METRICS = (("spearman", "spearman"), ("coverage_1sigma", "in_1sig"), ("coverage_2sigma", "in_2sig"),
                       ("miscalibration_area", "miscal"), ("nll", "nll"), ("mean_std", "mean_sig"))


def calibration_curve(z: np.ndarray, n: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Expected and observed share of components inside central Gaussian intervals.

    Args:
        z: |error| / sigma per component.
        n: points of the curve on [0, 1].

    Returns:
        ``(expected, observed)``: for each probability ``p`` the share of ``z`` below
        ``sqrt(2) erfinv(p)`` (the half-width of the central interval holding ``p`` of a Gaussian).
    """
    expected = np.linspace(0.0, 1.0, n)
    width = np.sqrt(2.0) * erfinv(np.clip(expected, 0.0, 1.0 - 1e-12))
    z = np.sort(np.asarray(z, dtype=float))
    observed = np.searchsorted(z, width, side="right") / max(z.size, 1)
    observed[-1] = 1.0
    return expected, observed


def uncertainty_metrics(pred: np.ndarray, ref: np.ndarray, std: np.ndarray) -> dict:
    """Quality of ``std`` as the uncertainty of ``pred``.

    Args:
        pred, ref, std: (n_rows, 3, ..., 3) arrays of one target (rows: atoms or structures),
            data units; NaN rows of ``ref`` are unlabelled.

    Returns:
        ``{"spearman"``: rank correlation between the row's RMS sigma and its RMS error over
        components, ``"coverage_1sigma"`` / ``"coverage_2sigma"``: share of components with
        ``|error| <= 1`` / ``2 sigma`` (a Gaussian: 0.683 / 0.954), ``"miscalibration_area"``:
        mean |observed - expected| share over central intervals of every probability (0 for a
        perfect calibration, 0.5 at most), ``"nll"``: mean Gaussian negative log-likelihood per
        component (includes ``log`` of data units), ``"mean_std"``, ``"rmse"``, ``"n_rows"``,
        ``"n_components"``, ``"n_zero_sigma"}``.
    """
    n = pred.shape[0]
    pred, ref, std = (np.asarray(a, dtype=float).reshape(n, -1) for a in (pred, ref, std))
    rows = ~np.isnan(ref).all(axis=1)
    err, sig = (pred - ref)[rows], std[rows]
    keep = sig > 0
    e, s = err[keep], sig[keep]
    out = {"n_rows": int(rows.sum()), "n_components": int(keep.sum()), "n_zero_sigma": int((~keep).sum())}
    if e.size == 0:
        return out
    z = np.abs(e) / s
    row_err = np.sqrt(np.mean(err**2, axis=1))
    row_sig = np.sqrt(np.mean(sig**2, axis=1))
    rho = spearmanr(row_sig, row_err).statistic if row_err.size > 1 else float("nan")
    expected, observed = calibration_curve(z)
    out.update({
        "spearman": float(rho),
        "coverage_1sigma": float(np.mean(z <= 1.0)),
        "coverage_2sigma": float(np.mean(z <= 2.0)),
        "miscalibration_area": float(np.trapezoid(np.abs(observed - expected), expected)),
        "nll": float(np.mean(0.5 * np.log(2 * math.pi * s**2) + 0.5 * z**2)),
        "mean_std": float(np.mean(s)),
        "rmse": float(np.sqrt(np.mean(e**2))),
    })
    return out


def format_uncertainty_table(metrics: dict[str, dict[str, dict]]) -> str:
    """Plain-text table, one line per (split, target), of :func:`uncertainty_metrics`."""
    head = f"{'split':<6} {'target':<20} " + " ".join(f"{t:>9}" for _, t in UNCERTAINTY_METRICS) + f" {'n':>8}"
    lines = [head, "-" * len(head)]
    for split, per_target in metrics.items():
        for name, m in per_target.items():
            vals = " ".join(f"{m[k]:>9.4g}" if k in m else f"{'-':>9}" for k, _ in UNCERTAINTY_METRICS)
            lines.append(f"{split:<6} {name:<20} {vals} {m.get('n_components', 0):>8}")
    lines.append("spearman: rank correlation of the row's sigma and |error| (rows: atoms or structures); in_1sig / "
                 "in_2sig: share of components with |error| <= 1 / 2 sigma (Gaussian 0.683 / 0.954); miscal: "
                 "miscalibration area; nll: Gaussian NLL per component")
    return "\n".join(lines)
