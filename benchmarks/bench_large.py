#!/usr/bin/env python
"""Cost of large structures: time, atoms/s and peak memory from 100 to 50,000 atoms.

For NaCl supercells and supercells of one phonondb crystal, at the paper's size (hidden 128, 4
blocks, 128 triplet features, 6/4 Angstrom cutoffs, float32, one thread), random weights:

* inference: one ``torch.no_grad`` forward of the whole cell (after one warm-up call for cells of
  up to 2,000 atoms), graph construction timed separately;
* training step: forward + backward + AdamW step on the real-sized cell (loss: squared outputs),
  after one warm-up step (the steady state of training; ``bench_large.md`` of 2026-12-04 timed the
  first step of cells over 2,000 atoms).

Each measurement runs in a fresh subprocess (its peak RSS, ``ru_maxrss``, is its own) and the
code versions are interleaved: for each size the *before* version (``--before-src``, e.g. a
``git worktree`` of commit 1f22bf8) runs right before the *after* version (this checkout).
A reference row measures batches of 16 small phonondb crystals, the throughput a large cell
should match.

Usage::

    git worktree add /tmp/base 1f22bf8
    python benchmarks/bench_large.py --before-src /tmp/base/src      # about 20-30 minutes
    python benchmarks/bench_large.py --quick                          # smoke run (small sizes)

Results: ``benchmarks/results/bench_large.{json,md}``; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402  (benchmarks/_bench.py: machine header, timing, results files)

REPO = _bench.REPO
DATA = REPO / ".." / "shared" / "data" / "phonondb_bec_eps" / "train.xyz"
OUT = REPO / "benchmarks" / "results"
GB = 1e9
MODEL = {"hidden_channels": 128, "triplet_channels": 128, "num_blocks": 4, "cutoff": 6.0, "triplet_cutoff": 4.0}
TARGETS = {"born_charges": {"key": "becs", "level": "atom", "rank": 2},
           "epsilon": {"key": "eps", "level": "structure", "rank": 2, "symmetry": "ij=ji"}}


# ------------------------------------------------------------------------------ structures
def supercell(kind: str, n_atoms: int, data: Path):
    """A supercell of about ``n_atoms`` atoms: NaCl (8-atom cubic cell) or the first phonondb
    crystal of ``data`` with 8 atoms or more (an orthogonal-ish repeat of its primitive cell)."""
    import ase.io
    from ase.build import bulk

    if kind == "nacl":
        unit = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    else:
        unit = next(a for a in ase.io.iread(str(data)) if len(a) >= 8)
    n = max(1, n_atoms / len(unit)) ** (1 / 3)
    reps = [max(1, int(n)), max(1, int(n)), max(1, int(n))]
    k = 0
    while len(unit) * reps[0] * reps[1] * reps[2] < 0.95 * n_atoms:
        reps[k % 3] += 1
        k += 1
    atoms = unit.repeat(reps)
    atoms.info.clear()
    atoms.arrays = {key: v for key, v in atoms.arrays.items() if key in ("numbers", "positions")}
    return atoms


def small_batches(data: Path, n_batches: int = 4, size: int = 16):
    """``n_batches`` seeded random batches of ``size`` phonondb crystals (the small-crystal reference)."""
    import ase.io
    import numpy as np

    frames = ase.io.read(str(data), index=":")
    rng = np.random.default_rng(0)
    return [[frames[k] for k in rng.choice(len(frames), size, replace=False)] for _ in range(n_batches)]


# ------------------------------------------------------------------------------ worker
def rss_now() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GB


def worker(args) -> dict:
    sys.path.insert(0, str(Path(args.src).resolve()))
    import torch

    torch.set_num_threads(1)
    import etgnn
    from etgnn.data.batch import collate

    model_cfg = dict(MODEL)
    if args.checkpoint:
        model_cfg["checkpoint"] = args.checkpoint
    if args.budget is not None:
        model_cfg["checkpoint_budget_gb"] = args.budget
    model = etgnn.build_model({"model": model_cfg, "targets": TARGETS})
    if args.kind == "batches":
        structures_per_step = small_batches(Path(args.data))
    else:
        structures_per_step = [[supercell(args.kind, args.size, Path(args.data))]]
    t0 = time.perf_counter()
    batches = [collate([model.graph(a) for a in structs]) for structs in structures_per_step]
    graph_s = (time.perf_counter() - t0) / len(batches)
    n_atoms = [int(b["_numbers"].shape[0]) for b in batches]
    n_trip = [int(b["_triplet_a"].shape[0]) for b in batches]
    base = rss_now()
    times, cpu = [], []
    # training is many steps: measure the steady state, after one step has touched the activations'
    # pages (a first step on a cell whose activations take 16 GB spends ~40 s in page faults here)
    warm = args.mode == "train" or sum(n_atoms) / len(n_atoms) <= 2000
    if args.mode == "infer":
        model.eval()

        def step(b):
            with torch.no_grad():
                model(b)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(b):
            out = model(b)
            loss = sum(v.square().mean() for v in out.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    if warm:
        step(batches[0])
    for b in batches:
        c0, t0 = time.process_time(), time.perf_counter()
        step(b)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
    total_atoms = sum(n_atoms)
    return {"n_atoms": n_atoms[0] if len(n_atoms) == 1 else total_atoms / len(n_atoms),
            "triplets_per_atom": sum(n_trip) / total_atoms, "graph_s": graph_s,
            "time_s": sum(times) / len(times), "atoms_per_s": total_atoms / sum(times),
            "atoms_per_cpu_s": total_atoms / sum(cpu), "peak_rss_gb": peak, "rss_before_gb": base,
            "warm_up": warm, "load_1min": os.getloadavg()[0]}


def run_one(src: str, kind: str, size: int, mode: str, data: Path, checkpoint: str | None, timeout: int,
            budget: float | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--src", src, "--kind", kind, "--size", str(size),
           "--mode", mode, "--data", str(data)] + (["--checkpoint", checkpoint] if checkpoint else [])
    cmd += ["--budget", str(budget)] if budget is not None else []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH="")
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"error": f"exit {proc.returncode}: {tail[0][:200]}"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.time() - t0
    return res


# ------------------------------------------------------------------------------ plan and report
def plan(quick: bool, part: str = "all"):
    """(kind, size, mode, versions) rows; versions: 'before', 'after', 'after+ckpt' and
    'after+ckpt<N>GB' (``model.checkpoint_budget_gb: N``)."""
    if quick:
        return [("batches", 0, "infer", ("after",)), ("nacl", 100, "infer", ("after",)),
                ("nacl", 200, "train", ("after", "after+ckpt", "after+ckpt0.05GB"))]
    if part == "infer":  # the inference rows of this checkout only (no 'before')
        return [("batches", 0, "infer", ("after",))] + [("nacl", n, "infer", ("after",)) for n in (1000, 10000, 50000)]
    if part == "train":  # the training rows of this checkout only (no 'before')
        return [("batches", 0, "train", ("after",)), ("nacl", 1000, "train", ("after", "after+ckpt", "after+ckpt3GB")),
                ("nacl", 10000, "train", ("after+ckpt", "after+ckpt16GB"))]
    rows = [("batches", 0, "infer", ("before", "after")), ("batches", 0, "train", ("before", "after"))]
    for n in (100, 1000, 2000, 5000, 10000):
        rows.append(("nacl", n, "infer", ("before", "after")))
    rows.append(("nacl", 50000, "infer", ("after",)))
    for n in (1000, 5000):
        rows.append(("phonondb", n, "infer", ("before", "after")))
    for n in (100, 1000):
        rows.append(("nacl", n, "train", ("before", "after", "after+ckpt")))
    for n in (5000, 10000):
        rows.append(("nacl", n, "train", ("after+ckpt",)))
    return rows


def version_options(version: str) -> tuple[str | None, float | None]:
    """``(model.checkpoint, model.checkpoint_budget_gb)`` of a version name of :func:`plan`."""
    if not version.startswith("after+ckpt"):
        return None, None
    budget = version[len("after+ckpt"):].removesuffix("GB")
    return "chunks", float(budget) if budget else None


def to_markdown(res: dict) -> str:
    lines = ["# Large structures (`benchmarks/bench_large.py`)", "",
             f"- date: {res['date']}; " + (f"before: commit `{res['before_commit']}`, "
                                           if any(r["version"] == "before" for r in res["rows"]) else "")
             + f"after: commit `{res['after_commit']}`" + (f"; CPU: {res['cpu']}" if "cpu" in res else ""),
             "- random model at the paper's size (hidden 128, 4 blocks, 128 triplet features, 6/4 Å), "
             "float32, one thread, glibc malloc; every number from a fresh process; GB = 10^9 bytes",
             "- after: default `model.chunk_triplets: 16384`; `after+ckpt`: also `model.checkpoint: chunks`; "
             "`after+ckptNGB`: and `model.checkpoint_budget_gb: N`",
             "- `batches`: 4 seeded batches of 16 phonondb crystals (the small-crystal reference)",
             "- other jobs share this 2-core machine: the load (1 min) is printed per row; atoms per "
             "CPU-second is the figure least affected by it", "",
             "| structure | atoms | mode | version | time (s) | atoms/s | atoms/CPU-s | peak RSS (GB) | "
             "RSS before step (GB) | graph (s) | load |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        m = r["result"]
        if "error" in m:
            lines.append(f"| {r['kind']} | ~{r['size']} | {r['mode']} | {r['version']} | {m['error']} | | | | | | |")
            continue
        lines.append(f"| {r['kind']} | {m['n_atoms']:.0f} | {r['mode']} | {r['version']} | {m['time_s']:.2f} | "
                     f"{m['atoms_per_s']:.0f} | {m['atoms_per_cpu_s']:.0f} | {m['peak_rss_gb']:.2f} | "
                     f"{m['rss_before_gb']:.2f} | {m['graph_s']:.2f} | {m['load_1min']:.1f} |")
    return "\n".join(lines) + "\n"


cpu_model = _bench.cpu_model


def _commit(src: str) -> str:
    try:
        return subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before-src", default="/tmp/base/src", help="src/ of the code version to compare with")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--part", choices=("all", "train", "infer"), default="all",
                   help="train / infer: only the training / inference rows, of this checkout "
                        "(bench_large_train.{json,md} / bench_large_infer.{json,md})")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per measurement")
    # worker arguments
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if not args.data.is_file():
        sys.exit(f"bench_large: data file {args.data} not found (phonondb_bec_eps/train.xyz; see --data)")
    after_src = str(REPO / "src")
    if not args.quick and args.part == "all" and not Path(args.before_src, "etgnn").is_dir():
        sys.exit(f"bench_large: no etgnn package under --before-src {args.before_src}")
    res = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "before_commit": _commit(args.before_src), "after_commit": _commit(after_src), "cpu": cpu_model(),
           "rows": []}
    for kind, size, mode, versions in plan(args.quick, args.part):
        for version in versions:
            src = args.before_src if version == "before" else after_src
            ckpt, budget = version_options(version)
            m = run_one(src, kind, size, mode, args.data, ckpt, args.timeout, budget)
            res["rows"].append({"kind": kind, "size": size, "mode": mode, "version": version, "result": m})
            print(kind, size, mode, version, json.dumps(m), flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            name = "bench_large_quick" if args.quick else "bench_large" if args.part == "all" else f"bench_large_{args.part}"
            _bench.write_results(args.out, name, res, to_markdown(res))


if __name__ == "__main__":
    main()
