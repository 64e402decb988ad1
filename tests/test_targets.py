"""One Target per configured quantity: label I/O round trip, symmetry parsed once, one loss,
metrics, and statistics computed by a pure function and handed to build_model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

import etgnn
from etgnn.config import TargetConfig
from etgnn.data import keys as K
from etgnn.data.batch import collate
from etgnn.data.dataset import GraphDataset
from etgnn.data.statistics import Statistics, compute_statistics
from etgnn.targets import Target, build_targets, total_loss
from etgnn.targets.metrics import full_metrics
from etgnn.train.normalization import fit_normalization

MODEL = {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1, "dtype": "float64"}
TARGETS = {"bec": {"key": "bec", "level": "atom", "rank": 2, "sum_rule_weight": 0.3},
           "q": {"key": "q", "level": "atom", "rank": 0},
           "beta": {"key": "beta", "level": "structure", "rank": 3, "symmetry": "ijk=ikj"},
           "e": {"key": "e", "level": "structure", "rank": 0, "reduce": "sum"}}


def _frames(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        a = molecule("H2O") if k % 2 else molecule("CH4")
        a.positions += 0.05 * rng.normal(size=a.positions.shape)
        a.new_array("bec", rng.normal(size=(len(a), 3, 3)) + 2.0 * np.eye(3))
        a.new_array("q", rng.normal(size=len(a)))
        a.info["beta"] = rng.normal(size=(3, 3, 3))
        a.info["e"] = float(rng.normal() - 3.0 * len(a))
        frames.append(a)
    return frames


def _dataset(model, frames):
    graphs = [model.graph(a) for a in frames]
    labels = [{n: t.read(a, "mem", i) for n, t in model.targets.items()} for i, a in enumerate(frames)]
    return GraphDataset(graphs, labels, [str(i) for i in range(len(frames))])


def test_written_prediction_reads_back_as_the_same_array():
    targets = build_targets({n: TargetConfig(**{**t, "key": n}) for n, t in TARGETS.items()})
    atoms = bulk("ZnO", "wurtzite", a=3.25, c=5.2)
    rng = np.random.default_rng(1)
    values = {n: rng.normal(size=t.shape(len(atoms))) for n, t in targets.items()}
    out = atoms.copy()
    for name, t in targets.items():
        t.write(out, values[name])
    for name, t in targets.items():
        np.testing.assert_array_equal(t.read(out, "x.xyz", 0), values[name])


def test_target_repr_and_sum_rule_flag():
    t = Target("bec", TargetConfig(key="born_charges", level="atom", rank=2, sum_rule=True, unit="e"))
    assert repr(t) == "Target('bec': key 'born_charges', atom rank 2, sum_rule, loss euclidean, unit e)"
    assert t.obeys_sum_rule and not Target("s", TargetConfig(key="s", level="atom", rank=2)).obeys_sum_rule


def test_symmetry_is_parsed_once_not_on_every_forward_pass(monkeypatch):
    model = etgnn.build_model({"model": MODEL, "targets": TARGETS})
    batch = collate([model.graph(molecule("CH3OH"))], dtype=model.dtype)
    calls = []
    import etgnn.nn.heads as heads
    import etgnn.tensors as tensors

    original = tensors.parse_symmetry
    counting = lambda *a: calls.append(a) or original(*a)  # noqa: E731
    monkeypatch.setattr(tensors, "parse_symmetry", counting)
    monkeypatch.setattr(heads, "parse_symmetry", counting)
    out = model(batch)
    assert calls == []
    # and the projection is still applied: beta_ijk = beta_ikj
    torch.testing.assert_close(out["beta"], out["beta"].transpose(-1, -2), rtol=0, atol=1e-14)


#: Every loss function, weights other than 1, a sum-rule penalty of its own weight.
WEIGHTED = {"bec": {"key": "bec", "level": "atom", "rank": 2, "sum_rule_weight": 0.3, "weight": 0.7},
            "q": {"key": "q", "level": "atom", "rank": 0, "loss": "mse", "weight": 2.5},
            "beta": {"key": "beta", "level": "structure", "rank": 3, "symmetry": "ijk=ikj", "loss": "mae",
                     "weight": 0.4},
            "e": {"key": "e", "level": "structure", "rank": 0, "reduce": "sum", "weight": 1.7},
            "mu": {"key": "mu", "level": "structure", "rank": 1, "reduce": "sum", "loss": "cosine", "weight": 0.2}}


def test_total_loss_is_the_sum_of_each_targets_loss_with_its_penalty():
    """The training loss by hand in numpy from the frames' labels: per target, the weight times
    its loss of prediction / scale and label / scale over the labelled rows, plus sum_rule_weight
    times the mean norm of each structure's summed (scaled) per-atom tensors."""
    model = etgnn.build_model({"model": MODEL, "targets": WEIGHTED})
    scales = {"bec": 1.9, "q": 0.45, "beta": 3.1, "e": 7.0, "mu": 0.6}
    with torch.no_grad():
        for name, value in scales.items():
            model.heads[name].scale.fill_(value)
    frames = _frames(4)
    rng = np.random.default_rng(5)
    for a in frames:
        a.info["mu"] = rng.normal(size=3)
    frames[1].arrays["q"][2] = np.nan  # an unlabelled atom: no part of the loss
    ds = _dataset(model, frames)
    batch = collate(ds.graphs, ds.labels, {n: t.level for n, t in model.targets.items()}, dtype=torch.float64)
    with torch.no_grad():
        out = model(batch)
    pred = {n: v.numpy() for n, v in out.items()}
    label = {"bec": np.concatenate([a.arrays["bec"] for a in frames]),
             "q": np.concatenate([a.arrays["q"] for a in frames]),
             "beta": np.stack([a.info["beta"] for a in frames]), "e": np.array([a.info["e"] for a in frames]),
             "mu": np.stack([a.info["mu"] for a in frames])}
    rows = {}  # per labelled row, each target's own loss of scaled values
    for name, y in label.items():
        err = ((pred[name] - y) / scales[name]).reshape(len(y), -1)
        err = err[~np.isnan(err).all(axis=1)]
        if name == "q":  # mse
            rows[name] = (err**2).mean(axis=1)
        elif name == "beta":  # mae
            rows[name] = np.abs(err).mean(axis=1)
        elif name == "mu":  # cosine: 1 - cos between prediction and label
            p, t = pred[name] / scales[name], y / scales[name]
            rows[name] = 1 - (p * t).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(t, axis=1)
        else:  # euclidean: Frobenius norm of the error tensor
            rows[name] = np.sqrt((err**2).sum(axis=1))
    assert len(rows["q"]) == sum(len(a) for a in frames) - 1
    owner = np.repeat(np.arange(len(frames)), [len(a) for a in frames])
    summed = np.stack([pred["bec"][owner == k].sum(axis=0) / scales["bec"] for k in range(len(frames))])
    rows["bec_sum_rule"] = np.linalg.norm(summed.reshape(len(frames), -1), axis=1)
    weights = {"bec": 0.7, "q": 2.5, "beta": 0.4, "e": 1.7, "mu": 0.2, "bec_sum_rule": 0.3}
    for reduction, reduce in (("mean", np.mean), ("sum", np.sum)):
        total, parts = total_loss(out, batch, model.targets, reduction=reduction)
        assert set(parts) == set(weights)
        for name, r in rows.items():
            assert float(parts[name]) == pytest.approx(reduce(r), rel=1e-10), (reduction, name)
        expected = sum(weights[n] * reduce(r) for n, r in rows.items())
        assert float(total) == pytest.approx(expected, rel=1e-10), reduction
    # every term matters: leaving any one out (or its weight) moves the total far past the tolerance
    terms = [weights[n] * np.mean(r) for n, r in rows.items()]
    assert min(terms) > 1e-6 * sum(terms), terms


