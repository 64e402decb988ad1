"""Water monomer first hyperpolarizability: the 0.1 expansion against the complete one.

A planar molecule's rank-3 tensor has in-plane components (no index along the plane normal n)
and out-of-plane ones (two indices along n, e.g. beta_xnn); products of in-plane edge vectors
span only the first kind, so etgnn 0.1 predicted exactly zero for the second.  This script trains
the same model twice on ``water_monomer/train.xyz`` (TENSOAP, atomic units) under the same
wall-clock budget, once with the 0.1 expansion (``mixed``, ``four_body``, ``chiral`` off) and once
with the complete one (defaults), and scores both on a held-out split, the errors of the two
kinds of components separately, each molecule's beta rotated into its own frame (in-plane axes,
normal n).

    python benchmarks/water_beta_completeness.py --data ../shared/data/water_monomer/train.xyz \
        --minutes 8 --out benchmarks/results/water_beta_completeness.json

Both variants train at the same time, one thread each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

VARIANTS = {
    "0.1 expansion (no mixed terms)": {"mixed": False, "four_body": False, "chiral": False},
    "complete expansion (default)": {},
}


def split(data: str, workdir: Path, seed: int = 0) -> dict[str, Path]:
    from ase.io import read, write

    frames = read(data, ":")
    order = np.random.default_rng(seed).permutation(len(frames))
    n_val = n_test = len(frames) // 8
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    paths = {}
    for name, idx in parts.items():
        paths[name] = workdir / f"{name}.xyz"
        write(paths[name], [frames[i] for i in idx], format="extxyz")
    return paths


def molecular_frame(atoms) -> np.ndarray:
    """Rows: two in-plane axes and the plane normal of a water molecule (O first)."""
    o, h1, h2 = atoms.positions[:3]
    bisector = (h1 - o) + (h2 - o)
    bisector /= np.linalg.norm(bisector)
    normal = np.cross(h1 - o, h2 - o)
    normal /= np.linalg.norm(normal)
    return np.stack([bisector, np.cross(normal, bisector), normal])


def component_errors(frames, predicted) -> dict:
    """RMSE and relative RMSE of in-plane (no n index) and out-of-plane (two n indices) components."""
    from etgnn.tensors import rotate

    err = {"in_plane": [], "out_of_plane": []}
    ref = {"in_plane": [], "out_of_plane": []}
    n_normal = np.add.reduce(np.indices((3, 3, 3)) == 2, axis=0)  # indices along n per component
    for atoms, pred in zip(frames, predicted):
        r = molecular_frame(atoms)
        true = rotate(np.asarray(atoms.info["beta"], dtype=float).reshape(3, 3, 3), r, 3)
        guess = rotate(pred, r, 3)
        for kind, mask in (("in_plane", n_normal == 0), ("out_of_plane", n_normal == 2)):
            err[kind].append((guess - true)[mask])
            ref[kind].append(true[mask])
    out = {}
    for kind in err:
        e, t = np.concatenate(err[kind]), np.concatenate(ref[kind])
        out[kind] = {"rmse": float(np.sqrt(np.mean(e**2))), "relative_rmse": float(np.sqrt(np.mean(e**2) / np.mean(t**2))),
                     "mean_abs_reference": float(np.mean(np.abs(t)))}
    total_e = np.concatenate(err["in_plane"] + err["out_of_plane"])
    total_t = np.concatenate(ref["in_plane"] + ref["out_of_plane"])
    out["all"] = {"relative_rmse": float(np.sqrt(np.mean(total_e**2) / np.mean(total_t**2)))}
    return out


def run_variant(args) -> dict:
    name, options, paths, minutes, run_root = args
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    from ase.io import read

    import etgnn
    from etgnn.train import train

    torch.set_num_threads(1)
    config = {
        "model": {"hidden_channels": 64, "triplet_channels": 64, "num_blocks": 3},
        "targets": {"beta": {"key": "beta", "level": "structure", "rank": 3, "reduce": "sum", "symmetry": "ijk=ikj",
                             **options}},
        "data": {"train": str(paths["train"]), "val": str(paths["val"]), "test": str(paths["test"]),
                 "num_workers": 1, "cache_dir": str(run_root / "cache")},
        "training": {"batch_size": 16, "max_time": minutes, "lr_patience": 5, "progress": False},
        "run_dir": str(run_root / name.split()[0].replace(".", "")),
    }
    start = time.time()
    result = train(config)
    model = etgnn.load_model(Path(config["run_dir"]) / "best.ckpt")
    frames = read(paths["test"], ":")
    predicted = [p["beta"] for p in model.predict(frames)]
    return {"variant": name, "options": options, "epochs": result.epochs_run, "stopped": result.stopped,
            "best_epoch": result.best_epoch, "minutes": (time.time() - start) / 60,
            "test": component_errors(frames, predicted)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/water_monomer/train.xyz")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--out", default="benchmarks/results/water_beta_completeness.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = split(args.data, tmp)
        jobs = [(name, opts, paths, args.minutes, tmp) for name, opts in VARIANTS.items()]
        with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as pool:
            rows = list(pool.map(run_variant, jobs))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"data": args.data, "minutes_each": args.minutes, "rows": rows}, indent=2))
    for row in rows:
        t = row["test"]
        print(f"{row['variant']:<34} epochs {row['epochs']:>4}  in-plane rel. RMSE {t['in_plane']['relative_rmse']:.3f}  "
              f"out-of-plane rel. RMSE {t['out_of_plane']['relative_rmse']:.3f}  all {t['all']['relative_rmse']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
