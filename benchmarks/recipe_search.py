#!/usr/bin/env python
"""Recipe search on phonondb Born charges and dielectric tensors (issue 10, item 2).

Each variant is the shipped example ``examples/phonondb_bec_eps.yaml`` with a few overrides,
trained for the same wall-clock budget on one thread, on the same split of
``phonondb_bec_eps/train.xyz`` (72 % train, 18 % validation for early stopping and learning-rate
decay, 10 % held-out test, ``split_seed`` 0); the best checkpoint's test MAE is recorded.
Variants run one after the other in fresh processes, and the machine's load is recorded per
run (a busy machine gives a variant fewer epochs in its budget).

Usage::

    python benchmarks/recipe_search.py --minutes 7                # all variants
    python benchmarks/recipe_search.py --minutes 1 --variants base ema   # a quick look

Writes ``benchmarks/results/recipe_search.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "phonondb_bec_eps.yaml"
OUT = ROOT / "benchmarks" / "results"

#: variant -> (what it changes, overrides of the example config)
VARIANTS = {
    "base": ("the example as shipped (hidden 64, 3 blocks, lr 1e-3, batch 16, Euclidean loss)", []),
    "paper_size": ("the paper's size: hidden 128, triplet 128, 4 blocks",
                   ["model.hidden_channels=128", "model.triplet_channels=128", "model.num_blocks=4"]),
    "ema": ("EMA of the weights, decay 0.999", ["training.ema_decay=0.999"]),
    "lr_3e-3": ("initial learning rate 3e-3", ["training.lr=0.003"]),
    "batch_8": ("batch of 8 structures", ["training.batch_size=8"]),
    "mse_loss": ("mean squared error loss for both targets",
                 ["targets.born_charges.loss=mse", "targets.epsilon.loss=mse"]),
    "radial_12": ("12 radial basis functions (default 6)", ["model.num_radial=12"]),
    "eps_weight_3": ("dielectric loss weight 3 (Born charges 1)", ["targets.epsilon.weight=3"]),
    "combined": ("EMA 0.999 + 12 radial functions + dielectric weight 3 (the three that helped)",
                 ["training.ema_decay=0.999", "model.num_radial=12", "targets.epsilon.weight=3"]),
    "base_again": ("the example as shipped, run again later (how much the load moves the result)", []),
}


def run_variant(name: str, overrides: list[str], minutes: float, work: Path) -> dict:
    """Train one variant in a fresh process; its test metrics, epochs and load."""
    run_dir = work / name
    args = [sys.executable, "-m", "etgnn.cli", "train", str(EXAMPLE), "--no-progress",
            "data.split=[0.72,0.18,0.10]", "data.split_seed=0", f"training.max_time={minutes}",
            f"run_dir={run_dir}", *overrides]
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        return {"variant": name, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if "test" not in metrics:
        return {"variant": name, "error": f"no epoch completed in {minutes:g} min"}
    test = metrics["test"]
    return {
        "variant": name, "overrides": overrides, "wall_s": wall, "load_1min_start": load0,
        "load_1min_end": os.getloadavg()[0], "epochs": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
        "stopped": metrics["stopped"],
        "bec_mae": test["born_charges"]["mae"], "bec_baseline_mae": test["born_charges"]["baseline_mae"],
        "eps_mae": test["epsilon"]["mae"], "eps_baseline_mae": test["epsilon"]["baseline_mae"],
        "n_test_atoms": test["born_charges"]["n"], "n_test_structures": test["epsilon"]["n"],
    }


def render(res: dict) -> str:
    rows = res["runs"]
    base = next((r for r in rows if r["variant"] == "base" and "error" not in r), None)
    lines = [
        "# Recipe search: phonondb Born charges and dielectric tensors (`benchmarks/recipe_search.py`)", "",
        f"- date {res['date']}, commit `{res['commit']}`; {res['minutes']:g} min of training per variant, "
        "one torch thread, variants one after the other on a shared 2-core machine (load per run below)",
        "- each variant: `examples/phonondb_bec_eps.yaml` plus its overrides; split of `phonondb_bec_eps/train.xyz` "
        "72 / 18 / 10 % (train / validation / held-out test, seed 0); test MAE of the best checkpoint",
        "- BEC MAE over all 9 components of every test atom (e); eps_inf MAE over its 9 components",
        *[f"- later run merged in: {m['date']}, commit `{m['commit']}`: {', '.join(m['variants'])}"
          for m in res.get("merged", [])], "",
        "| variant | change | epochs (best) | BEC MAE (e) | vs base | eps MAE | vs base | load (1 min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {VARIANTS[r['variant']][0]} | failed: {r['error']} | | | | | |")
            continue
        rel_b = f"{r['bec_mae'] / base['bec_mae']:.3f}" if base else "-"
        rel_e = f"{r['eps_mae'] / base['eps_mae']:.3f}" if base else "-"
        lines.append(f"| {r['variant']} | {VARIANTS[r['variant']][0]} | {r['epochs']} ({r['best_epoch']}) | "
                     f"{r['bec_mae']:.4f} | {rel_b} | {r['eps_mae']:.4f} | {rel_e} | "
                     f"{r['load_1min_start']:.1f}-{r['load_1min_end']:.1f} |")
    if base:
        lines += ["", f"Baselines on the same test structures (per-element mean BEC, mean eps of the training part): "
                      f"BEC {base['bec_baseline_mae']:.4f} e, eps {base['eps_baseline_mae']:.4f}; "
                      f"{base['n_test_structures']} test crystals, {base['n_test_atoms']} atoms."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=7.0, help="training budget per variant (minutes)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "recipe_search")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of recipe_search.json for variants not run now (same --minutes only)")
    args = ap.parse_args(argv)
    if not (ROOT.parent / "shared" / "data" / "phonondb_bec_eps" / "train.xyz").is_file():
        print("recipe_search: ../shared/data/phonondb_bec_eps/train.xyz not found", file=sys.stderr)
        return 2
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"), "commit": commit,
           "minutes": args.minutes, "runs": []}
    args.out.mkdir(parents=True, exist_ok=True)
    kept = []
    if args.merge and (args.out / "recipe_search.json").is_file():
        old = json.loads((args.out / "recipe_search.json").read_text())
        if old["minutes"] != args.minutes:
            print(f"recipe_search: --merge needs the same budget as the kept rows ({old['minutes']:g} min)",
                  file=sys.stderr)
            return 2
        kept = [dict(r, commit=r.get("commit", old["commit"])) for r in old["runs"]
                if r["variant"] not in args.variants]
        res["date"], res["commit"] = old["date"], old["commit"]
        res["merged"] = res.get("merged", []) + [{"date": dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="minutes"), "commit": commit, "variants": args.variants}]
    res["runs"] = kept
    for name in args.variants:
        rec = dict(run_variant(name, VARIANTS[name][1], args.minutes, args.work), commit=commit)
        res["runs"].append(rec)
        print(json.dumps(rec), flush=True)
        (args.out / "recipe_search.json").write_text(json.dumps(res, indent=1))
        (args.out / "recipe_search.md").write_text(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
