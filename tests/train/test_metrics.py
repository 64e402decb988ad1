"""Metrics: hand-checked values, batch accumulation equals the whole-array result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from etgnn.targets.metrics import MetricAccumulator, compute_metrics, format_table


def test_metric_values_by_hand():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    pred = np.array([[1.0, 0.0, 3.0], [0.0, 2.0, -4.0]])
    m = compute_metrics({"v": pred}, {"v": ref})["v"]
    err = (pred - ref).ravel()
    assert m["mae"] == pytest.approx(np.abs(err).mean())
    assert m["rmse"] == pytest.approx(np.sqrt((err**2).mean()))
    assert m["euclidean"] == pytest.approx((3.0 + 4.0) / 2)
    y = ref.ravel()
    assert m["r2"] == pytest.approx(1 - (err**2).sum() / ((y - y.mean()) ** 2).sum())
    assert m["n"] == 2


def test_perfect_prediction():
    ref = np.random.default_rng(0).normal(size=(7, 3, 3))
    m = compute_metrics({"t": ref.copy()}, {"t": ref})["t"]
    assert m["mae"] == 0 and m["rmse"] == 0 and m["euclidean"] == 0 and m["r2"] == 1.0


def test_accumulation_over_batches_matches_whole():
    rng = np.random.default_rng(1)
    pred, ref = rng.normal(size=(10, 3, 3)), rng.normal(size=(10, 3, 3))
    acc = MetricAccumulator(["t"])
    for lo, hi in [(0, 3), (3, 4), (4, 10)]:
        acc.update("t", torch.tensor(pred[lo:hi]), torch.tensor(ref[lo:hi]))
    # summing the states of two "ranks" is the same as one accumulator
    half = MetricAccumulator(["t"])
    half.update("t", torch.tensor(pred[:5]), torch.tensor(ref[:5]))
    other = MetricAccumulator(["t"])
    other.update("t", torch.tensor(pred[5:]), torch.tensor(ref[5:]))
    half.state += other.state
    whole = compute_metrics({"t": pred}, {"t": ref})["t"]
    for got in (acc.compute()["t"], half.compute()["t"]):
        for k in ("mae", "rmse", "euclidean", "r2"):
            assert got[k] == pytest.approx(whole[k], rel=1e-12)


def test_empty_and_table():
    """No data: every metric NaN, n = 0.  The table exactly: header, one row per split and target
    in order, parts below their target, '-' for missing values, the footers it promises."""
    empty = MetricAccumulator(["a"]).compute()["a"]
    assert empty["n"] == 0 and all(np.isnan(empty[k]) for k in ("mae", "rmse", "euclidean", "r2")), empty
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    pred = np.array([[1.0, 0.0, 3.0], [0.0, 2.0, -4.0]])  # mae 7/6, rmse (25/6)^1/2, |e| 3 and 4, r2 1 - 25/3.5
    hand = {"mae": 0.0123456, "baseline_mae": 0.5, "rmse": 0.02, "baseline_rmse": 0.75, "r2": 0.99,
            "baseline_r2": 0.0, "euclidean": 0.04, "n": 12, "baseline_source": "evaluation data",
            "parts": {"iso": {"mae": 0.001, "baseline_mae": 0.25, "rmse": 0.002, "baseline_rmse": 0.3,
                              "r2": float("nan"), "baseline_r2": -0.5}}}
    table = format_table({"val": compute_metrics({"v": pred}, {"v": ref}), "test": {"eps": hand}})
    assert table.splitlines() == [
        "split  target               part          mae   base_mae       rmse  base_rmse         r2    base_r2"
        "  euclidean        n",
        "-" * 120,
        "val    v                    all         1.167          -      2.041          -     -6.143          -"
        "        3.5        2",
        "test   eps*                 all       0.01235        0.5       0.02       0.75       0.99          0"
        "       0.04       12",
        "                            iso         0.001       0.25      0.002        0.3          -       -0.5"
        "          -         ",
        "base_: constant predictor, the training data's per-element mean tensor (per-atom targets) or mean tensor"
        " (structure targets)",
        "parts of rank-2 targets: iso = tr/3, aniso = symmetric traceless, anti = antisymmetric",
        "* eps: the checkpoint holds no training baselines (written before etgnn stored them);",
        "  the baseline is the evaluation data's own mean (optimistic)"]


# --- full report: rank-2 parts and baselines --------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from etgnn.data.statistics import training_baselines  # noqa: E402
from etgnn.targets.metrics import EVALUATION, TRAINING, full_metrics, tensor_parts  # noqa: E402

STRUCT2 = {"t": SimpleNamespace(level="structure", rank=2)}


def test_tensor_parts_by_hand_and_they_rebuild_the_tensor():
    t = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 10.0]]])
    parts = tensor_parts(t)
    assert parts["iso"].tolist() == [[16.0 / 3]]
    s = 16.0 / 3
    assert parts["aniso"][0] == pytest.approx([1 - s, 3.0, 5.0, 5 - s, 7.0, 10 - s])
    assert parts["anti"][0] == pytest.approx([-1.0, -2.0, -1.0])
    rng = np.random.default_rng(3)
    t = rng.normal(size=(5, 3, 3))
    p = tensor_parts(t)
    sym, anti = np.zeros((5, 3, 3)), np.zeros((5, 3, 3))
    iu, su = np.triu_indices(3), np.triu_indices(3, 1)
    sym[:, iu[0], iu[1]] = p["aniso"]
    sym[:, iu[1], iu[0]] = p["aniso"]
    anti[:, su[0], su[1]] = p["anti"]
    anti[:, su[1], su[0]] = -p["anti"]
    assert np.allclose(p["iso"][:, :, None] * np.eye(3) + sym + anti, t, atol=1e-14)
    assert np.allclose(np.trace(sym, axis1=1, axis2=2), 0, atol=1e-14)


def _polarizability_like(n=200):
    """References: a large fixed mean diag(10, 20, 30) plus +-1 on the trace and +-1 along a
    symmetric traceless B; predictions err by 0.1 of the isotropic deviation, 0.5 of the
    anisotropic one, and add a constant antisymmetric A (symmetric references)."""
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)  # mean 0
    sign2 = np.where(np.arange(n) % 4 < 2, 1.0, -1.0)  # mean 0, uncorrelated with sign
    mean = np.diag([10.0, 20.0, 30.0])
    b = np.array([[1.0, 0.5, 0.0], [0.5, -2.0, 0.25], [0.0, 0.25, 1.0]])  # symmetric, traceless
    a = np.array([[0.0, 0.02, -0.04], [-0.02, 0.0, 0.06], [0.04, -0.06, 0.0]])
    ref = mean + sign[:, None, None] * np.eye(3) + sign2[:, None, None] * b
    pred = ref + 0.1 * sign[:, None, None] * np.eye(3) + 0.5 * sign2[:, None, None] * b + a
    return pred, ref, b, a, mean


def test_pooled_r2_looks_perfect_while_the_anisotropic_part_is_poor():
    """Issue 11, item 10: pooled R^2 ~0.999 (the mean tensor already gets it), the parts tell."""
    pred, ref, b, a, mean = _polarizability_like()
    m = full_metrics({"t": pred}, {"t": ref}, STRUCT2)["t"]
    assert m["r2"] > 0.995 and m["baseline_r2"] > 0.99  # pooled: looks excellent, even for the mean
    parts = m["parts"]
    # isotropic: error 0.1 * deviation -> MAE 0.1, R^2 = 1 - 0.1^2
    assert parts["iso"]["mae"] == pytest.approx(0.1, rel=1e-12)
    assert parts["iso"]["rmse"] == pytest.approx(0.1, rel=1e-12)
    assert parts["iso"]["r2"] == pytest.approx(0.99, rel=1e-12)
    # anisotropic: error 0.5 * B on the 6 entries i <= j -> R^2 = 1 - 0.5^2
    upper = b[np.triu_indices(3)]
    assert parts["aniso"]["mae"] == pytest.approx(0.5 * np.abs(upper).mean(), rel=1e-12)
    assert parts["aniso"]["rmse"] == pytest.approx(0.5 * np.sqrt(np.square(upper).mean()), rel=1e-12)
    assert parts["aniso"]["r2"] == pytest.approx(0.75, rel=1e-12)
    # antisymmetric: the references have none, so R^2 is undefined; MAE = mean |A_ij|, i < j
    assert parts["anti"]["mae"] == pytest.approx(0.04, rel=1e-12)
    assert parts["anti"]["r2"] is None
    # baseline (no training baselines given: the references' own mean tensor): R^2 0 per part
    assert m["baseline_source"] == EVALUATION and m["baseline"] == "mean tensor"
    assert parts["iso"]["baseline_r2"] == pytest.approx(0.0, abs=1e-12)
    assert parts["aniso"]["baseline_r2"] == pytest.approx(0.0, abs=1e-12)
    assert parts["iso"]["baseline_mae"] == pytest.approx(1.0, rel=1e-12)
    assert parts["aniso"]["baseline_mae"] == pytest.approx(np.abs(upper).mean(), rel=1e-12)
    assert parts["anti"]["baseline_mae"] == pytest.approx(0.0, abs=1e-12)
    # the pooled metrics are those of compute_metrics
    pooled = compute_metrics({"t": pred}, {"t": ref})["t"]
    assert all(m[k] == pytest.approx(pooled[k], rel=1e-12) for k in ("mae", "rmse", "euclidean", "r2"))


def test_structure_baseline_is_the_training_mean_tensor():
    pred, ref, _, _, mean = _polarizability_like(8)
    offset = np.diag([1.0, 0.0, -1.0])  # training mean differs from the evaluation data's
    baselines = {"t": {"mean": (mean + offset).reshape(9).tolist()}}
    m = full_metrics({"t": pred}, {"t": ref}, STRUCT2, baselines=baselines)["t"]
    assert m["baseline_source"] == TRAINING
    expected = compute_metrics({"t": np.broadcast_to(mean + offset, ref.shape).copy()}, {"t": ref})["t"]
    assert m["baseline_mae"] == pytest.approx(expected["mae"], rel=1e-12)
    assert m["baseline_r2"] == pytest.approx(expected["r2"], rel=1e-12)
    # the offset is traceless: the isotropic baseline is unchanged, the anisotropic one is worse
    assert m["parts"]["iso"]["baseline_mae"] == pytest.approx(1.0, rel=1e-12)
    assert m["parts"]["aniso"]["baseline_r2"] < -0.1


def test_per_atom_baseline_is_the_per_element_mean_of_the_training_data():
    atom1 = {"v": SimpleNamespace(level="atom", rank=1)}
    train = SimpleNamespace(
        graphs=[{"_numbers": np.array([1, 8])}, {"_numbers": np.array([1, 1, 6])}],
        labels=[{"v": np.array([[1.0, 0, 0], [0, 0, 4]])}, {"v": np.array([[3.0, 0, 0], [2, 0, 0], [0, 5, 0]])}],
    )
    base = training_baselines(_Seq(train), atom1)["v"]
    assert base["per_element"] == {1: [2.0, 0.0, 0.0], 6: [0.0, 5.0, 0.0], 8: [0.0, 0.0, 4.0]}
    assert base["mean"] == pytest.approx([6 / 5, 1.0, 4 / 5])
    # evaluation: H, O, and an element unseen in training (N) that gets the all-atom mean
    numbers = np.array([1, 8, 7])
    ref = np.array([[2.5, 0, 0], [0, 0, 4], [0, 0, 0]])
    m = full_metrics({"v": ref.copy()}, {"v": ref}, atom1, numbers=numbers, baselines={"v": base})["v"]
    assert m["mae"] == 0 and m["baseline"] == "per-element mean tensor" and m["unseen_element_rows"] == 1
    expected_err = np.array([[0.5, 0, 0], [0, 0, 0], [6 / 5, 1.0, 4 / 5]])
    assert m["baseline_mae"] == pytest.approx(np.abs(expected_err).mean(), rel=1e-12)
    assert "parts" not in m
    with pytest.raises(ValueError, match="per-atom target 'v' needs the atomic numbers of its 3 rows"):
        full_metrics({"v": ref}, {"v": ref}, atom1)


class _Seq:
    """A GraphDataset stand-in: graphs, labels and a length."""

    def __init__(self, ns):
        self.graphs, self.labels = ns.graphs, ns.labels

    def __len__(self):
        return len(self.graphs)


def test_table_shows_parts_baselines_and_says_when_the_baseline_is_not_from_training():
    pred, ref, *_ = _polarizability_like(8)
    own = full_metrics({"t": pred}, {"t": ref}, STRUCT2)
    table = format_table({"data": own})
    rows = table.splitlines()
    assert rows[0].split() == ["split", "target", "part", "mae", "base_mae", "rmse", "base_rmse", "r2", "base_r2",
                               "euclidean", "n"]
    assert rows[2].split()[:3] == ["data", "t*", "all"]
    assert [r.split()[0] for r in rows[3:6]] == ["iso", "aniso", "anti"]
    assert rows[5].split()[5] == "-"  # the undefined antisymmetric R^2
    assert "t: the checkpoint holds no training baselines" in table
    trained = full_metrics({"t": pred}, {"t": ref}, STRUCT2, baselines={"t": {"mean": [0.0] * 9}})
    assert "no training baselines" not in format_table({"data": trained})


@pytest.mark.parity_plots
def test_parity_plot_has_a_panel_per_part_with_the_baseline(tmp_path):
    from etgnn.train.plots import parity_plot

    pred, ref, *_ = _polarizability_like(8)
    v = np.arange(12.0).reshape(4, 3)
    targets = {"v": SimpleNamespace(level="atom", rank=1), "t": STRUCT2["t"]}
    m = full_metrics({"v": v + 1, "t": pred}, {"v": v, "t": ref}, targets, numbers=np.array([1, 1, 8, 8]))
    fig = parity_plot({"v": v + 1, "t": pred}, {"v": v, "t": ref}, tmp_path / "p.png", m)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["v", "t: all components", "t: isotropic tr/3", "t: anisotropic (sym. traceless)",
                      "t: antisymmetric"]
    assert [ax.get_subplotspec().num1 for ax in fig.axes] == [0, 4, 5, 6, 7]  # t starts its own row
    iso_text = fig.axes[2].texts[0].get_text()
    assert iso_text == "MAE = 0.1 (baseline 1)\n$R^2$ = 0.9900 (baseline 0.000)"
    assert (tmp_path / "p.png").stat().st_size > 1000
