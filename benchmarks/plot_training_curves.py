#!/usr/bin/env python
"""Validation error against training time, from the ``log.csv`` of runs kept by
``benchmarks/accuracy.py --keep-runs DIR``: one panel per set, one line per labelled run.

    python benchmarks/plot_training_curves.py "cosine=/tmp/runs_a/phonondb/log.csv" \\
        "plateau=/tmp/runs_b/phonondb/log.csv" --metric born_charges_mae -o docs/img/curves.png

Each argument is ``[PANEL/]LABEL=PATH[:METRIC]`` (METRIC a ``val_<target>_<metric>`` column
without the ``val_`` prefix; default ``--metric``).  Curves with the same PANEL share a panel;
without one, the panel is the folder name above ``log.csv`` (the set, as ``--keep-runs`` names
it).  Log-log axes: a power law in time is a straight line.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_curve(path: Path, metric: str) -> tuple[list[float], list[float]]:
    """(minutes, validation values) of one ``log.csv``; ``metric`` is e.g. ``forces_mae``."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    column = f"val_{metric}"
    if rows and column not in rows[0]:
        options = ", ".join(c[4:] for c in rows[0] if c.startswith("val_") and c != "val_loss")
        raise SystemExit(f"{path}: no column {column!r}; metrics in this log: {options}")
    return [float(r["time_s"]) / 60.0 for r in rows], [float(r[column]) for r in rows]


def parse_item(item: str, default_metric: str) -> tuple[str, str, Path, str]:
    """``[PANEL/]LABEL=PATH[:METRIC]`` -> (panel, label, path, metric)."""
    if "=" not in item:
        raise SystemExit(f"{item!r}: expected [PANEL/]LABEL=PATH[:METRIC]")
    label, rest = item.split("=", 1)
    path, _, metric = rest.partition(":")
    panel, _, label = label.rpartition("/")
    return panel or Path(path).parent.name, label, Path(path), metric or default_metric


def plot(items: list[tuple[str, str, Path, str]], out: Path, title: str = "") -> None:
    """One panel per distinct PANEL of ``items`` = [(panel, label, log.csv path, metric), ...]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(panel for panel, _, _, _ in items))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.4), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for panel, label, path, metric in items:
            if panel != name:
                continue
            t, v = read_curve(path, metric)
            ax.plot(t, v, label=label, lw=1.2)
            ax.set_ylabel(f"validation {metric.replace('_', ' ')}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training time (minutes, graph building included)")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="[PANEL/]LABEL=PATH[:METRIC]")
    ap.add_argument("--metric", default="born_charges_mae", help="default column (without val_)")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    plot([parse_item(i, args.metric) for i in args.runs], args.out, args.title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
