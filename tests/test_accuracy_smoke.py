"""``benchmarks/accuracy.py``: its metric and baseline definitions exactly, and a ``--quick`` run on
real sets (skipped when a file they read is absent from ../shared/data) that writes every promised field.  No
accuracy is asserted (numbers belong in benchmarks/results)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def acc():
    spec = importlib.util.spec_from_file_location("accuracy", ROOT / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["accuracy"] = module  # --jobs pickles its worker functions by module name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("accuracy", None)


def _require_data(acc, *sets: str) -> None:
    """Skip unless every file the named sets read lies under ``DATA`` (train, test and joint files)."""
    missing = []
    for name in sets:
        spec = acc.SETS[name]
        files = [spec["train"]]
        if isinstance(spec.get("test"), tuple):
            files.append(spec["test"][1])
        joint = spec.get("joint", {}).get("file", ())
        files += [joint] if isinstance(joint, str) else list(joint)
        missing += [f for f in files if not (DATA / f).is_file()]
    if missing:
        pytest.skip(f"{DATA}: {', '.join(missing)} absent")


def test_scores_split_diagonal_and_offdiagonal(acc):
    ref = [np.zeros((2, 3, 3))]
    err = np.zeros((2, 3, 3))
    err[:, [0, 1, 2], [0, 1, 2]] = 0.3  # diagonal errors 0.3
    err[0, 0, 1] = 1.2  # one off-diagonal error among 12
    s = acc.scores([err], ref, ("mae", "mae_diag", "mae_offdiag"), "atom")
    assert s["mae_diag"] == pytest.approx(0.3)
    assert s["mae_offdiag"] == pytest.approx(1.2 / 12)
    assert s["mae"] == pytest.approx((6 * 0.3 + 1.2) / 18)


def test_scores_pool_per_atom_vectors_of_structures_of_any_size(acc):
    ref = [np.zeros((2, 3)), np.zeros((3, 3))]  # forces of a 2-atom and a 3-atom structure
    pred = [np.full((2, 3), 1.0), np.full((3, 3), 6.0)]
    assert acc.scores(pred, ref, ("mae",), "atom")["mae"] == pytest.approx((6 * 1.0 + 9 * 6.0) / 15)


def test_relative_rmse_is_100_for_the_test_mean_and_scales_with_error(acc):
    rng = np.random.default_rng(1)
    ref = [rng.normal(size=(3, 3)) for _ in range(20)]
    mean = np.mean(ref, axis=0)
    assert acc.scores([mean] * 20, ref, ("rel_rmse",))["rel_rmse"] == pytest.approx(100.0)
    half = [m + 0.5 * (r - m) for r, m in zip(ref, [mean] * 20)]
    assert acc.scores(half, ref, ("rel_rmse",))["rel_rmse"] == pytest.approx(50.0)


def test_scores_and_baseline_leave_unlabelled_rows_out(acc):
    """si_nmr layout: NaN rows are atoms without a label; they count in neither the baseline's
    means nor the metrics (a NaN there would make every number NaN)."""
    train = [Atoms("SiO2", positions=[[0, 0, 0], [1, 0, 0], [2, 0, 0]])]
    nan = np.full((3, 3), np.nan)
    shielding = [np.stack([400 * np.eye(3), nan, nan])]
    test = [Atoms("SiSiO", positions=[[0, 0, 0], [1, 0, 0], [2, 0, 0]])]
    ref = [np.stack([410 * np.eye(3), nan, nan])]  # the second Si is unlabelled too
    (pred,) = acc.baseline(train, shielding, test, "atom")
    np.testing.assert_allclose(pred[:2], [400 * np.eye(3)] * 2)
    s = acc.scores([pred], ref, ("mae", "mae_diag"), "atom")
    assert s["mae"] == pytest.approx(10 * 3 / 9) and s["mae_diag"] == pytest.approx(10.0)
    eps = [np.eye(3), np.full((3, 3), np.nan), 3 * np.eye(3)]  # a structure without the label
    np.testing.assert_allclose(acc.baseline(train * 3, eps, test, "structure")[0], 2 * np.eye(3))


def test_baseline_per_element_mean_and_structure_mean(acc):
    train = [Atoms("NaCl", positions=[[0, 0, 0], [1, 0, 0]]), Atoms("Na2", positions=[[0, 0, 0], [1, 0, 0]])]
    becs = [np.stack([np.eye(3), -np.eye(3)]), np.stack([3 * np.eye(3), 5 * np.eye(3)])]
    test = [Atoms("ClNaK", positions=[[0, 0, 0], [1, 0, 0], [2, 0, 0]])]
    (pred,) = acc.baseline(train, becs, test, "atom")
    np.testing.assert_allclose(pred[0], -np.eye(3))  # Cl: its only training atom
    np.testing.assert_allclose(pred[1], 3 * np.eye(3))  # Na: mean of 1, 3, 5
    np.testing.assert_allclose(pred[2], 2 * np.eye(3))  # K unseen: mean over all training atoms
    eps = [np.eye(3), 3 * np.eye(3)]
    np.testing.assert_allclose(acc.baseline(train, eps, test, "structure")[0], 2 * np.eye(3))


def test_total_energy_metric_and_baseline_are_per_atom(acc):
    """An extensive scalar (a total energy): baseline = training mean per atom x atoms, and the
    per-atom MAE divides each structure's error by its atom count."""
    train = [Atoms("Si2", positions=[[0, 0, 0], [2, 0, 0]]), Atoms("Si4", positions=np.eye(4, 3) * 3)]
    energies = [np.array(-10.0), np.array(-24.0)]  # -5 and -6 eV per atom: mean -5.5
    test = [Atoms("Si3", positions=np.eye(3) * 3), Atoms("Si", positions=[[0, 0, 0]])]
    base = acc.baseline(train, energies, test, "extensive")
    np.testing.assert_allclose(base, [-16.5, -5.5])
    s = acc.scores(base, [np.array(-15.0), np.array(-5.0)], ("mae", "mae_per_atom"), "structure", n_atoms=[3, 1])
    assert s["mae"] == pytest.approx((1.5 + 0.5) / 2) and s["mae_per_atom"] == pytest.approx((0.5 + 0.5) / 2)
    assert "mae_per_atom" not in acc.scores([np.zeros((2, 3))], [np.ones((2, 3))], ("mae", "mae_per_atom"), "atom")


