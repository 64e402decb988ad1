#!/usr/bin/env python
"""Training and inference cost of etgnn at the ETGNN paper's hyperparameters.

Measures what the "Core" issue asks for, on batches of 16 crystals from
``phonondb_bec_eps/train.xyz``:

* per training step (forward + backward + AdamW step): median wall time of 10 steps after 2
  warm-ups, atoms/s, peak resident memory (RSS);
* inference (``torch.no_grad`` forward): median time, atoms/s, peak RSS;
* graph construction time per structure (:func:`etgnn.data.graph.build_graph`), neighbours and
  triplets per atom;
* how step time and memory grow with the edge cutoff (4-7 Angstrom) and with structure size
  (1x1x1, 2x2x2, 3x3x3 supercells of a few structures).

Every configuration runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own.
Inside a subprocess inference runs first, then training: the inference peak is exact and the
training peak is the process peak (training keeps activations for backward, so it is the larger).

Results go to ``benchmarks/results/bench_model.json`` and ``bench_model.md``.  See
``benchmarks/README.md``.

Usage::

    python benchmarks/bench_model.py                 # full run (about 10-20 minutes on 2 cores)
    python benchmarks/bench_model.py --quick         # smoke run
    python benchmarks/bench_model.py --against 1f22bf8 --threads 1   # this checkout vs etgnn 0.1.0

``--against REV`` runs only the headline configuration (no neighbour truncation), interleaved,
for three versions: the source of git revision ``REV`` (etgnn 0.1.0 is ``1f22bf8``), this checkout
with 0.1.0's expansion (``mixed``, ``chiral``, ``four_body`` and ``smooth_triplets`` off: the
same arithmetic, so any difference is the code's organisation), and this checkout as it is
(the complete expansion).  Results go to ``bench_model_versions.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402  (benchmarks/_bench.py: machine header, timing, results files)

REPO = _bench.REPO
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "phonondb_bec_eps" / "train.xyz"
DEFAULT_OUT = REPO / "benchmarks" / "results"

#: The authors' public implementation on this machine, same hyperparameters and batches (issue "Core").
AUTHORS = {
    "train_step_s": 16.0,
    "train_atoms_per_s": 7.7,
    "infer_atoms_per_s": 26.0,
    "peak_rss_gb": 9.3,
    "triplets_per_atom": 960.0,
}
#: Goals of the issue: >= 10x the authors' training throughput, <= a quarter of their memory.
GOALS = {
    "train_atoms_per_s": 10 * AUTHORS["train_atoms_per_s"],
    "peak_rss_gb": AUTHORS["peak_rss_gb"] / 4,
}

#: The paper's hyperparameters (the rest are etgnn's defaults, which are the paper's too).
PAPER_MODEL = {
    "hidden_channels": 128,
    "triplet_channels": 128,
    "num_blocks": 4,
    "cutoff": 6.0,
    "triplet_cutoff": 4.0,
    "activation": "elu",
    "radial_basis": "bessel",
    "cutoff_function": "cosine",
}
#: Joint Born-charge + dielectric model; label keys as stored in phonondb_bec_eps.
TARGETS = {
    "born_charges": {"key": "becs", "level": "atom", "rank": 2},
    "epsilon": {"key": "eps", "level": "structure", "rank": 2, "symmetry": "ij=ji"},
}
GB = 1e9  # memory is reported in GB = 10^9 bytes (the stricter reading of the authors' "9.3 GB")


# ---------------------------------------------------------------------------------------------
# memory helpers
def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc/self/statm``; else the peak so far)."""
    try:
        with open("/proc/self/statm") as fh:
            resident_pages = int(fh.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# ---------------------------------------------------------------------------------------------
# worker: one configuration in this (fresh) process
def _labels(atoms, np):
    return {
        "born_charges": np.asarray(atoms.arrays[TARGETS["born_charges"]["key"]], dtype=float).reshape(-1, 3, 3),
        "epsilon": np.asarray(atoms.info[TARGETS["epsilon"]["key"]], dtype=float).reshape(3, 3),
    }


def _graph_stats(graphs, max_neighbors) -> dict:
    """Edges and triplets per atom; ``all_pairs`` counts every ordered pair of a centre's edges,
    i.e. the triplets of a model without a separate triplet cutoff (the authors')."""
    import numpy as np

    n_atoms = sum(len(g["_numbers"]) for g in graphs)
    n_edges = sum(g["_edge_index"].shape[1] for g in graphs)
    n_trip = sum(g["_triplet_a"].shape[0] for g in graphs)
    pairs = 0
    for g in graphs:
        deg = np.bincount(g["_edge_index"][0], minlength=len(g["_numbers"]))
        pairs += int((deg * (deg - 1)).sum())
    return {
        "n_structures": len(graphs),
        "atoms_per_structure": n_atoms / max(len(graphs), 1),
        "neighbors_per_atom": n_edges / n_atoms,
        "triplets_per_atom": n_trip / n_atoms,
        "all_pair_triplets_per_atom": pairs / n_atoms,
        "max_neighbors": max_neighbors,
    }


def run_worker(spec: dict) -> dict:
    """Run one configuration; returns a JSON-able dict.  Called in a fresh subprocess."""
    rss_start = current_rss_bytes()
    import numpy as np
    import torch
    from ase.io import read

    import etgnn
    from etgnn.data.batch import collate
    from etgnn.data.graph import build_graph

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    load_start = os.getloadavg()
    rss_imports = current_rss_bytes()

    t0 = time.perf_counter()
    frames = read(spec["data"], index=":")
    read_s = time.perf_counter() - t0

    cutoff, trip_cut, max_nb = spec["cutoff"], spec["triplet_cutoff"], spec["max_neighbors"]
    model_cfg = dict(PAPER_MODEL, cutoff=cutoff, triplet_cutoff=trip_cut, max_neighbors=max_nb,
                     **spec.get("model_overrides", {}))
    targets = {n: dict(t, **spec.get("target_overrides", {})) for n, t in TARGETS.items()}
    model = etgnn.build_model({"model": model_cfg, "targets": targets})
    levels = {name: t["level"] for name, t in TARGETS.items()}
    rng = np.random.default_rng(spec["seed"])
    n_batches = spec["warmup"] + spec["steps"]

    result: dict = {"spec": spec, "read_s": read_s}

    # graph construction over (a sample of) the whole data set
    if spec.get("graph_timing"):
        sample = frames[: spec["graph_timing"]]
        t0 = time.perf_counter()
        graphs = [build_graph(a, cutoff, trip_cut, max_nb) for a in sample]
        dt = time.perf_counter() - t0
        result["graph"] = dict(_graph_stats(graphs, max_nb), build_ms_per_structure=1e3 * dt / len(sample),
                               build_us_per_atom=1e6 * dt / sum(len(a) for a in sample))
        del graphs

    # the batches: random batches of `batch_size` structures, or one fixed batch of supercells
    if spec.get("supercell"):
        n = spec["supercell"]
        idx = rng.choice(len(frames), spec["n_structures"], replace=False)
        chosen = [frames[k].repeat((n, n, n)) for k in idx]
        batch_structs = [chosen] * n_batches
    else:
        batch_structs = [[frames[k] for k in rng.choice(len(frames), spec["batch_size"], replace=False)]
                         for _ in range(n_batches)]
    t0 = time.perf_counter()
    batch_graphs = [[model.graph(a) for a in structs] for structs in batch_structs]
    graph_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches = [collate(gs, [_labels(a, np) for a in structs], levels)
               for gs, structs in zip(batch_graphs, batch_structs)]
    collate_s = time.perf_counter() - t0
    n_structs_built = sum(len(s) for s in batch_structs)
    result["batches"] = dict(
        _graph_stats([g for gs in batch_graphs[spec["warmup"]:] for g in gs], max_nb),
        atoms_per_batch=statistics.mean(int(b["_n_atoms"].sum()) for b in batches[spec["warmup"]:]),
        edges_per_batch=statistics.mean(int(b["_edge_index"].shape[1]) for b in batches[spec["warmup"]:]),
        triplets_per_batch=statistics.mean(int(b["_triplet_a"].shape[0]) for b in batches[spec["warmup"]:]),
        build_graph_ms_per_structure=1e3 * graph_s / n_structs_built,
        collate_ms_per_batch=1e3 * collate_s / n_batches,
    )
    del batch_graphs, batch_structs, frames

    def loss_fn(out, batch):
        # Euclidean loss: mean over tensors of the Frobenius norm of the error, summed over targets
        return sum((out[k] - batch[k]).flatten(1).norm(dim=1).mean() for k in out)

    def timed(step_fn):
        times, cpu, atoms = [], [], []
        for k, batch in enumerate(batches):
            t0, c0 = time.perf_counter(), time.process_time()
            step_fn(batch)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if k >= spec["warmup"]:
                times.append(dt)
                cpu.append(dc)
                atoms.append(int(batch["_n_atoms"].sum()))
        rates = [a / t for a, t in zip(atoms, times)]
        return {
            "step_s": times,
            "step_cpu_s": cpu,  # CPU time of all threads of this process
            "atoms_per_step": atoms,
            "median_step_s": statistics.median(times),
            "median_step_cpu_s": statistics.median(cpu),
            "atoms_per_s": statistics.median(rates),  # median over steps of atoms / step time
            "throughput_atoms_per_s": sum(atoms) / sum(times),  # total atoms / total time
            "atoms_per_cpu_s": sum(atoms) / sum(cpu),  # less sensitive to other jobs on the machine
        }

    gc_collect()
    rss_baseline = current_rss_bytes()
    peak_before = peak_rss_bytes()

    # inference first: its peak is exact in a fresh process
    model.eval()

    @torch.no_grad()
    def infer_step(batch):
        model(batch)

    infer = timed(infer_step)
    infer["peak_rss_gb"] = peak_rss_bytes() / GB

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    losses = []

    def train_step(batch):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(batch), batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    train = timed(train_step)
    train["peak_rss_gb"] = peak_rss_bytes() / GB
    train["loss_first_last"] = [losses[0], losses[-1]]
    result.update(
        train=train,
        infer=infer,
        rss={
            "at_start_gb": rss_start / GB,
            "after_imports_gb": rss_imports / GB,
            "baseline_before_first_step_gb": rss_baseline / GB,
            "peak_before_first_step_gb": peak_before / GB,
            "peak_gb": peak_rss_bytes() / GB,
        },
        torch_threads=torch.get_num_threads(),
        loadavg_start=list(load_start),
        loadavg_end=list(os.getloadavg()),
        n_parameters=sum(p.numel() for p in model.parameters()),
    )
    return result


def gc_collect() -> None:
    import gc

    gc.collect()


# ---------------------------------------------------------------------------------------------
# driver
def other_runnable_threads(seconds: float = 3.0, samples: int = 15) -> float:
    """Mean number of runnable threads on the machine besides this one, sampled over ``seconds``
    (Linux ``/proc/loadavg``; elsewhere the 1-minute load average)."""
    values = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as fh:
                running = int(fh.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return os.getloadavg()[0]
        values.append(running - 1)  # this process is running while it reads the file
        time.sleep(seconds / samples)
    return statistics.mean(values)


def wait_for_quiet(max_load: float | None, max_wait: float) -> dict:
    """Wait until at most ``max_load`` other threads are runnable, or ``max_wait`` seconds."""
    t0 = time.perf_counter()
    load = other_runnable_threads(seconds=1.0, samples=5)
    while max_load is not None and load > max_load and time.perf_counter() - t0 < max_wait:
        time.sleep(5.0)
        load = other_runnable_threads()
    return {"load": load, "waited_s": time.perf_counter() - t0, "quiet": max_load is None or load <= max_load}


#: jemalloc settings for ``--preload``: keep freed pages (no decay), so that the large per-step
#: activations do not page-fault anew every step.
JEMALLOC_CONF = "background_thread:false,dirty_decay_ms:-1,muzzy_decay_ms:-1"


def spawn(spec: dict, timeout: float, preload: str | None = None, pythonpath: str | None = None) -> dict:
    """Run ``spec`` in a fresh Python process (with ``preload`` as LD_PRELOAD, ``pythonpath``
    first on the import path) and return its result."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(x for x in (pythonpath, env.get("PYTHONPATH", "")) if x)
    if preload:
        env["LD_PRELOAD"] = " ".join(x for x in (preload, env.get("LD_PRELOAD", "")) if x)
        if "jemalloc" in Path(preload).name:
            env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec), "--worker-out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"worker failed (exit {proc.returncode}) for {spec}:\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


def _median_of_repeats(runs: list[dict]) -> dict:
    """Combine repeated runs of one configuration: the run with the median training time, plus
    the medians of the headline numbers over repeats."""
    if len(runs) == 1:
        return runs[0]
    order = sorted(runs, key=lambda r: r["train"]["median_step_s"])
    best = dict(order[len(order) // 2])
    best["repeats"] = {
        "n": len(runs),
        "train_median_step_s": [r["train"]["median_step_s"] for r in runs],
        "train_atoms_per_s": [r["train"]["atoms_per_s"] for r in runs],
        "train_atoms_per_cpu_s": [r["train"]["atoms_per_cpu_s"] for r in runs],
        "loadavg_1min": [r["loadavg_end"][0] for r in runs],
        "pre_run_other_threads": [r["pre_run"]["load"] for r in runs],
        "infer_atoms_per_s": [r["infer"]["atoms_per_s"] for r in runs],
        "peak_rss_gb": [r["rss"]["peak_gb"] for r in runs],
    }
    best["train"] = dict(best["train"], atoms_per_s=statistics.median(best["repeats"]["train_atoms_per_s"]),
                         median_step_s=statistics.median(best["repeats"]["train_median_step_s"]),
                         atoms_per_cpu_s=statistics.median(best["repeats"]["train_atoms_per_cpu_s"]))
    best["infer"] = dict(best["infer"], atoms_per_s=statistics.median(best["repeats"]["infer_atoms_per_s"]))
    best["rss"] = dict(best["rss"], peak_gb=statistics.median(best["repeats"]["peak_rss_gb"]))
    return best


def machine_info(threads) -> dict:
    """The machine and load header (:func:`_bench.machine`)."""
    return _bench.machine(threads)


def verdict(entry: dict) -> dict:
    train_rate = entry["train"]["atoms_per_s"]
    peak = entry["rss"]["peak_gb"]
    return {
        "train_speedup_vs_authors": train_rate / AUTHORS["train_atoms_per_s"],
        "infer_speedup_vs_authors": entry["infer"]["atoms_per_s"] / AUTHORS["infer_atoms_per_s"],
        "memory_fraction_of_authors": peak / AUTHORS["peak_rss_gb"],
        "train_goal_met": train_rate >= GOALS["train_atoms_per_s"],
        "memory_goal_met": peak <= GOALS["peak_rss_gb"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="extxyz file with per-atom 'becs' (n, 9) and per-structure 'eps' (9,)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for bench_model.json / bench_model.md")
    p.add_argument("--quick", action="store_true", help="smoke run: few steps, small sizes")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="measured steps (default 10; quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 2; quick 1)")
    p.add_argument("--repeats", type=int, default=None,
                   help="fresh processes per configuration, interleaved, median taken (default 3; quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cutoffs", type=float, nargs="+", default=None, help="cutoff scan, Angstrom")
    p.add_argument("--supercells", type=int, nargs="+", default=None, help="supercell scan, n for n x n x n")
    p.add_argument("--size-structures", type=int, default=None,
                   help="structures in the fixed batch of the supercell scan (default 4; quick 1)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    p.add_argument("--max-load", type=float, default=None,
                   help="before each configuration wait until at most this many other threads are runnable "
                        "(default 1.0; quick: no waiting)")
    p.add_argument("--max-wait", type=float, default=120, help="longest wait for a quiet machine, seconds")
    p.add_argument("--preload", default=None,
                   help="memory allocator library to LD_PRELOAD in the workers, e.g. "
                        "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (default: the system malloc)")
    p.add_argument("--against", default=None, metavar="REV",
                   help="compare this checkout with the source of git revision REV (e.g. 1f22bf8, etgnn 0.1.0) "
                        "on the headline configuration, interleaved (writes bench_model_versions.*)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        res = run_worker(json.loads(args.worker))
        Path(args.worker_out).write_text(json.dumps(res))
        return 0

    if args.preload and not Path(args.preload).is_file():
        print(f"bench_model: --preload {args.preload} does not exist (Debian: apt-get install libjemalloc2)",
              file=sys.stderr)
        return 2
    data = Path(args.data)
    if not data.is_file():
        print(f"bench_model: data file {data} not found.  Pass --data PATH to an extxyz file with "
              "per-atom 'becs' and per-structure 'eps' (the issue's data set is "
              "../shared/data/phonondb_bec_eps/train.xyz relative to the repository root).", file=sys.stderr)
        return 2
    q = args.quick
    steps = args.steps or (2 if q else 10)
    warmup = args.warmup if args.warmup is not None else (1 if q else 2)
    repeats = args.repeats or (1 if q else 3)
    cutoffs = args.cutoffs or ([4.0, 6.0] if q else [4.0, 5.0, 6.0, 7.0])
    supercells = args.supercells or ([1, 2] if q else [1, 2, 3])
    size_structs = args.size_structures or (1 if q else 4)
    if args.max_load is None and not q:
        args.max_load = 1.0
    base = {"data": str(data.resolve()), "batch_size": args.batch_size, "steps": steps, "warmup": warmup,
            "seed": args.seed, "threads": args.threads, "cutoff": PAPER_MODEL["cutoff"],
            "triplet_cutoff": PAPER_MODEL["triplet_cutoff"]}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"meta": machine_info(args.threads), "authors": AUTHORS, "goals": GOALS,
               "paper_model": PAPER_MODEL, "targets": TARGETS,
               "settings": {"quick": q, "steps": steps, "warmup": warmup, "repeats": repeats,
                            "max_load": args.max_load, "max_wait": args.max_wait,
                            "allocator": ({"LD_PRELOAD": args.preload, "MALLOC_CONF": os.environ.get("MALLOC_CONF", JEMALLOC_CONF)
                                           if "jemalloc" in Path(args.preload).name else os.environ.get("MALLOC_CONF")}
                                          if args.preload else "system malloc"),
                            "batch_size": args.batch_size, "seed": args.seed, "data": str(data)}}
    t_all = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_all:7.1f}s] {msg}", flush=True)

    if args.against:
        return compare_versions(args, base, results, out_dir, repeats if args.repeats else 5, log)

    graph_sample = 64 if q else 10**9
    # every configuration: (group, label, spec, extra fields of its table row)
    configs = [("main", f"headline max_neighbors={mn}", dict(base, max_neighbors=mn, graph_timing=graph_sample), {})
               for mn in (32, None)]
    for c in cutoffs:
        tc = min(PAPER_MODEL["triplet_cutoff"], c)
        if c != PAPER_MODEL["cutoff"]:  # 6 Angstrom is the headline run without truncation
            configs.append(("cutoff", f"cutoff scan {c:g} A",
                            dict(base, cutoff=c, triplet_cutoff=tc, max_neighbors=None), {}))
    for n in supercells:
        configs.append(("size", f"size scan {n}x{n}x{n} of {size_structs} structures",
                        dict(base, max_neighbors=None, supercell=n, n_structures=size_structs), {}))
    # repeats are interleaved (all configurations, then again), so that each configuration
    # samples the machine's load over the whole run rather than one stretch of it
    runs: dict[int, list] = {k: [] for k in range(len(configs))}
    for r in range(repeats):
        for k, (_, label, spec, _) in enumerate(configs):
            quiet = wait_for_quiet(args.max_load, args.max_wait)
            log(f"{label} (repeat {r + 1}/{repeats}; other runnable threads {quiet['load']:.1f}, "
                f"waited {quiet['waited_s']:.0f} s)")
            res = spawn(spec, args.timeout, args.preload)
            res["pre_run"] = quiet
            runs[k].append(res)
            log(f"  train {res['train']['median_step_s']:.3f} s/step, {res['train']['atoms_per_s']:.1f} atoms/s; "
                f"infer {res['infer']['atoms_per_s']:.1f} atoms/s; peak {res['rss']['peak_gb']:.2f} GB; "
                f"load {res['loadavg_end'][0]:.1f}")
    entries = [_median_of_repeats(runs[k]) for k in range(len(configs))]
    main_runs = [e for e, c in zip(entries, configs) if c[0] == "main"]
    for entry in main_runs:
        entry["verdict"] = verdict(entry)
    results["main"] = main_runs

    scan, it = [], iter(e for e, c in zip(entries, configs) if c[0] == "cutoff")
    for c in cutoffs:
        tc = min(PAPER_MODEL["triplet_cutoff"], c)
        entry = main_runs[1] if c == PAPER_MODEL["cutoff"] else next(it)
        scan.append(_scan_row(entry, cutoff=c, triplet_cutoff=tc))
    results["scaling_cutoff"] = scan
    sizes = [e for e, c in zip(entries, configs) if c[0] == "size"]
    results["scaling_size"] = [_scan_row(e, supercell=n, n_structures=size_structs) for e, n in zip(sizes, supercells)]

    results["meta"]["loadavg_end"] = list(os.getloadavg())
    results["meta"]["total_s"] = time.perf_counter() - t_all
    _bench.write_results(out_dir, "bench_model", results, render_markdown(results))
    log(f"wrote {out_dir / 'bench_model.json'} and {out_dir / 'bench_model.md'}")
    return 0


#: 0.1.0's expansion in this checkout: the same arithmetic as etgnn 0.1.0
OLD_EXPANSION = {"target_overrides": {"mixed": False, "chiral": False, "four_body": False},
                 "model_overrides": {"smooth_triplets": False}}


def compare_versions(args, base: dict, results: dict, out_dir: Path, repeats: int, log) -> int:
    """Headline configuration for REV's source and this checkout, interleaved; see the docstring."""
    rev = args.against
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True)
        if archive.returncode != 0:
            print(f"bench_model: git archive {rev} failed: {archive.stderr.decode().strip()}", file=sys.stderr)
            return 2
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True,
                                text=True).stdout.strip()
        spec = dict(base, max_neighbors=None)
        variants = [(f"{rev} ({commit})", spec, str(Path(tmp) / "src")),
                    ("this checkout, 0.1.0's expansion", dict(spec, **OLD_EXPANSION), str(REPO / "src")),
                    ("this checkout, complete expansion", spec, str(REPO / "src"))]
        runs: dict[str, list] = {label: [] for label, _, _ in variants}
        for r in range(repeats):
            for label, vspec, path in variants:
                quiet = wait_for_quiet(args.max_load, args.max_wait)
                res = spawn(vspec, args.timeout, args.preload, pythonpath=path)
                res["pre_run"] = quiet
                runs[label].append(res)
                log(f"{label} (repeat {r + 1}/{repeats}): train {res['train']['atoms_per_cpu_s']:.1f} atoms/CPU-s, "
                    f"infer {res['infer']['atoms_per_cpu_s']:.1f} atoms/CPU-s, peak {res['rss']['peak_gb']:.2f} GB")
    rows = []
    for label, _, _ in variants:
        rs = runs[label]
        rows.append({
            "version": label,
            "train_atoms_per_cpu_s": [r["train"]["atoms_per_cpu_s"] for r in rs],
            "infer_atoms_per_cpu_s": [r["infer"]["atoms_per_cpu_s"] for r in rs],
            "train_atoms_per_s": [r["train"]["atoms_per_s"] for r in rs],
            "infer_atoms_per_s": [r["infer"]["atoms_per_s"] for r in rs],
            "peak_rss_gb": [r["rss"]["peak_gb"] for r in rs],
            "other_runnable_threads": [r["pre_run"]["load"] for r in rs],
        })
    results["versions"] = {"against": rev, "repeats": repeats, "rows": rows}
    results["meta"]["loadavg_end"] = list(os.getloadavg())
    _bench.write_results(out_dir, "bench_model_versions", results, render_versions(results))
    log(f"wrote {out_dir / 'bench_model_versions.md'}")
    return 0


