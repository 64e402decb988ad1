#!/usr/bin/env python
"""Is reduced precision or ``torch.compile`` worth an inference option?

Two questions, answered on this machine (one thread):

* **accuracy**: predictions of a trained model on its own test split with bfloat16 / float16
  autocast and with ``torch.compile``, compared with its float32 eager predictions; an option is
  acceptable only if the mean absolute deviation is below a tenth of the model's test MAE;
* **speed**: inference time of a random model at the paper's size (hidden 128, 4 blocks, 128
  triplet features, 6/4 Angstrom cutoffs) on a NaCl supercell, eager float32 vs the same variants.

Usage (the model: ``etgnn train examples/quickstart.yaml training.max_time=120 run_dir=/tmp/qs``)::

    OMP_NUM_THREADS=1 python benchmarks/bench_precision.py --checkpoint /tmp/qs/best.ckpt

Results: ``benchmarks/results/bench_precision.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402  (benchmarks/_bench.py: machine header, timing, results files)

REPO = _bench.REPO
OUT = REPO / "benchmarks" / "results"
VARIANTS = ("float32", "bfloat16", "float16", "compile")


def _context(variant: str):
    if variant in ("bfloat16", "float16"):
        return torch.autocast("cpu", dtype=getattr(torch, variant))
    return contextlib.nullcontext()


def _runner(model, variant: str):
    if variant == "compile":
        return torch.compile(model, dynamic=True)
    return model


def predict(model, graphs, variant: str, batch_size: int = 16) -> dict[str, np.ndarray]:
    """``{target: values of all structures concatenated}`` (float64) for one variant."""
    from etgnn.data.batch import collate

    run = _runner(model, variant)
    out: dict[str, list] = {}
    with torch.no_grad(), _context(variant):
        for k in range(0, len(graphs), batch_size):
            batch = collate(graphs[k : k + batch_size], dtype=model.dtype)
            for name, value in run(batch).items():
                out.setdefault(name, []).append(value.double().numpy())
    return {name: np.concatenate(v) for name, v in out.items()}


def accuracy(checkpoint: Path) -> dict:
    from etgnn.data.dataset import make_splits
    from etgnn.model import load_model

    model = load_model(checkpoint).eval()
    metrics = json.loads((checkpoint.parent / "metrics.json").read_text())["test"]
    graphs = make_splits(model.config, progress=False)["test"].graphs
    ref = predict(model, graphs, "float32")
    rows = {}
    for variant in VARIANTS[1:]:
        try:
            got = predict(model, graphs, variant)
        except Exception as exc:  # e.g. no C compiler for torch.compile
            rows[variant] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        rows[variant] = {name: {"mean_abs_dev": float(np.abs(got[name] - ref[name]).mean()),
                                "test_mae": metrics[name]["mae"],
                                "ratio_to_test_mae": float(np.abs(got[name] - ref[name]).mean()) / metrics[name]["mae"]}
                         for name in ref}
    return {"checkpoint": str(checkpoint), "n_test_structures": len(graphs), "variants": rows}


def speed(repeat: tuple[int, int, int], repeats: int) -> dict:
    from ase.build import bulk

    import etgnn
    from etgnn.data.batch import collate

    cfg = {"model": {"hidden_channels": 128, "triplet_channels": 128, "num_blocks": 4},
           "targets": {"born_charges": {"key": "becs", "level": "atom", "rank": 2},
                       "epsilon": {"key": "eps", "level": "structure", "rank": 2, "symmetry": "ij=ji"}}}
    model = etgnn.build_model(cfg).eval()
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    batch = collate([model.graph(atoms)])
    rows = {}
    for variant in VARIANTS:
        run = _runner(model, variant)
        times = []
        try:
            with torch.no_grad(), _context(variant):
                t0 = time.perf_counter()
                run(batch)  # warm-up (compiles)
                first = time.perf_counter() - t0
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    run(batch)
                    times.append(time.perf_counter() - t0)
        except Exception as exc:
            rows[variant] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        med = statistics.median(times)
        rows[variant] = {"first_call_s": first, "median_s": med, "atoms_per_s": len(atoms) / med, "times_s": times}
    return {"n_atoms": len(atoms), "variants": rows}


def to_markdown(res: dict) -> str:
    acc, spd = res["accuracy"], res["speed"]
    lines = ["# Reduced precision and torch.compile (`benchmarks/bench_precision.py`)", "",
             f"- date: {res['date']}, torch {torch.__version__}, {res['threads']} thread(s)",
             f"- accuracy: `{acc['checkpoint']}` on its test split ({acc['n_test_structures']} structures): "
             "mean |variant - float32 eager| vs the model's test MAE (acceptable: ratio < 0.1)", "",
             "| variant | target | mean abs deviation | test MAE | ratio |", "|---|---|---:|---:|---:|"]
    for variant, rows in acc["variants"].items():
        if "error" in rows:
            lines.append(f"| {variant} | – | {rows['error']} | | |")
            continue
        for name, r in rows.items():
            lines.append(f"| {variant} | {name} | {r['mean_abs_dev']:.2e} | {r['test_mae']:.2e} | "
                         f"{r['ratio_to_test_mae']:.3f} |")
    lines += ["", f"- speed: random model at the paper's size on a {spd['n_atoms']}-atom NaCl cell, "
              "median of the calls after the first", "",
              "| variant | first call (s) | median (s) | atoms/s |", "|---|---:|---:|---:|"]
    for variant, r in spd["variants"].items():
        if "error" in r:
            lines.append(f"| {variant} | {r['error']} | | |")
        else:
            lines.append(f"| {variant} | {r['first_call_s']:.2f} | {r['median_s']:.2f} | {r['atoms_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import datetime

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/qs/best.ckpt"))
    parser.add_argument("--repeat", type=int, nargs=3, default=(4, 4, 4), help="NaCl supercell of the speed test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    res = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "threads": torch.get_num_threads(), "accuracy": accuracy(args.checkpoint),
           "speed": speed(tuple(args.repeat), args.repeats)}
    args.out.mkdir(parents=True, exist_ok=True)
    _bench.write_results(args.out, "bench_precision", res, to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