def test_joint_training_leaves_out_the_test_materials(acc):
    """The same material in two databases (reduced formula and space group) is found whatever the
    cell, and a joint protocol drops it from the added training structures."""
    from ase.build import bulk

    rocksalt = bulk("NaCl", "rocksalt", a=5.64)
    assert acc.material_key(rocksalt) == acc.material_key(bulk("NaCl", "rocksalt", a=5.5, cubic=True)) == ("NaCl", 225)
    assert acc.material_key(bulk("NaCl", "cesiumchloride", a=3.4)) == ("NaCl", 221)
    assert acc.material_key(bulk("Si", "diamond", a=5.43)) != acc.material_key(bulk("Ge", "diamond", a=5.65))
    import ase.io

    tmp = Path(__import__("tempfile").mkdtemp())
    second = [bulk("NaCl", "rocksalt", a=5.7, cubic=True), bulk("NaCl", "cesiumchloride", a=3.4),
              bulk("Si", "diamond", a=5.43)]
    for a in second:
        a.arrays["becs"] = np.tile(np.eye(3).reshape(1, 9), (len(a), 1))
        a.info["eps"] = 2.0 * np.eye(3).reshape(9)
    ase.io.write(tmp / "second.xyz", second, format="extxyz")
    spec = {"joint": dict(file="second.xyz", targets={"b2": "becs", "p2": "eps"},
                          settings={"b2": {"level": "atom", "rank": 2}, "p2": {"level": "structure", "rank": 2}},
                          transform={"p2": lambda eps: (eps - np.eye(3)) / (4 * np.pi)})}
    frames, summary = acc.joint_frames(spec, tmp, [rocksalt])
    assert summary == {"file": "second.xyz", "n_structures": 3, "n_used": 2, "n_excluded_test_materials": 1,
                       "targets": ["b2", "p2"]}
    assert [f.get_chemical_formula() for f in frames] == ["ClNa", "Si2"]
    np.testing.assert_allclose(frames[0].info["y_p2"], (np.eye(3) / (4 * np.pi)).ravel())
    assert frames[1].arrays["y_b2"].shape == (2, 9)


