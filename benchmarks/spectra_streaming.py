"""Peak memory and time of ``predict_series`` (the reader behind ``etgnn spectrum``) vs trajectory length.

Each measurement runs in a fresh process: write a trajectory of N frames (H2O or a 64-atom NaCl
supercell, random displacements and velocities) as extxyz, then stream it through a small
random-weight model (current route, chunks of 32 frames) and report the process's peak RSS.

    python benchmarks/spectra_streaming.py     # writes benchmarks/results/spectra_streaming.json
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = [("H2O", 1000), ("H2O", 10000), ("H2O", 40000), ("NaCl64", 250), ("NaCl64", 2500)]


def worker(system: str, n_frames: int, tmp: str) -> dict:
    import numpy as np
    import torch
    from ase.build import bulk, molecule
    from ase.io import write

    import etgnn
    from etgnn.observables.timeseries import predict_series

    torch.set_num_threads(1)
    base = molecule("H2O") if system == "H2O" else bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)
    rng = np.random.default_rng(0)
    path = f"{tmp}/traj.extxyz"
    with open(path, "w") as fh:
        for _ in range(n_frames):
            a = base.copy()
            a.positions += 0.05 * rng.normal(size=a.positions.shape)
            a.set_velocities(0.01 * rng.normal(size=a.positions.shape))
            write(fh, a, format="extxyz")
    model = etgnn.build_model({"model": {"hidden_channels": 16, "triplet_channels": 8, "num_blocks": 1,
                                         "cutoff": 4.0, "triplet_cutoff": 3.0},
                               "targets": {"bec": {"key": "bec", "level": "atom", "rank": 2}}})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    series = predict_series(model, path, "current", batch_size=32, progress=False)
    seconds = time.perf_counter() - t0
    return {"system": system, "atoms": len(base), "frames": n_frames, "atom_frames": len(base) * n_frames,
            "file_MB": round(Path(path).stat().st_size / 2**20, 1), "seconds": round(seconds, 1),
            "frames_per_s": round(n_frames / seconds, 1), "series_shape": list(series.values.shape),
            "peak_rss_MB_before_streaming": round(rss_before / 1024, 1),
            "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), tmp)))
        return 0
    rows = []
    for system, n in CASES:
        out = subprocess.run([sys.executable, __file__, "--worker", system, str(n)], capture_output=True,
                             text=True, check=True, env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
                                                         "PATH": "/usr/bin:/bin"})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1])
    result = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "note": "2 shared CPU cores under load from other jobs; times are indicative", "runs": rows}
    out = ROOT / "benchmarks" / "results" / "spectra_streaming.json"
    out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