def test_target_metrics_are_full_metrics():
    model = etgnn.build_model({"model": MODEL, "targets": TARGETS})
    rng = np.random.default_rng(4)
    pred, ref = rng.normal(size=(7, 3, 3)), rng.normal(size=(7, 3, 3))
    ref[2] = np.nan  # unlabelled atom: not scored
    z = rng.integers(1, 9, size=7)
    mine = model.targets["bec"].metrics(pred, ref, numbers=z)
    assert mine == full_metrics({"bec": pred}, {"bec": ref}, model.targets, numbers=z)["bec"]
    assert mine["n"] == 6 and mine["mae"] == pytest.approx(np.abs(pred - ref)[[0, 1, 3, 4, 5, 6]].mean())


def test_statistics_are_computed_without_a_model_and_passed_into_build_model():
    config = {"model": MODEL, "targets": TARGETS}
    frames = _frames(6)
    probe = etgnn.build_model(config)
    ds = _dataset(probe, frames)
    before = [{k: v.copy() for k, v in lab.items()} for lab in ds.labels]
    stats = compute_statistics(ds, build_targets(etgnn.load_config(config)))
    for old, new in zip(before, ds.labels):  # pure: nothing modified
        for k in old:
            np.testing.assert_array_equal(old[k], new[k])
    built = etgnn.build_model(config, statistics=stats)
    poked = etgnn.build_model(config)
    fit_normalization(poked, ds)  # the 0.1 route loads the same statistics into a built model
    for a, b in zip(built.predict(frames), poked.predict(frames)):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    # what the model holds is what it was given, and survives save / load
    assert built.statistics().to_dict() == Statistics.from_dict(stats.to_dict()).to_dict()
    z = np.concatenate([a.numbers for a in frames])
    bec = np.concatenate([a.arrays["bec"] for a in frames])
    for el in (1, 6, 8):  # per-element mean isotropic part of the Born charges
        assert stats.targets["bec"].shift[el][0] == pytest.approx(np.trace(bec[z == el], axis1=1, axis2=2).mean() / 3)
    n_edges = sum(g[K.EDGE_INDEX].shape[1] for g in ds.graphs)
    assert stats.edges_per_atom == pytest.approx(n_edges / len(z))


def test_normaliser_repr_is_readable():
    config = {"model": MODEL, "targets": {"bec": TARGETS["bec"]}}
    frames = _frames(4)
    ds = _dataset(etgnn.build_model(config), frames)
    model = etgnn.build_model(config, statistics=compute_statistics(ds, build_targets(etgnn.load_config(config))))
    text = repr(model.heads["bec"].normalizer)
    s = model.statistics().targets["bec"]
    assert text.startswith(f"ScaleShift(rank=2, scale={s.scale:.4g}, shift={{H: [")
    assert ", C: [" in text and ", O: [" in text
    assert repr(model.backbone.counts).startswith("NeighbourCounts(edges_per_atom=")