def test_summary_compares_each_goal_metric_with_issue_10s_goal(acc):
    """The summary lists the headline metric, every anchored metric and every goal metric of each
    target, says whether the goal is met (<=), and marks a joint protocol that used more data."""
    def rec(name, targets):
        return {"set": name, "budget_min": 60.0, "epochs": 7, "targets": targets}

    bec = {"unit": "e", "etgnn": {"mae": 0.1, "mae_diag": 0.2, "mae_offdiag": 0.095},
           "baseline": {"mae": 0.4, "mae_diag": 0.7, "mae_offdiag": 0.2},
           "anchors": {"mae_diag": {"value": 0.21, "source": "x"}}}
    energy = {"unit": "eV", "etgnn": {"mae": 0.5, "mae_per_atom": 0.01}, "baseline": {"mae": 9.0, "mae_per_atom": 0.2},
              "anchors": {}}
    rows = [line for line in acc.summary_markdown([rec("mp", {"born_charges": bec}), rec("mp_joint", {"born_charges": bec}),
                                                   rec("mlearn_si", {"energy": energy}), {"set": "spice", "skipped": "no data"}])
            if line.startswith("| ") and not line.startswith("| set")]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert [c[:4] + c[6:8] for c in cells[:2]] == [
        ["mp", "born_charges", "MAE diagonal (xx, yy, zz) (e)", "0.2", "0.21", "yes"],
        ["mp", "born_charges", "MAE off-diagonal (e)", "0.095", "0.09", "no"]]
    assert cells[2][7] == "yes (more data than the goal's)" and cells[3][7] == "no (more data than the goal's)"
    assert cells[4][:4] == ["mlearn_si", "energy", "MAE per atom (eV)", "0.01"] and cells[4][6:8] == ["-", ""]
    assert cells[5][:2] == ["spice", "skipped: no data"] and len(cells) == 6


@pytest.mark.slow
def test_quick_run_writes_every_field(acc, tmp_path):
    _require_data(acc, "spice", "mp", "si_nmr")
    assert acc.main(["--quick", "--sets", "spice", "mp", "si_nmr", "--data-dir", str(DATA),
                     "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "accuracy.json").read_text())
    hw = doc["meta"]["hardware"]
    assert {"cpu", "logical_cores", "torch_threads"} <= set(hw)
    assert doc["meta"]["quick"] is True and doc["meta"]["minutes"] == acc.QUICK["minutes"]
    recs = {r["set"]: r for r in doc["sets"]}
    for name in ("spice", "mp", "si_nmr"):
        r = recs[name]
        assert r["n_test"] == acc.QUICK["test"] and r["budget_min"] == acc.QUICK["minutes"]
        assert r["epochs"] >= 1 and r["stopped"] in ("max_time", "max_epochs", "early_stopping")
        for entry in r["targets"].values():
            assert set(entry["etgnn"]) == set(entry["baseline"]) == set(acc.SETS[name]["metrics"])
    bec = recs["mp"]["targets"]["born_charges"]
    assert {"mae_diag", "mae_offdiag"} <= set(bec["etgnn_sum_rule_ok"])
    assert bec["anchors"]["mae_diag"]["value"] == 0.210
    assert recs["mp"]["sum_rule_threshold_e"] == acc.SUM_RULE_THRESHOLD
    assert set(recs["spice"]["targets"]["apt"]["pred_bec_all"]) == {"mae", "mae_diag", "mae_offdiag"}
    md = (tmp_path / "accuracy.md").read_text()
    nmr = recs["si_nmr"]["targets"]["shielding"]
    assert nmr["unit"] == "ppm" and all(np.isfinite(v) for v in nmr["baseline"].values())
    for text in ("### spice", "### mp", "### si_nmr", "MAE diagonal",
                 "obeying the sum rule", "`pred_bec` column", "baseline", "anchor", "logical cores",
                 "torch thread(s), 1-min load average"):
        assert text in md, text
    # --combine: the records of several runs in one report, each naming its run
    assert acc.main(["--combine", str(tmp_path), "--out", str(tmp_path / "combined")]) == 0
    combined = json.loads((tmp_path / "combined" / "accuracy.json").read_text())
    assert [r["set"] for r in combined["sets"]] == ["mp", "spice", "si_nmr"]  # the protocol table's order
    assert combined["sets"][0]["targets"] == recs["mp"]["targets"]
    text = (tmp_path / "combined" / "accuracy.md").read_text()
    assert text.count("From `python benchmarks/accuracy.py --quick --sets spice mp si_nmr") == 3


@pytest.mark.slow
def test_quick_run_with_two_jobs(acc, tmp_path):
    """--jobs 2: each set in its own process with cores / 2 threads; records in --sets order."""
    _require_data(acc, "water_monomer", "spice")
    assert acc.main(["--quick", "--sets", "water_monomer", "spice", "--data-dir", str(DATA),
                     "--out", str(tmp_path), "--jobs", "2"]) == 0
    doc = json.loads((tmp_path / "accuracy.json").read_text())
    assert [r["set"] for r in doc["sets"]] == ["water_monomer", "spice"]  # whichever finished first
    threads = max(1, (__import__("os").cpu_count() or 1) // 2)
    assert all(r["torch_threads"] == threads and "targets" in r for r in doc["sets"])
    assert doc["meta"]["jobs"] == 2 and "2 sets at a time" in (tmp_path / "accuracy.md").read_text()
