"""Parity plots (predicted vs reference tensor components), one panel per target.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend change), in
the style of Fig. S2 of the ETGNN paper: every Cartesian component of every atom / structure is
one point, with the y = x line and the MAE and R^2 in the panel title.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np

__all__ = ["parity_plot"]

#: at most this many points are drawn per panel (a random subset; the metrics use all of them)
MAX_POINTS = 200_000


def parity_plot(predictions: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray],
                path: str | os.PathLike, metrics: Mapping[str, Mapping[str, float]] | None = None,
                units: Mapping[str, str] | None = None, title: str | None = None) -> None:
    """Write a parity plot with one panel per target.

    Args:
        predictions, references: ``{target: (n, 3, ..., 3) array}`` in data units.
        path: output image (PNG recommended).
        metrics: ``{target: {"mae", "r2", ...}}`` shown in the titles (computed if absent).
        units: ``{target: unit}`` for the axis labels.
        title: figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .metrics import compute_metrics

    names = list(predictions)
    if metrics is None:
        metrics = compute_metrics(predictions, references)
    ncols = min(len(names), 3)
    nrows = max(math.ceil(len(names) / max(ncols, 1)), 1)
    fig = Figure(figsize=(4.2 * max(ncols, 1), 4.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        ax = fig.add_subplot(nrows, max(ncols, 1), k + 1)
        p = np.asarray(predictions[name], dtype=float).ravel()
        y = np.asarray(references[name], dtype=float).ravel()
        if p.size > MAX_POINTS:
            pick = rng.choice(p.size, MAX_POINTS, replace=False)
            p, y = p[pick], y[pick]
        if p.size:
            lo, hi = float(min(p.min(), y.min())), float(max(p.max(), y.max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, zorder=0)
            ax.scatter(y, p, s=4, alpha=0.5, edgecolors="none", rasterized=True)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal", adjustable="box")
        m = metrics.get(name, {})
        ax.set_title(f"{name}: MAE = {m.get('mae', float('nan')):.3g}, $R^2$ = {m.get('r2', float('nan')):.4f}",
                     fontsize=10)
        unit = f" ({units[name]})" if units and units.get(name) else ""
        ax.set_xlabel(f"reference{unit}")
        ax.set_ylabel(f"predicted{unit}")
    if title:
        fig.suptitle(title)
    fig.savefig(os.fspath(path), dpi=120)
