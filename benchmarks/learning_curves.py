"""Learning curves: test MAE against training-set size and validation MAE against wall-clock time.

Issue 10, item 3: how much data and how much time a user needs for Born charges, on phonondb and
on the Materials Project dielectric set::

    python benchmarks/learning_curves.py                       # both sets, 6 min per size, 20 min for the time curve
    python benchmarks/learning_curves.py --sets phonondb --minutes 2 --time-minutes 5
    python benchmarks/learning_curves.py --quick --out /tmp/lc  # seconds (CI smoke test)
    python benchmarks/learning_curves.py --prepare-only --work /tmp/lc  # only write the split files

Protocol (the held-out test structures are those of ``benchmarks/accuracy.py``, seed 0): the rest
of the set is split once into a fixed validation part (20 %, seed 0) and a training pool; the
training subsets are nested (the first N of one permutation of the pool).  Every size trains the
set's example config (with EMA 0.999, the recipe search's best single change) for the same
wall-clock budget, so small sets run more epochs; the best checkpoint on the fixed validation part
predicts the test structures.  The time curve is the validation BEC MAE after every epoch of the
full-pool run (``log.csv``), trained for ``--time-minutes``; ``benchmarks/authors_etgnn.py`` puts the
authors' code on the same axes with the same train and validation files.  Writes
``OUT/learning_curves.{json,md}`` and ``docs/img/learning_curves.png`` (with ``--plot``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as acc  # noqa: E402  (benchmarks/accuracy.py: readers, split, baseline, scores)

ROOT = acc.ROOT
OUT = ROOT / "benchmarks" / "results"
FRACTIONS = (0.125, 0.25, 0.5, 1.0)
EXTRA = {"training": {"ema_decay": 0.999}}


def prepare(name: str, data_dir: Path, folder: Path, quick: bool = False) -> dict:
    """Write ``folder/{pool,val,test}.extxyz`` for set ``name``; return the split record.

    ``pool.extxyz`` holds the training pool in the order of its nested subsets.
    """
    spec = acc.SETS[name]
    test_src = data_dir / spec["test"][1] if isinstance(spec["test"], tuple) else None
    atoms, labels, t_atoms, t_labels, rest, test, dropped = acc.held_out_split(
        spec, data_dir / spec["train"], test_src, np.random.default_rng(acc.SEED))
    perm = np.random.default_rng(acc.SEED + 1).permutation(rest)
    n_val = int(round(0.2 * len(perm)))
    val, pool = np.sort(perm[:n_val]), perm[n_val:]  # pool keeps its random order: nested subsets
    if quick:
        val, pool, test = val[:8], pool[:24], test[:8]
    folder.mkdir(parents=True, exist_ok=True)
    acc.write_labelled(folder / "pool.extxyz", atoms, labels, pool)
    acc.write_labelled(folder / "val.extxyz", atoms, labels, val)
    acc.write_labelled(folder / "test.extxyz", t_atoms, t_labels, test)
    return {"n_pool": int(len(pool)), "n_val": int(len(val)), "n_test": int(len(test)),
            "train_rows_dropped_sum_rule": dropped}


def _config(name: str, folder: Path, n_train: int, run_dir: Path, minutes: float) -> dict:
    spec = acc.SETS[name]
    train_file = folder / f"pool_{n_train}.extxyz"  # not data.max_structures: it would cut the val file too
    if not train_file.is_file():
        from ase.io import read, write

        write(train_file, read(folder / "pool.extxyz", f":{n_train}"), format="extxyz")
    cfg = acc.set_config(spec, train_file, folder / "test.extxyz", run_dir, minutes)
    cfg["data"].update(val=str(folder / "val.extxyz"), split=[1.0, 0.0, 0.0])
    for section, values in EXTRA.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def _val_curve(log: Path, target: str = "born_charges") -> list[list[float]]:
    """[[time_s, validation MAE], ...] after every epoch of ``log.csv``."""
    with open(log, newline="") as fh:
        return [[float(r["time_s"]), float(r[f"val_{target}_mae"])] for r in csv.DictReader(fh)]


def run_size(name: str, folder: Path, n_train: int, minutes: float, work: Path) -> dict:
    """Train on the first ``n_train`` pool structures; score the best checkpoint on the test file."""
    from etgnn import load_model
    from etgnn.data.readers import read_structures
    from etgnn.train import train

    spec = acc.SETS[name]
    tcfg = acc.target_settings(spec)
    run_dir = work / f"{name}_n{n_train}"
    cfg = _config(name, folder, n_train, run_dir, minutes)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(cfg)
    wall = time.perf_counter() - t0
    rec = {"n_train": n_train, "minutes": minutes, "epochs": result.epochs_run, "best_epoch": result.best_epoch,
           "stopped": result.stopped, "wall_s": round(wall, 1), "targets": {}}
    if result.best_epoch < 0:
        return rec
    test_atoms = read_structures(folder / "test.extxyz")
    pool_atoms = read_structures(folder / "pool.extxyz")[:n_train]
    model = load_model(run_dir / "best.ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preds = model.predict(test_atoms)
    metrics = ("mae", "mae_diag", "mae_offdiag")
    for tname in spec["targets"]:
        level = tcfg[tname]["level"]
        spec_t = acc.LabelSpec(f"y_{tname}", level, tcfg[tname]["rank"])
        ref = [acc.extract_label(a, spec_t) for a in test_atoms]
        base = acc.baseline(pool_atoms, [acc.extract_label(a, spec_t) for a in pool_atoms], test_atoms, level)
        rec["targets"][tname] = {"etgnn": acc.scores([p[tname] for p in preds], ref, metrics, level),
                                 "baseline": acc.scores(base, ref, metrics, level)}
    rec["val_curve"] = _val_curve(run_dir / "log.csv")
    return rec


def render(res: dict) -> str:
    lines = ["# Learning curves (`benchmarks/learning_curves.py`)", "",
             f"- date {res['date']}, commit `{res['commit']}`; {res['hardware']['cpu']}, "
             f"{res['hardware']['torch_threads']} torch thread, load average {res['hardware']['load_average_1min_at_start']}"
             " at the start (a shared 2-core machine)",
             f"- every size: the set's example config + EMA 0.999, {res['minutes']:g} min of training; the full pool "
             f"also trains {res['time_minutes']:g} min for the time curve; test MAE of the best checkpoint "
             "(fixed validation part); BEC MAE over all 9 components (e)",
             *[f"- merged run: {', '.join(r['sets'])} from {r['date']}, commit `{r['commit']}`, load average "
               f"{r['hardware']['load_average_1min_at_start']} at the start" for r in res.get("runs", [])], ""]
    for name, s in res["sets"].items():
        lines += [f"## {name}", "",
                  f"{s['split']['n_pool']} training structures in the pool, {s['split']['n_val']} validation, "
                  f"{s['split']['n_test']} test" + (f"; {s['split']['train_rows_dropped_sum_rule']} rows that break "
                                                   "the sum rule left out" if s['split']['train_rows_dropped_sum_rule']
                                                   else ""), "",
                  "| training structures | epochs (best) | BEC MAE | diagonal | off-diagonal | baseline MAE |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in s["sizes"]:
            t = r["targets"].get("born_charges")
            if t is None:
                lines.append(f"| {r['n_train']} | {r['epochs']} | no epoch finished | | | |")
                continue
            e, b = t["etgnn"], t["baseline"]
            lines.append(f"| {r['n_train']} | {r['epochs']} ({r['best_epoch']}) | {e['mae']:.4f} | {e['mae_diag']:.4f} "
                         f"| {e['mae_offdiag']:.4f} | {b['mae']:.4f} |")
        tc = s.get("time_run")
        if tc and tc.get("val_curve"):
            pts = tc["val_curve"]
            lines += ["", f"Time curve (full pool, {tc['minutes']:g} min): validation BEC MAE "
                      + ", ".join(f"{v:.3f} at {t / 60:.1f} min" for t, v in _thin(pts, 6)) + "; test MAE of the best "
                      f"checkpoint {tc['targets']['born_charges']['etgnn']['mae']:.4f} e after {tc['epochs']} epochs."]
        lines.append("")
    return "\n".join(lines)


def _thin(points: list, k: int) -> list:
    """About ``k`` points spread over the curve, always with the last."""
    if len(points) <= k:
        return points
    idx = sorted(set(np.linspace(0, len(points) - 1, k).round().astype(int).tolist()))
    return [points[i] for i in idx]


def plot(res: dict, path: Path, authors: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sets = list(res["sets"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in sets:
        s = res["sets"][name]
        ok = [r for r in s["sizes"] if "born_charges" in r["targets"]]
        axes[0].loglog([r["n_train"] for r in ok], [r["targets"]["born_charges"]["etgnn"]["mae"] for r in ok],
                       "o-", label=f"{name}: etgnn")
        if ok:
            axes[0].axhline(ok[-1]["targets"]["born_charges"]["baseline"]["mae"], ls=":", lw=1,
                            color=axes[0].lines[-1].get_color(), label=f"{name}: per-element mean")
        tc = s.get("time_run")
        if tc and tc.get("val_curve"):
            t, v = np.array(tc["val_curve"]).T
            axes[1].plot(t / 60, v, "-", label=f"{name}: etgnn")
    if authors:
        for run in authors.get("curves", []):
            t, v = np.array(run["val_curve"], dtype=float).T  # null (a NaN output) -> a gap
            axes[1].plot(t / 60, v, "o--", ms=3, label=f"{authors.get('set', 'phonondb')}, authors' code: {run['label']}")
    axes[0].xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=2))  # 64, 128, 256, ... structures
    axes[0].xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].set(xlabel="training structures", ylabel="test BEC MAE (e)",
                title=f"{res['minutes']:g} min of training per size")
    axes[1].set(xlabel="wall-clock training time (min, 1 thread)", ylabel="validation BEC MAE (e)",
                title="full training pool", yscale="log")
    for ax, where in zip(axes, ("lower left", "upper right")):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6 if authors else 7, loc=where)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def combine(files: list[Path], out: Path, plot_path: Path | None, authors_file: Path | None) -> int:
    """Merge the ``sets`` of several result files (same budgets) into one; write OUT and the figure."""
    docs = [json.loads(f.read_text()) for f in files]
    budgets = {(d["minutes"], d["time_minutes"], d["quick"]) for d in docs}
    if len(budgets) != 1:
        print(f"learning_curves: --combine needs runs with the same budgets, got {sorted(budgets)}", file=sys.stderr)
        return 2
    res = dict(docs[0], sets={}, runs=[{"date": d["date"], "commit": d["commit"], "sets": list(d["sets"]),
                                         "hardware": d["hardware"]} for d in docs])
    for f, d in zip(files, docs):
        clash = set(d["sets"]) & set(res["sets"])
        if clash:
            print(f"learning_curves: set {', '.join(sorted(clash))} appears twice (again in {f})", file=sys.stderr)
            return 2
        res["sets"].update(d["sets"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "learning_curves.json").write_text(json.dumps(res, indent=1))
    (out / "learning_curves.md").write_text(render(res))
    if plot_path:
        authors = json.loads(authors_file.read_text()) if authors_file and authors_file.is_file() else None
        plot(res, plot_path, authors)
    print(f"wrote {out / 'learning_curves.md'}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", choices=["phonondb", "mp"], default=["phonondb", "mp"])
    ap.add_argument("--minutes", type=float, default=6.0, help="training budget per size (minutes)")
    ap.add_argument("--time-minutes", type=float, default=20.0, help="budget of the full-pool time-curve run")
    ap.add_argument("--quick", action="store_true", help="tiny subsets, seconds per run (smoke test)")
    ap.add_argument("--prepare-only", action="store_true", help="write the split files under --work and stop")
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "learning_curves")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--plot", type=Path, default=None, help="write the figure here (e.g. docs/img/learning_curves.png)")
    ap.add_argument("--authors", type=Path, default=None, help="authors_etgnn.json to draw on the time axis")
    ap.add_argument("--combine", type=Path, nargs="+", default=None, metavar="JSON",
                    help="no training: merge the sets of these learning_curves.json files (one run per set, e.g. run "
                         "side by side) into OUT and redraw the figure")
    args = ap.parse_args(argv)
    if args.combine:
        return combine(args.combine, args.out, args.plot, args.authors)
    missing = [n for n in args.sets if not (args.data_dir / acc.SETS[n]["train"]).is_file()]
    if missing:
        print(f"learning_curves: data absent for {', '.join(missing)} under {args.data_dir}", file=sys.stderr)
        return 2
    if args.work.exists() and any(args.work.iterdir()) and not args.prepare_only:
        print(f"learning_curves: {args.work} is not empty; pass another --work", file=sys.stderr)
        return 2
    minutes, time_minutes = (0.05, 0.05) if args.quick else (args.minutes, args.time_minutes)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"), "commit": commit,
           "minutes": minutes, "time_minutes": time_minutes, "quick": args.quick, "hardware": acc.hardware(),
           "sets": {}}
    for name in args.sets:
        folder = args.work / name / "split"
        split = prepare(name, args.data_dir, folder, quick=args.quick)
        print(f"{name}: {split}", flush=True)
        if args.prepare_only:
            continue
        sizes = sorted({max(4, int(round(f * split["n_pool"]))) for f in FRACTIONS})
        rec = {"split": split, "sizes": []}
        for n in sizes[:-1]:
            rec["sizes"].append(run_size(name, folder, n, minutes, args.work / name))
            print(json.dumps({k: v for k, v in rec["sizes"][-1].items() if k != "val_curve"}), flush=True)
        full = run_size(name, folder, sizes[-1], minutes, args.work / name)
        rec["sizes"].append(full)
        if time_minutes > minutes:
            rec["time_run"] = dict(run_size(name, folder, sizes[-1], time_minutes, args.work / f"{name}_time"))
        else:
            rec["time_run"] = full
        res["sets"][name] = rec
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "learning_curves.json").write_text(json.dumps(res, indent=1))
    if args.prepare_only:
        return 0
    (args.out / "learning_curves.md").write_text(render(res))
    if args.plot:
        authors = json.loads(args.authors.read_text()) if args.authors and args.authors.is_file() else None
        plot(res, args.plot, authors)
    print(f"wrote {args.out / 'learning_curves.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
