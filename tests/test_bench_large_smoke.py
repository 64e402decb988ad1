"""Smoke test of ``benchmarks/bench_large.py --quick``: it runs end to end (fresh worker processes)
and writes the promised fields.  No timing is asserted (timing belongs in benchmarks/)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_large.py"
DATA = REPO / ".." / "shared" / "data" / "phonondb_bec_eps" / "train.xyz"


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_file(), reason="phonondb_bec_eps data not available")
def test_quick_mode_writes_results(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_large", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "bench_large_quick.json").read_text())
    assert [(r["kind"], r["mode"], r["version"]) for r in res["rows"]] == [
        ("batches", "infer", "after"), ("nacl", "infer", "after"), ("nacl", "train", "after"),
        ("nacl", "train", "after+ckpt"), ("nacl", "train", "after+ckpt0.05GB")]
    assert bench.version_options("after+ckpt0.05GB") == ("chunks", 0.05)
    assert bench.version_options("after+ckpt") == ("chunks", None)
    assert bench.version_options("after") == (None, None)
    for row in res["rows"]:
        m = row["result"]
        assert "error" not in m, m
        for key in ("n_atoms", "triplets_per_atom", "time_s", "atoms_per_s", "atoms_per_cpu_s", "peak_rss_gb"):
            assert m[key] > 0, (row, key)
    assert res["rows"][1]["result"]["n_atoms"] == 96  # NaCl: 8-atom cubic cell repeated 2x2x3
    assert res["rows"][1]["result"]["triplets_per_atom"] == 306  # 18 edges under 4 A: 18 * 17 pairs
    assert (tmp_path / "bench_large_quick.md").read_text().startswith("# Large structures")
