"""``benchmarks/learning_curves.py``: the split protocol (disjoint parts, nested training subsets,
the accuracy benchmark's test structures), a ``--quick`` run on phonondb that writes every field,
and ``--combine``.  Skipped when ../shared/data is absent; no accuracy is asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "phonondb_bec_eps" / "train.xyz").is_file(),
                                reason="../shared/data/phonondb_bec_eps absent")


@pytest.fixture(scope="module")
def lc():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("learning_curves", ROOT / "benchmarks" / "learning_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(ROOT / "benchmarks"))


def _fingerprints(path: Path) -> list[bytes]:
    return [a.numbers.tobytes() + np.round(a.positions, 4).tobytes() for a in read(path, ":")]


def test_split_parts_are_disjoint_and_the_test_part_is_the_accuracy_benchmarks(lc, tmp_path):
    split = lc.prepare("phonondb", DATA, tmp_path)
    pool, val, test = (_fingerprints(tmp_path / f"{p}.extxyz") for p in ("pool", "val", "test"))
    assert (len(pool), len(val), len(test)) == (split["n_pool"], split["n_val"], split["n_test"])
    assert len(pool) + len(val) + len(test) == 1216
    assert not (set(pool) & set(val)) and not (set(pool) & set(test)) and not (set(val) & set(test))
    assert split["n_val"] == round(0.2 * (1216 - split["n_test"]))
    acc = lc.acc
    rest, test_idx = acc.split_indices(1216, acc.SETS["phonondb"]["test"], np.random.default_rng(acc.SEED))
    every = _fingerprints(DATA / "phonondb_bec_eps" / "train.xyz")
    assert sorted(test) == sorted(every[i] for i in test_idx)


def test_quick_run_writes_every_field_and_trains_on_nested_subsets(lc, tmp_path, single_thread):
    out, work = tmp_path / "out", tmp_path / "work"
    assert lc.main(["--quick", "--sets", "phonondb", "--data-dir", str(DATA), "--out", str(out),
                    "--work", str(work), "--plot", str(tmp_path / "lc.png")]) == 0
    doc = json.loads((out / "learning_curves.json").read_text())
    s = doc["sets"]["phonondb"]
    assert s["split"] == {"n_pool": 24, "n_val": 8, "n_test": 8, "train_rows_dropped_sum_rule": 0}
    assert [r["n_train"] for r in s["sizes"]] == [4, 6, 12, 24]
    folder = work / "phonondb" / "split"
    pool = _fingerprints(folder / "pool.extxyz")
    for r in s["sizes"]:
        assert _fingerprints(folder / f"pool_{r['n_train']}.extxyz") == pool[: r["n_train"]]
        if r["best_epoch"] >= 0:
            t = r["targets"]["born_charges"]
            assert set(t) == {"etgnn", "baseline"} and set(t["etgnn"]) == {"mae", "mae_diag", "mae_offdiag"}
            assert all(np.isfinite(v) for v in t["etgnn"].values())
            times = [p[0] for p in r["val_curve"]]
            assert times == sorted(times) and len(times) == r["epochs"]
    md = (out / "learning_curves.md").read_text()
    assert md.startswith("# Learning curves") and "| 24 |" in md
    assert (tmp_path / "lc.png").stat().st_size > 10_000

    # --combine: two runs, one set each, become one document; mismatched budgets or a set twice refuse
    other = json.loads(json.dumps(doc))
    other["sets"] = {"mp": other["sets"].pop("phonondb")}
    (tmp_path / "b.json").write_text(json.dumps(other))
    assert lc.main(["--combine", str(out / "learning_curves.json"), str(tmp_path / "b.json"),
                    "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "learning_curves.json").read_text())
    assert list(merged["sets"]) == ["phonondb", "mp"] and len(merged["runs"]) == 2
    assert "## mp" in (tmp_path / "merged" / "learning_curves.md").read_text()
    assert lc.main(["--combine", str(out / "learning_curves.json"), str(out / "learning_curves.json"),
                    "--out", str(tmp_path / "m2")]) == 2
    other["minutes"] = 1.0
    (tmp_path / "c.json").write_text(json.dumps(other))
    assert lc.main(["--combine", str(out / "learning_curves.json"), str(tmp_path / "c.json"),
                    "--out", str(tmp_path / "m3")]) == 2
