"""Smoke test of ``benchmarks/bench_model.py``: its quick mode runs end to end on a tiny synthetic
data set and writes the promised fields.  No timing is asserted (timing belongs in benchmarks/)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_model.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_dataset(path: Path, n: int = 6) -> None:
    """Two-atom cubic cells (a few neighbours and triplets), labels 'becs' (n, 9) and 'eps' (9,)."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(n):
        a = 5.0 + 0.2 * k
        atoms = Atoms("NaCl", positions=[[0.0, 0.0, 0.0], [2.6, 0.1 * k, 0.0]], cell=np.eye(3) * a, pbc=True)
        atoms.positions += rng.normal(scale=0.05, size=(2, 3))
        atoms.arrays["becs"] = rng.normal(size=(2, 9))
        atoms.info["eps"] = rng.normal(size=9)
        frames.append(atoms)
    write(path, frames, format="extxyz")


@pytest.mark.slow
def test_quick_mode_writes_results(tmp_path):
    data = tmp_path / "tiny.xyz"
    _tiny_dataset(data)
    out = tmp_path / "results"
    bench = _load_bench()
    rc = bench.main(["--quick", "--data", str(data), "--out", str(out), "--batch-size", "3",
                     "--steps", "1", "--warmup", "1", "--threads", "1", "--supercells", "2"])
    assert rc == 0
    res = json.loads((out / "bench_model.json").read_text())
    assert (out / "bench_model.md").read_text().startswith("# etgnn model benchmark")
    for key in ("meta", "authors", "goals", "main", "scaling_cutoff", "scaling_size"):
        assert key in res, f"missing top-level key {key!r}"
    for key in ("cores", "torch", "torch_threads", "date"):
        assert key in res["meta"], f"meta lacks {key!r}"
    assert [r["spec"]["max_neighbors"] for r in res["main"]] == [32, None]
    for run in res["main"]:
        for mode in ("train", "infer"):
            for key in ("median_step_s", "atoms_per_s", "peak_rss_gb"):
                assert run[mode][key] > 0, f"main {mode} {key}"
        assert run["rss"]["baseline_before_first_step_gb"] > 0
        assert run["graph"]["build_ms_per_structure"] > 0
        assert run["batches"]["neighbors_per_atom"] > 0 and run["batches"]["triplets_per_atom"] > 0
        assert set(run["verdict"]) >= {"train_goal_met", "memory_goal_met"}
    assert [r["cutoff"] for r in res["scaling_cutoff"]] == [4.0, 6.0]
    assert [r["supercell"] for r in res["scaling_size"]] == [2]
    assert res["scaling_size"][0]["atoms_per_batch"] == 8 * 2  # one 2-atom cell, repeated 2x2x2


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    rc = _load_bench().main(["--quick", "--data", str(tmp_path / "absent.xyz"), "--out", str(tmp_path)])
    assert rc == 2
    assert "not found" in capsys.readouterr().err
