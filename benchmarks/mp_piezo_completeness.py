"""Materials Project clamped-ion piezoelectric tensors: the 0.1 expansion against the complete one.

Trains a piezoelectric model (rank 3, ``ijk=ikj``, C/m^2) on ``mp_dielectric/train_extra.xyz``
twice under the same wall-clock budget, with the 0.1 expansion (``mixed``, ``four_body``,
``chiral`` off) and with the complete one (defaults), and scores both on
``mp_dielectric/train.xyz`` (a disjoint release of the same data set): MAE and RMSE over all 27
components, and beside them the trivial baseline (predict zero: the training mean is ~0 by
symmetry of the set).

    python benchmarks/mp_piezo_completeness.py --data-dir ../shared/data/mp_dielectric --minutes 9
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
KEY = "REF_piezoelectric"


def run_variant(args) -> dict:
    name, options, data_dir, minutes, run_root = args
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    import etgnn
    from etgnn.data.readers import read_structures
    from etgnn.tensors import to_cartesian
    from etgnn.train import train

    torch.set_num_threads(1)
    config = {
        "model": {"hidden_channels": 64, "triplet_channels": 64, "num_blocks": 3},
        "targets": {"piezo": {"key": KEY, "level": "structure", "rank": 3, "reduce": "mean", "symmetry": "ijk=ikj",
                              "voigt_order": "vasp", "unit": "C/m^2", **options}},
        "data": {"train": str(Path(data_dir) / "train_extra.xyz"), "split": [0.85, 0.15, 0.0], "num_workers": 1,
                 "cache_dir": str(run_root / "cache")},
        "training": {"batch_size": 16, "max_time": minutes, "lr_patience": 5, "progress": False},
        "run_dir": str(run_root / name.split()[0].replace(".", "")),
    }
    start = time.time()
    result = train(config)
    model = etgnn.load_model(Path(config["run_dir"]) / "best.ckpt")
    frames = read_structures(Path(data_dir) / "train.xyz")
    true = np.stack([to_cartesian(np.asarray(a.info[KEY], float), 3, "vasp") for a in frames])
    pred = np.stack([p["piezo"] for p in model.predict(frames)])
    return {"variant": name, "options": options, "epochs": result.epochs_run, "stopped": result.stopped,
            "minutes": (time.time() - start) / 60, "n_test": len(frames),
            "test": {"mae": float(np.abs(pred - true).mean()), "rmse": float(np.sqrt(((pred - true) ** 2).mean())),
                     "baseline_zero_mae": float(np.abs(true).mean())}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data/mp_dielectric")
    parser.add_argument("--minutes", type=float, default=9.0)
    parser.add_argument("--out", default="benchmarks/results/mp_piezo_completeness.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(name, opts, args.data_dir, args.minutes, Path(tmp)) for name, opts in VARIANTS.items()]
        with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as pool:
            rows = list(pool.map(run_variant, jobs))
    Path(args.out).write_text(json.dumps({"data_dir": args.data_dir, "minutes_each": args.minutes, "rows": rows}, indent=2))
    for row in rows:
        t = row["test"]
        print(f"{row['variant']:<34} epochs {row['epochs']:>4} ({row['stopped']})  MAE {t['mae']:.4f}  RMSE {t['rmse']:.4f}  "
              f"zero-baseline MAE {t['baseline_zero_mae']:.4f} C/m^2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