def _spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.1f} ({min(values):.1f}-{max(values):.1f})"


def render_versions(res: dict) -> str:
    """Markdown table of :func:`compare_versions`: medians (range) over the interleaved repeats."""
    v, m = res["versions"], res["meta"]
    ref = v["rows"][0]
    lines = [
        "# etgnn against an earlier version (`benchmarks/bench_model.py --against`)", "",
        f"- date: {m.get('date')}, this checkout `{m.get('git_commit')}` against `{v['against']}`",
        f"- {m.get('cpu')}; torch threads {m.get('torch_threads')}; "
        f"{v['repeats']} fresh processes per version, interleaved (version A, B, C, A, B, C, ...)",
        "- paper hyperparameters (hidden 128, 4 blocks, 128 triplet features, 6 / 4 Å, no neighbour truncation), "
        "Born charges + dielectric tensor, batches of 16 phonondb crystals, float32; per process the median "
        f"of {res['settings']['steps']} steps after {res['settings']['warmup']} warm-ups",
        "- atoms per CPU-second (the figure least affected by other jobs on this shared machine): median over "
        "processes (range); ratio = median / the first row's median", "",
        "| version | training atoms/CPU-s | ratio | inference atoms/CPU-s | ratio | peak RSS (GB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    t0 = statistics.median(ref["train_atoms_per_cpu_s"])
    i0 = statistics.median(ref["infer_atoms_per_cpu_s"])
    for row in v["rows"]:
        t, i = statistics.median(row["train_atoms_per_cpu_s"]), statistics.median(row["infer_atoms_per_cpu_s"])
        lines.append(f"| {row['version']} | {_spread(row['train_atoms_per_cpu_s'])} | {t / t0:.3f} | "
                     f"{_spread(row['infer_atoms_per_cpu_s'])} | {i / i0:.3f} | {statistics.median(row['peak_rss_gb']):.2f} |")
    return "\n".join(lines) + "\n"


def _scan_row(entry: dict, **extra) -> dict:
    b = entry["batches"]
    return dict(
        extra,
        atoms_per_batch=b["atoms_per_batch"],
        neighbors_per_atom=b["neighbors_per_atom"],
        triplets_per_atom=b["triplets_per_atom"],
        triplets_per_batch=b["triplets_per_batch"],
        build_graph_ms_per_structure=b["build_graph_ms_per_structure"],
        train_median_step_s=entry["train"]["median_step_s"],
        train_atoms_per_s=entry["train"]["atoms_per_s"],
        train_atoms_per_cpu_s=entry["train"]["atoms_per_cpu_s"],
        infer_atoms_per_s=entry["infer"]["atoms_per_s"],
        baseline_rss_gb=entry["rss"]["baseline_before_first_step_gb"],
        infer_peak_rss_gb=entry["infer"]["peak_rss_gb"],
        peak_rss_gb=entry["rss"]["peak_gb"],
        loadavg=entry["loadavg_end"],
    )


def render_markdown(res: dict) -> str:
    m, a, g, s = res["meta"], res["authors"], res["goals"], res["settings"]
    lines = [
        "# etgnn model benchmark (`benchmarks/bench_model.py`)",
        "",
        f"- date: {m['date']}, git commit `{m['git_commit']}`" + (" — **QUICK smoke run, not a measurement**" if s["quick"] else ""),
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gb']:.1f} GB RAM; "
        f"Python {m['python']}, torch {m['torch']}, {m['torch_threads']} torch threads",
        f"- load average (1, 5, 15 min) at start {_fmt_load(m['loadavg_start'])}, at end {_fmt_load(m['loadavg_end'])} "
        "(other jobs share this machine; the numbers are medians)",
        f"- model: hidden {res['paper_model']['hidden_channels']}, {res['paper_model']['num_blocks']} blocks, "
        f"{res['paper_model']['triplet_channels']} triplet features, cutoff {res['paper_model']['cutoff']} Å, "
        f"triplet cutoff {res['paper_model']['triplet_cutoff']} Å, ELU, Bessel, cosine cutoff; targets Born charges "
        "(per atom, rank 2) + dielectric tensor (per structure, symmetric), Euclidean loss, AdamW, float32",
        f"- batches: {s['batch_size']} random structures (seed {s['seed']}) from `{Path(s['data']).name}`; "
        f"median of {s['steps']} steps after {s['warmup']} warm-ups; every row: median of {s['repeats']} fresh "
        "processes, repeats interleaved across configurations" + (
            f", each started when at most {s['max_load']:g} other threads were runnable (or after "
            f"{s['max_wait']:.0f} s of waiting)" if s["max_load"] is not None else ""),
        "- memory: peak RSS (`ru_maxrss`) of a fresh process per configuration, GB = 10^9 bytes; allocator: "
        + (f"`LD_PRELOAD={s['allocator']['LD_PRELOAD']}`, `MALLOC_CONF={s['allocator']['MALLOC_CONF']}`"
           if isinstance(s.get("allocator"), dict) else "system malloc (glibc)"),
        "",
        f"## Headline: paper hyperparameters, batches of {s['batch_size']} crystals",
        "",
        "| | authors | etgnn, max_neighbors=32 | etgnn, no truncation |",
        "|---|---:|---:|---:|",
    ]
    r32, rall = res["main"]

    def row(name, auth, f, fmt):
        lines.append(f"| {name} | {auth} | {fmt.format(f(r32))} | {fmt.format(f(rall))} |")

    row("neighbours / atom", "≤ 32", lambda r: r["batches"]["neighbors_per_atom"], "{:.1f}")
    row("triplets / atom", f"≈ {a['triplets_per_atom']:.0f}", lambda r: r["batches"]["triplets_per_atom"], "{:.0f}")
    row("atoms / batch (mean)", "≈ 118", lambda r: r["batches"]["atoms_per_batch"], "{:.1f}")
    row("training step, median (s)", f"{a['train_step_s']:.0f}", lambda r: r["train"]["median_step_s"], "{:.3f}")
    row("training atoms/s", f"{a['train_atoms_per_s']}", lambda r: r["train"]["atoms_per_s"], "{:.1f}")
    row("inference atoms/s", f"{a['infer_atoms_per_s']:.0f}", lambda r: r["infer"]["atoms_per_s"], "{:.1f}")
    row("training atoms per CPU-second", "–", lambda r: r["train"]["atoms_per_cpu_s"], "{:.1f}")
    row("training atoms/s of each repeat", "–", lambda r: _per_repeat(r, "train_atoms_per_s"), "{}")
    row("inference atoms/s of each repeat", "–", lambda r: _per_repeat(r, "infer_atoms_per_s"), "{}")
    row("other runnable threads before each repeat", "–", lambda r: _per_repeat(r, "pre_run_other_threads"), "{}")
    row("load average (1 min) after each repeat", "–", lambda r: _per_repeat(r, "loadavg_1min"), "{}")
    row("peak RSS, training (GB)", f"{a['peak_rss_gb']}", lambda r: r["rss"]["peak_gb"], "{:.2f}")
    row("peak RSS, inference (GB)", "–", lambda r: r["infer"]["peak_rss_gb"], "{:.2f}")
    row("RSS before first step (GB)", "–", lambda r: r["rss"]["baseline_before_first_step_gb"], "{:.2f}")
    row("build_graph (ms / structure)", "–", lambda r: r["graph"]["build_ms_per_structure"], "{:.2f}")
    row("training speed-up vs authors", "1", lambda r: r["verdict"]["train_speedup_vs_authors"], "{:.1f}x")
    row("inference speed-up vs authors", "1", lambda r: r["verdict"]["infer_speedup_vs_authors"], "{:.1f}x")
    row("memory vs authors", "1", lambda r: r["verdict"]["memory_fraction_of_authors"], "{:.2f}")
    lines += [
        "",
        f"Goals: training ≥ {g['train_atoms_per_s']:.0f} atoms/s (10x) and peak ≤ {g['peak_rss_gb']:.3f} GB (a quarter).",
        "",
    ]
    for name, r in (("max_neighbors=32 (the authors' setting)", r32), ("no truncation (etgnn default)", rall)):
        v = r["verdict"]
        lines.append(f"- {name}: throughput goal **{'met' if v['train_goal_met'] else 'NOT met'}** "
                     f"({v['train_speedup_vs_authors']:.1f}x), memory goal "
                     f"**{'met' if v['memory_goal_met'] else 'NOT met'}** ({r['rss']['peak_gb']:.2f} GB)")
    gr = rall["graph"]
    lines += [
        "",
        f"Data set graphs ({gr['n_structures']} structures, {gr['atoms_per_structure']:.2f} atoms each): "
        f"with max_neighbors=32 {r32['graph']['neighbors_per_atom']:.1f} neighbours and "
        f"{r32['graph']['triplets_per_atom']:.0f} triplets per atom "
        f"({r32['graph']['all_pair_triplets_per_atom']:.0f} if every pair of 6 Å edges formed a triplet, as in "
        f"the authors' code); without truncation {gr['neighbors_per_atom']:.1f} neighbours and "
        f"{gr['triplets_per_atom']:.0f} triplets per atom.",
        "",
        "## Scaling with the cutoff (no truncation, triplet cutoff min(4 Å, cutoff), same batches)",
        "",
        "| cutoff (Å) | neighbours/atom | triplets/atom | train step (s) | train atoms/s | train atoms/CPU-s | infer atoms/s | peak RSS (GB) | build_graph (ms/structure) | load (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["scaling_cutoff"]:
        lines.append(f"| {r['cutoff']:g} | {r['neighbors_per_atom']:.1f} | {r['triplets_per_atom']:.0f} | "
                     f"{r['train_median_step_s']:.3f} | {r['train_atoms_per_s']:.1f} | {r['train_atoms_per_cpu_s']:.1f} | "
                     f"{r['infer_atoms_per_s']:.1f} | {r['peak_rss_gb']:.2f} | {r['build_graph_ms_per_structure']:.2f} | "
                     f"{r['loadavg'][0]:.1f} |")
    lines += [
        "",
        "## Scaling with structure size (one fixed batch of n x n x n supercells, no truncation, 6 Å)",
        "",
        "| supercell | structures | atoms/batch | triplets/batch | train step (s) | train atoms/s | train atoms/CPU-s | infer atoms/s | peak RSS (GB) | RSS before first step (GB) | load (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["scaling_size"]:
        n = r["supercell"]
        lines.append(f"| {n}x{n}x{n} | {r['n_structures']} | {r['atoms_per_batch']:.0f} | {r['triplets_per_batch']:.0f} | "
                     f"{r['train_median_step_s']:.3f} | {r['train_atoms_per_s']:.1f} | {r['train_atoms_per_cpu_s']:.1f} | "
                     f"{r['infer_atoms_per_s']:.1f} | {r['peak_rss_gb']:.2f} | {r['baseline_rss_gb']:.2f} | {r['loadavg'][0]:.1f} |")
    lines += ["", f"Total benchmark time {m['total_s']:.0f} s.", ""]
    return "\n".join(lines)


def _per_repeat(entry: dict, key: str) -> str:
    values = entry.get("repeats", {}).get(key)
    if values is None:  # a single run
        values = {"train_atoms_per_s": [entry["train"]["atoms_per_s"]],
                  "infer_atoms_per_s": [entry["infer"]["atoms_per_s"]],
                  "pre_run_other_threads": [entry.get("pre_run", {}).get("load", float("nan"))],
                  "loadavg_1min": [entry["loadavg_end"][0]]}[key]
    return ", ".join(f"{v:.1f}" for v in values)


def _fmt_load(x) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in x) + ")"


if __name__ == "__main__":
    sys.exit(main())
