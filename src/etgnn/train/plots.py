"""Parity plots (predicted vs reference tensor components), one panel per target and part.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend change), in
the style of Fig. S2 of the ETGNN paper: every Cartesian component of every atom / structure is
one point, with the y = x line.  A rank-2 target gets four panels in a row: all components, then
its isotropic (tr/3), anisotropic (symmetric traceless) and antisymmetric parts
(:func:`etgnn.targets.metrics.tensor_parts`).  Each panel writes its MAE and R^2 with the
baseline's beside them (see :mod:`etgnn.targets.metrics`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np

from ..data.labels import labelled

__all__ = ["parity_plot"]

#: at most this many points are drawn per panel (a random subset; the metrics use all of them)
MAX_POINTS = 200_000

_PART_TITLES = {"all": "all components", "iso": "isotropic tr/3", "aniso": "anisotropic (sym. traceless)",
                "anti": "antisymmetric"}


def _panels(predictions, references, metrics):
    """``[(target, part, pred (k,), ref (k,), metrics of the panel)]`` in drawing order."""
    from ..targets.metrics import tensor_parts

    out = []
    for name, p in predictions.items():
        p, y = np.asarray(p, dtype=float), np.asarray(references[name], dtype=float)
        m = dict(metrics.get(name, {}))
        out.append((name, "all", p.ravel(), y.ravel(), m))
        parts = m.get("parts")
        if p.ndim == 3 and p.shape[1:] == (3, 3) and parts:
            pp, yp = tensor_parts(p), tensor_parts(y)
            out += [(name, part, pp[part].ravel(), yp[part].ravel(), parts[part]) for part in parts]
    return out


def _num(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def parity_plot(predictions: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray],
                path: str | os.PathLike, metrics: Mapping[str, Mapping] | None = None,
                units: Mapping[str, str] | None = None, title: str | None = None):
    """Write a parity plot: one panel per target, four (all, iso, aniso, anti) for rank-2 ones.

    Args:
        predictions, references: ``{target: (n, 3, ..., 3) array}`` in data units.
        path: output image (PNG recommended).
        metrics: ``{target: metrics}`` of :func:`etgnn.targets.metrics.full_metrics` (parts and
            baselines); pooled metrics only (computed if absent) give one panel per target.
        units: ``{target: unit}`` for the axis labels.
        title: figure title.

    Returns:
        the matplotlib ``Figure`` (already written to ``path``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..targets.metrics import compute_metrics

    keep = {n: labelled(y) if np.ndim(y) else np.ones(1, bool) for n, y in references.items()}
    predictions = {n: np.asarray(predictions[n])[k] for n, k in keep.items()}  # unlabelled rows (NaN) not plotted
    references = {n: np.asarray(references[n], dtype=float)[k] for n, k in keep.items()}
    if metrics is None:
        metrics = compute_metrics(predictions, references)
    panels = _panels(predictions, references, metrics)
    ncols = 4 if any(part != "all" for _, part, *_ in panels) else min(len(panels), 3)
    ncols = max(ncols, 1)
    slots, k = [], 0  # a rank-2 target's four panels start a row
    for _, part, _, _, m in panels:
        if part == "all" and "parts" in m and k % ncols:
            k += ncols - k % ncols
        slots.append(k)
        k += 1
    nrows = max(math.ceil(k / ncols), 1)
    fig = Figure(figsize=(4.2 * ncols, 4.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    rng = np.random.default_rng(0)
    for k, (name, part, p, y, m) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, slots[k] + 1)
        if p.size > MAX_POINTS:
            pick = rng.choice(p.size, MAX_POINTS, replace=False)
            p, y = p[pick], y[pick]
        if p.size:
            lo, hi = float(min(p.min(), y.min())), float(max(p.max(), y.max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, zorder=0)
            ax.scatter(y, p, s=4, alpha=0.5, edgecolors="none", rasterized=True, color=f"C{k % 10}")
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(name if part == "all" and "parts" not in m else f"{name}: {_PART_TITLES[part]}", fontsize=10)
        text = f"MAE = {_num(m.get('mae'), '.3g')}\n$R^2$ = {_num(m.get('r2'), '.4f')}"
        if "baseline_mae" in m:
            text = (f"MAE = {_num(m.get('mae'), '.3g')} (baseline {_num(m.get('baseline_mae'), '.3g')})\n"
                    f"$R^2$ = {_num(m.get('r2'), '.4f')} (baseline {_num(m.get('baseline_r2'), '.3f')})")
        ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", ha="left", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        unit = f" ({units[name]})" if units and units.get(name) else ""
        ax.set_xlabel(f"reference{unit}")
        ax.set_ylabel(f"predicted{unit}")
    if title:
        fig.suptitle(title)
    fig.savefig(os.fspath(path), dpi=120)
    return fig
