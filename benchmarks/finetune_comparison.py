"""Fine-tuned from dielectric-v1 against trained from scratch, at equal compute (issue 25, item 4).

Two tasks the pretrained model was never trained on:

- ``si_nmr`` -- a new property: 29Si NMR shielding tensors (ppm, per atom, full 3x3, labelled on one
  Si per inequivalent site) of silicon oxides (../shared/data/si_nmr, MatTen).  The fine-tuned
  model loads dielectric-v1's backbone and gets a fresh ``shielding`` head.
- ``water_eps`` -- a family held out of pretraining: liquid water (32 H2O per periodic box,
  ../shared/data/water_bulk, TENSOAP), target ``epsilon`` (eps_inf, per structure).  Pretraining saw
  crystals only (phonondb, Materials Project), no molecular liquid; the fine-tuned model loads
  dielectric-v1's backbone *and* its ``epsilon`` head (same name and form).

For each task one fixed split (seed 0): a test set, a validation set (best-epoch choice, shared
by every run) and nested training subsets of 25 / 50 / 100 / 200 structures.  Both arms use the
same architecture (dielectric-v1's: 64 channels, 3 blocks, 6 A cutoff) and the same number of
optimisation steps (``--steps``; 150 for si_nmr, 50 for the 5x costlier water boxes; batch 8, cosine anneal, warm-up of 1 epoch), so equal steps means
equal compute; the wall-clock time of every run is reported beside it.  Scratch: lr 1e-3.
Fine-tuned: lr 1e-3 for the heads, backbone at 0.1 x (arm ``finetuned``) or 1 x (``finetuned_full``,
``--arms``) the heads' rate (``training.backbone_lr_factor``).

    python benchmarks/finetune_comparison.py --out benchmarks/results/finetune
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402

from etgnn.train import train  # noqa: E402

DATA = _bench.REPO.parent / "shared" / "data"
SIZES = (25, 50, 100, 200)
ARMS = ("scratch", "finetuned")
#: fine-tuned arms: the backbone's learning rate as a factor of the heads' (training.backbone_lr_factor)
BACKBONE_LR = {"finetuned": 0.1, "finetuned_full": 1.0}
ARM_LABEL = {"scratch": "from scratch", "finetuned": "fine-tuned (backbone 0.1 x lr)",
             "finetuned_full": "fine-tuned (backbone 1 x lr)"}
BATCH = 8
TASKS = {
    "si_nmr": dict(source="si_nmr/train.json", n_test=67, n_val=30, unit="ppm", steps=150,
                   target={"shielding": {"key": "nmr_tensor", "level": "atom", "rank": 2, "unit": "ppm"}},
                   what="new property: 29Si NMR shielding tensor (per labelled Si atom, ppm)"),
    "water_eps": dict(source="water_bulk/train.xyz", n_test=60, n_val=20, unit="", steps=50,
                      target={"epsilon": {"key": "epsilon", "level": "structure", "rank": 2, "reduce": "mean",
                                          "symmetry": "ij=ji"}},
                      what="held-out family: liquid water boxes (32 H2O), eps_inf"),
}


def write_subset_si_nmr(src: Path, ids: list[str], path: Path) -> None:
    """The MatTen JSON layout (every field a dict keyed by structure id), restricted to ``ids``."""
    data = json.loads(src.read_text())
    path.write_text(json.dumps({field: {i: values[i] for i in ids} for field, values in data.items()}))


def split(task: str, spec: dict, work: Path) -> dict:
    """Write the test / validation / nested training files of a task; returns their paths."""
    import ase.io

    src = DATA / spec["source"]
    rng = np.random.default_rng(0)
    if src.suffix == ".json":
        ids = sorted(json.loads(src.read_text())["structure"], key=int)
        order = [ids[i] for i in rng.permutation(len(ids))]
        write = lambda sel, path: write_subset_si_nmr(src, sel, path)  # noqa: E731
        ext = ".json"
    else:
        frames = ase.io.read(src, ":")
        order = [frames[i] for i in rng.permutation(len(frames))]
        write = lambda sel, path: ase.io.write(path, sel, format="extxyz")  # noqa: E731
        ext = ".extxyz"
    n_test, n_val = spec["n_test"], spec["n_val"]
    files = {"test": work / f"{task}_test{ext}", "val": work / f"{task}_val{ext}"}
    write(order[:n_test], files["test"])
    write(order[n_test:n_test + n_val], files["val"])
    pool = order[n_test + n_val:]
    if len(pool) < max(SIZES):
        raise SystemExit(f"{task}: only {len(pool)} structures left for training, need {max(SIZES)}")
    for n in SIZES:
        files[n] = work / f"{task}_train{n}{ext}"
        write(pool[:n], files[n])
    return files


def run_config(task: str, spec: dict, files: dict, n: int, arm: str, steps: int, run_dir: Path) -> dict:
    """The training config of one run: equal steps for both arms (epochs = steps / batches per epoch)."""
    epochs = max(1, math.ceil(steps / math.ceil(n / BATCH)))
    cfg = {
        "targets": spec["target"],
        "data": {"train": str(files[n]), "val": str(files["val"]), "test": str(files["test"])},
        "training": {"batch_size": BATCH, "lr": 1e-3, "lr_schedule": "cosine", "min_lr": 1e-5,
                     "max_epochs": epochs, "warmup_epochs": 1, "early_stopping_patience": 10 ** 6,
                     "max_time": 60, "progress": False},
        "run_dir": str(run_dir),
    }
    if arm in BACKBONE_LR:
        cfg["init_from"] = "dielectric-v1"
        cfg["training"]["backbone_lr_factor"] = BACKBONE_LR[arm]
    else:  # dielectric-v1's architecture, trained from random weights
        from etgnn.config import source_architecture

        cfg["model"] = source_architecture({"init_from": "dielectric-v1"})
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None,
                    help="optimisation steps per run, both arms (default: 150 for si_nmr, 50 for the 5x costlier water boxes)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=["scratch", *BACKBONE_LR],
                    help="finetuned: backbone at 0.1 x lr; finetuned_full: backbone at the heads' lr")
    ap.add_argument("--out", type=Path, default=_bench.RESULTS / "finetune")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    for task in args.tasks:
        if not (DATA / TASKS[task]["source"]).exists():
            print(f"skipped: {DATA / TASKS[task]['source']} absent")
            return 0
    meta = _bench.machine(threads=int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    meta.update(command="python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
                batch_size=BATCH, note=args.note)
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "finetune_runs.json"
    rows = json.loads(partial.read_text()) if partial.exists() else []
    done = {(r["task"], r["n_train"], r["arm"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="etgnn_finetune_") as tmp:
        work = Path(tmp)
        for task in args.tasks:
            spec = TASKS[task]
            files = split(task, spec, work)
            (name, tcfg), = spec["target"].items()
            for n in args.sizes:
                for arm in args.arms:
                    if (task, n, arm) in done:
                        continue
                    steps = args.steps or spec["steps"]
                    cfg = run_config(task, spec, files, n, arm, steps, work / f"run_{task}_{n}_{arm}")
                    print(f"{task} n={n} {arm}: {cfg['training']['max_epochs']} epochs", flush=True)
                    t0 = time.perf_counter()
                    result = train(cfg)
                    wall = time.perf_counter() - t0
                    test = result.metrics["test"][name]
                    rows.append(dict(task=task, n_train=n, arm=arm, steps=steps, epochs=result.epochs_run,
                                     best_epoch=result.best_epoch, wall_s=round(wall, 1),
                                     test_mae=test["mae"], test=test))
                    print(f"  test MAE {test['mae']:.4g} {spec['unit']} ({wall:.0f} s)", flush=True)
                    partial.write_text(json.dumps(rows, indent=1))
    report(rows, meta, args.out)
    return 0


def report(rows: list, meta: dict, out: Path) -> None:
    """finetune.md/.json (table per task) and finetune.png (test MAE against training-set size)."""
    lines = ["# Fine-tuned from dielectric-v1 vs from scratch, equal steps", "",
             f"Command: `{meta['command']}`", "", _bench.header_line(meta), "",
             f"Every run of a task: the same number of optimisation steps of batch {BATCH} (column steps; equal "
             "compute for both arms: same architecture), cosine anneal from 1e-3, best epoch on a fixed validation set; test MAE "
             "on a fixed held-out test set. Fine-tuned: init_from dielectric-v1 with the backbone's learning rate "
             "0.1 x or 1 x the heads' (training.backbone_lr_factor). Wall-clock seconds include graph "
             "building and evaluation and depend on the machine's load (a shared 2-core CPU).",
             *([f"Note: {meta['note']}"] if meta.get("note") else []), ""]
    for task, spec in TASKS.items():
        sel = [r for r in rows if r["task"] == task]
        if not sel:
            continue
        unit = f" ({spec['unit']})" if spec["unit"] else ""
        arms = [a for a in ("scratch", *BACKBONE_LR) if any(r["arm"] == a for r in sel)]
        lines += [f"## {task}: {spec['what']}", "",
                  "| n train | steps | " + " | ".join(f"{ARM_LABEL[a]} MAE{unit}" for a in arms)
                  + " | " + " | ".join(f"{ARM_LABEL[a]} s" for a in arms) + " |",
                  "|---|---|" + "---|" * (2 * len(arms))]
        for n in sorted({r["n_train"] for r in sel}):
            by = {r["arm"]: r for r in sel if r["n_train"] == n}
            cell = lambda a, key, fmt: format(by[a][key], fmt) if a in by else "-"  # noqa: E731
            lines.append(f"| {n} | {next(iter(by.values()))['steps']} | "
                         + " | ".join(cell(a, "test_mae", ".4g") for a in arms) + " | "
                         + " | ".join(cell(a, "wall_s", ".0f") for a in arms) + " |")
        lines.append("")
    _bench.write_results(out, "finetune", {"meta": meta, "runs": rows}, "\n".join(lines) + "\n")
    plot(rows, out / "finetune.png")


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for arm, style in (("scratch", "o--"), ("finetuned", "s-"), ("finetuned_full", "^-")):
            sel = sorted((r["n_train"], r["test_mae"]) for r in rows if r["task"] == task and r["arm"] == arm)
            if sel:
                ax.semilogx(*zip(*sel), style, label=ARM_LABEL[arm])
        unit = TASKS[task]["unit"]
        ax.set(xlabel="training structures", ylabel=f"test MAE{f' ({unit})' if unit else ''}", title=task)
        ax.set_xticks(SIZES, [str(n) for n in SIZES])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
