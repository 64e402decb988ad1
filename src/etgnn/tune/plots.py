"""Figures of a search and of a sweep (Figs. S4 and S3 of the ETGNN paper).

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .trials import best_trial, param_names, short_names

__all__ = ["parallel_coordinates", "sweep_plot"]

#: half-width of the vertical jitter of lines on categorical axes (axis height = 1), so that
#: trials sharing a value stay distinguishable
JITTER = 0.018


def _figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


class _Axis:
    """Maps the values of one hyperparameter (or the loss) to [0, 1], with tick labels."""

    def __init__(self, name: str, dist=None, values: Sequence = ()):
        self.name = name
        values = [v for v in values if v is not None]
        self.choices = list(dist.choices) if hasattr(dist, "choices") else None
        if self.choices is not None:
            self.choices += [v for v in dict.fromkeys(values) if v not in self.choices]
            return
        lo = min([*values, *([dist.low] if dist is not None else [])], default=0.0)
        hi = max([*values, *([dist.high] if dist is not None else [])], default=1.0)
        self.log = bool(dist.log) if dist is not None else (lo > 0 and hi / lo > 10)
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if self.log else (lo, hi)
        if self.hi <= self.lo:
            self.lo, self.hi = self.lo - 0.5, self.hi + 0.5

    def __call__(self, value: Any) -> float:
        if self.choices is not None:
            k = len(self.choices)
            return self.choices.index(value) / (k - 1) if k > 1 else 0.5
        v = math.log10(value) if self.log else float(value)
        return (v - self.lo) / (self.hi - self.lo)

    def ticks(self) -> list[tuple[float, str]]:
        if self.choices is not None:
            return [(self(c), str(c)) for c in self.choices]
        from matplotlib.ticker import LogLocator, MaxNLocator

        lo, hi = (10 ** self.lo, 10 ** self.hi) if self.log else (self.lo, self.hi)
        locator = LogLocator(subs=(1.0, 2.0, 5.0)) if self.log else MaxNLocator(5)
        ticks = [v for v in locator.tick_values(lo, hi) if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]
        out = [(self(v), f"{v:.3g}") for v in ticks]
        for end in (lo, hi):  # label an end that is far from every tick
            if all(abs(self(end) - y) > 0.1 for y, _ in out):
                out.append((self(end), f"{end:.3g}"))
        return out


def parallel_coordinates(study, path: str | os.PathLike, space: Mapping[str, Any] | None = None,
                         title: str | None = None) -> Path:
    """Parallel-coordinates plot of all trials of a study, the best one highlighted.

    One vertical axis per hyperparameter (categorical axes labelled with their choices, numeric
    ones with values, log-scaled for log-uniform ranges) and a last axis for the validation loss.
    Complete trials are coloured by validation loss (darker = lower), the best trial is drawn
    thick and red, pruned trials grey (ending at the last loss they reported), failed or
    running trials grey and dotted (no loss).

    Args:
        study: an ``optuna.Study``.
        path: output image (PNG).
        space: the search space (orders the axes); default: the order in which trials met them.
        title: figure title (default: counts and the best trial).

    Returns:
        ``path``.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.lines import Line2D
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    names = param_names(trials, space)
    dists = {}
    for t in trials:
        dists.update(t.distributions)
    axes = [_Axis(n, dists.get(n), [t.params.get(n) for t in trials]) for n in names]

    def loss_of(t):
        if t.state == TrialState.COMPLETE:
            return t.value
        if t.state == TrialState.PRUNED and t.intermediate_values:
            return t.intermediate_values[max(t.intermediate_values)]
        return None

    losses = [v for v in map(loss_of, trials) if v is not None and math.isfinite(v)]
    loss_axis = _Axis("validation loss", None, losses)
    axes.append(loss_axis)
    best = best_trial(study)
    complete = [t.value for t in trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)]
    lo, hi = (min(complete), max(complete)) if complete else (0.0, 1.0)
    norm = LogNorm(lo, hi) if lo > 0 and hi > lo * 10 else Normalize(lo, hi if hi > lo else lo + 1e-12)
    cmap = colormaps["viridis"]

    fig = _figure((max(6.0, 1.7 * len(axes) + 2.0), 5.0))
    ax = fig.add_subplot()
    xs = np.arange(len(axes), dtype=float)

    def coords(t):
        rng = np.random.default_rng(t.number)
        ys = []
        for a in axes[:-1]:
            v = t.params.get(a.name)
            jitter = rng.uniform(-JITTER, JITTER) if a.choices is not None and len(a.choices) > 1 else 0.0
            ys.append(a(v) + jitter if v is not None else np.nan)
        loss = loss_of(t)
        ys.append(loss_axis(loss) if loss is not None and math.isfinite(loss) else np.nan)
        return np.array(ys)

    for t in trials:  # grey first, coloured on top, lowest loss last
        if t.state == TrialState.PRUNED:
            ax.plot(xs, coords(t), color="0.6", lw=0.9, alpha=0.7, zorder=1)
        elif t.state != TrialState.COMPLETE:
            ax.plot(xs, coords(t), color="0.7", lw=0.9, ls=":", zorder=1)
    for t in sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value):
        if t is not best:
            ax.plot(xs, coords(t), color=cmap(norm(t.value)), lw=1.6, alpha=0.9, zorder=2)
    if best is not None:
        ax.plot(xs, coords(best), color="red", lw=3.5, zorder=4, marker="o", ms=5)
    for x, a, label in zip(xs, axes, [*short_names(names), "validation loss"]):
        ax.axvline(x, color="black", lw=1.0, zorder=3)
        for y, text in a.ticks():
            ax.text(x - 0.04, y, text, ha="right", va="center", fontsize=8, zorder=5,
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.9})
        section = a.name.rsplit(".", 1)[0] if "." in a.name else ""
        ax.text(x, 1.07, label + (f"\n({section})" if section else ""), ha="center", va="bottom", fontsize=9)
    ax.set_xlim(-0.6, len(axes) - 0.6)
    ax.set_ylim(-0.06, 1.2)
    ax.axis("off")
    if complete:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="validation loss (complete trials)",
                     shrink=0.8, pad=0.01)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    handles = [Line2D([], [], color="red", lw=3.5, label=f"best (trial {best.number})" if best else "best"),
               Line2D([], [], color=cmap(0.5), lw=1.6, label=f"complete ({counts[TrialState.COMPLETE]})"),
               Line2D([], [], color="0.6", lw=0.9, label=f"pruned ({counts[TrialState.PRUNED]}, last loss)"),
               Line2D([], [], color="0.7", lw=0.9, ls=":", label=f"failed ({counts[TrialState.FAIL]})")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=4, fontsize=8, frameon=False)
    if title is None:
        title = f"{study.study_name}: {len(trials)} trials"
        if best is not None:
            title += f"; best: trial {best.number}, validation loss {best.value:.4g}"
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=130)
    return Path(path)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def sweep_plot(param: str, values: Sequence, best: Sequence[float], final: Sequence[float] | None,
               path: str | os.PathLike, log_x: bool | None = None, title: str | None = None) -> Path:
    """Validation loss against the value of one hyperparameter (Fig. S3 of the paper).

    Args:
        param: dotted config path (x label).
        values: the values, in any order (numeric values are sorted; others keep their order).
        best: best validation loss of each run (normalised units, as the training loss).
        final: validation loss of each run's last epoch (None: not drawn).
        path: output image (PNG).
        log_x: logarithmic x axis; default: for learning rates (``*.lr``) or numbers spanning
            more than a factor 50.
        title: figure title.

    Returns:
        ``path``.
    """
    numeric = all(_is_number(v) for v in values)
    order = np.argsort(values, kind="stable") if numeric else np.arange(len(values))
    vals = [values[i] for i in order]
    series = [("best", [best[i] for i in order], "o-")]
    if final is not None:
        series.append(("last epoch", [final[i] for i in order], "s--"))
    x = np.asarray(vals, dtype=float) if numeric else np.arange(len(vals), dtype=float)
    if log_x is None:
        positive = numeric and len(vals) > 0 and min(vals) > 0
        log_x = positive and (param.rsplit(".", 1)[-1] in ("lr", "min_lr") or max(vals) / min(vals) > 50)
    fig = _figure((5.5, 4.0))
    ax = fig.add_subplot()
    for label, ys, style in series:
        ax.plot(x, np.asarray(ys, dtype=float), style, label=f"{label} validation loss", ms=6)
    if log_x:
        ax.set_xscale("log")
        ax.minorticks_off()
    ys = [y for _, s, _ in series for y in s if y is not None and math.isfinite(y)]
    if ys and min(ys) > 0 and max(ys) > 10 * min(ys):
        ax.set_yscale("log")
    if not numeric or len(vals) <= 12:
        ax.set_xticks(x, [f"{v:g}" if _is_number(v) else str(v) for v in vals])
    ax.set_xlabel(param)
    ax.set_ylabel("validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"validation loss vs {param}", fontsize=10)
    fig.savefig(path, dpi=130)
    return Path(path)
