"""Deep ensembles (issue 26, the reference method): the members differ, the model's prediction is
their mean for predict, the calculator and evaluate, NAME_std is their spread times the calibration
scale, the mean keeps the sum rule and rotates, the model file round-trips, samples are the
members, and ``training.ensemble: N`` trains, joins and resumes member by member."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.spacegroup import crystal

import etgnn
from etgnn.data.dataset import GraphDataset
from etgnn.errors import ConfigError, EtgnnError
from etgnn.evaluate import evaluate
from etgnn.tensors import random_rotation
from etgnn.testing import equivariance_errors
from etgnn.uncertainty import Ensemble
from etgnn.uncertainty.ensemble import NEGLIGIBLE_STD
from etgnn.uncertainty.sampling import SampledPredictor, output_covariance, posterior_samples

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"hidden_channels": 12, "triplet_channels": 8, "num_blocks": 1, "int_emb_size": 8, "basis_emb_size": 4,
         "num_spherical": 4, "cutoff": 4.5, "triplet_cutoff": 3.3, "dtype": "float64"}
TARGETS = {"bec": {"key": "bec", "level": "atom", "rank": 2, "sum_rule": True},
           "dielectric": {"key": "eps", "level": "structure", "rank": 2, "symmetry": "ij=ji"},
           "dipole": {"key": "mu", "level": "structure", "rank": 1, "reduce": "sum"},
           "energy": {"key": "E", "level": "structure", "rank": 0, "reduce": "sum"},
           "forces": {"key": "F", "level": "atom", "rank": 1, "gradient_of": "energy"}}
N = 3


def member(perturb, k: int):
    """Member ``k`` alone: seed ``k``, perturbed so its outputs are O(1)."""
    return perturb(etgnn.build_model({"model": {**SMALL, "seed": k}, "targets": TARGETS}), seed=k).eval()


@pytest.fixture
def members(perturb):
    return [member(perturb, k) for k in range(N)]


@pytest.fixture
def ensemble(perturb):
    """Member 0 holding members 1 and 2 (separate instances from ``members``)."""
    model = member(perturb, 0)
    model.uncertainty = Ensemble([member(perturb, k) for k in range(1, N)], list(model.targets))
    return model


def rutile() -> Atoms:
    """SnO2: O on a site of symmetry mmm; rattled so that every component is allowed."""
    at = crystal(["Sn", "O"], basis=[(0, 0, 0), (0.3056, 0.3056, 0)], spacegroup=136,
                 cellpar=[4.737, 4.737, 3.186, 90, 90, 90])
    return at


def frames() -> list[Atoms]:
    out = [molecule("CH3OH"), rutile()]
    out[0].rattle(0.05, seed=1)
    out[1].rattle(0.03, seed=2)
    return out


def stacked(preds_per_member, name):
    return np.stack([np.concatenate([p[name].reshape(-1) for p in preds]) for preds in preds_per_member])


def test_members_differ_and_the_prediction_is_their_mean(members, ensemble):
    data = frames()
    each = [m.predict(data) for m in members]
    got = ensemble.predict(data)
    for name in TARGETS:
        x = stacked(each, name)
        assert np.abs(x[1] - x[0]).max() > 1e-2 * np.abs(x).max(), f"{name}: members 0 and 1 predict the same"
        np.testing.assert_allclose(stacked([got], name)[0], x.mean(0), rtol=1e-10, atol=1e-12, err_msg=name)
    # the ASE calculator, one structure at a time
    atoms = data[1].copy()
    atoms.calc = etgnn.ETGNNCalculator(ensemble)
    np.testing.assert_allclose(atoms.calc.get_property("bec", atoms), np.mean([e[1]["bec"] for e in each], 0),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(atoms.calc.get_property("forces_std", atoms),
                               np.std([e[1]["forces"] for e in each], 0, ddof=1), rtol=1e-8, atol=1e-12)
    # evaluate: the metrics are those of the mean
    labels = [{"bec": p["bec"] + 0.1, "dielectric": p["dielectric"], "dipole": p["dipole"], "energy": p["energy"],
               "forces": p["forces"]} for p in each[0]]
    dataset = GraphDataset([ensemble.graph(a) for a in data], labels, ["a", "b"])
    _, pred, _ = evaluate(ensemble, dataset)
    np.testing.assert_allclose(pred["bec"].reshape(-1), stacked(each, "bec").mean(0), rtol=1e-10, atol=1e-12)


def test_std_is_the_members_spread_times_the_scale(members, ensemble):
    data = [molecule("H2O")] + frames()  # H2O: the dipole along x and y is forbidden (C2v)
    ensemble.uncertainty.scales.update(bec=1.7, dipole=0.5)
    each = [m.predict(data) for m in members]
    got = ensemble.predict(data, uncertainty=True)
    for name in TARGETS:
        scale = ensemble.uncertainty.scales[name]
        x = stacked(each, name)
        spread = scale * x.std(0, ddof=1)
        std = stacked([got], f"{name}_std")[0]
        allowed = spread > 10 * NEGLIGIBLE_STD * float(ensemble.heads[name].scale)
        np.testing.assert_allclose(std[allowed], spread[allowed], rtol=1e-8, err_msg=name)
        assert (std[~allowed] < 1e-4 * np.abs(spread).max()).all(), name
        for g in range(len(data)):
            assert got[g][f"{name}_std"].shape == got[g][name].shape, name
    assert np.all(got[0]["dipole_std"][:2] == 0.0) and got[0]["dipole_std"][2] > 0, got[0]["dipole_std"]
    for g in got:  # index symmetry of the prediction and of its std
        np.testing.assert_allclose(g["dielectric"], g["dielectric"].T, atol=1e-12)
        np.testing.assert_allclose(g["dielectric_std"], g["dielectric_std"].T, atol=1e-12)
    # the covariance of a row's components: its diagonal is std^2
    from etgnn.data.batch import collate

    batch = collate([ensemble.graph(data[2])], dtype=ensemble.dtype)
    cov = ensemble.uncertainty.std(ensemble, batch, covariance=True)["bec"]
    np.testing.assert_allclose(np.diagonal(cov.numpy(), axis1=1, axis2=2).reshape(-1),
                               got[2]["bec_std"].reshape(-1) ** 2, rtol=1e-8, atol=1e-14)


def test_the_mean_obeys_the_sum_rule_and_rotates(ensemble):
    data = frames()
    for p in ensemble.predict(data):
        assert np.abs(p["bec"].sum(0)).max() < 1e-10 and np.abs(p["forces"].sum(0)).max() < 1e-10
    for atoms in data:
        errors = equivariance_errors(ensemble, atoms, random_rotation(np.random.default_rng(3)))
        assert max(errors.values()) < 1e-9, errors


def test_the_model_file_keeps_the_members(ensemble, tmp_path):
    ensemble.uncertainty.scales["bec"] = 2.5
    ensemble.save(tmp_path / "ens.pt")
    loaded = etgnn.load_model(tmp_path / "ens.pt")
    assert isinstance(loaded.uncertainty, Ensemble) and loaded.uncertainty.size == N
    a, b = ensemble.predict(frames(), uncertainty=True), loaded.predict(frames(), uncertainty=True)
    for p, q in zip(a, b):
        for name in p:
            np.testing.assert_array_equal(p[name], q[name], err_msg=name)


def test_calibration_matches_the_two_sigma_coverage(members, ensemble):
    rng = np.random.default_rng(0)
    data = [molecule(n) for n in ("CH3OH", "CH4", "H2O", "NH3", "H2CO", "C2H6")] * 3
    for a in data:
        a.rattle(0.1, seed=int(rng.integers(1000)))
    truth = member(lambda m, seed: m, 7).predict(data)  # labels from another model: errors of O(1)
    labels = [{n: t[n] for n in TARGETS} for t in truth]
    val = GraphDataset([ensemble.graph(a) for a in data], labels, [str(k) for k in range(len(data))])
    report = ensemble.uncertainty.calibrate(ensemble, val)
    _, _, _ = evaluate(ensemble, val)
    from etgnn.uncertainty import evaluate_uncertainty

    metrics = evaluate_uncertainty(ensemble, val)
    for name in ("bec", "dipole", "forces"):
        assert report[name]["scale"] == ensemble.uncertainty.scales[name] > 0
        assert report[name]["coverage_2sigma"] == pytest.approx(metrics[name]["coverage_2sigma"])
        assert abs(metrics[name]["coverage_2sigma"] - 0.954) < 0.03, (name, metrics[name])


def test_samples_are_the_members(members, ensemble):
    data = frames()
    each = [m.predict(data) for m in members]
    preds, samples = posterior_samples(ensemble, data, n_samples=32)
    for g in range(len(data)):
        assert samples[g]["bec"].shape == (N, *preds[g]["bec"].shape)
        np.testing.assert_allclose(samples[g]["bec"], np.stack([e[g]["bec"] for e in each]), rtol=1e-8, atol=1e-10)
        assert np.abs(samples[g]["bec"].sum(1)).max() < 1e-10  # the sum rule, sample by sample
    ensemble.uncertainty.scales["dielectric"] = 3.0  # deviations from the mean times the scale
    _, scaled = posterior_samples(ensemble, data)
    x = np.stack([e[1]["dielectric"] for e in each])
    np.testing.assert_allclose(scaled[1]["dielectric"], x.mean(0) + 3.0 * (x - x.mean(0)), rtol=1e-8, atol=1e-10)
    values = SampledPredictor(ensemble).predict(data)
    assert values[0]["dipole"].shape == (1 + N, 3)
    with pytest.raises(EtgnnError, match="needs the last-layer posterior of LLPR"):
        output_covariance(ensemble, data[0], "bec")


def test_phonon_samples_are_the_members(perturb):
    pytest.importorskip("phonopy")
    import torch
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from etgnn.observables import phonons as P
    from etgnn.observables.phonons_uq import format_uncertainty, sample_gamma_modes

    def born_model(k):
        m = member(perturb, k)
        with torch.no_grad():
            m.heads["dielectric"].normalizer.element_shift[:, 0] += 6.0  # eps_inf positive definite
        return m

    model = born_model(0)
    model.uncertainty = Ensemble([born_model(k) for k in range(1, N)], list(model.targets))
    cucl = bulk("CuAl", "cesiumchloride", a=2.95)
    ph = P.phonopy_from_calculator(cucl, EMT(), [2, 2, 2])
    samples = sample_gamma_modes(ph, model, 32, direction=(0, 0, 1), bec_target="bec", eps_target="dielectric")
    assert samples.n_samples == N and "3 members of the deep ensemble" in samples.source
    assert np.abs(samples.born.sum(axis=1)).max() < 1e-10  # the sum rule, member by member
    plain = model.predict(cucl)[0]  # the members' mean: the centre of the samples (symmetrisation is linear)
    params = P.nac_params(ph, plain["bec"], plain["dielectric"])
    np.testing.assert_allclose(samples.epsilon_inf.mean(0), params["dielectric"], rtol=1e-8, atol=1e-10)
    P.set_nac(ph, params)
    text = format_uncertainty(samples, P.gamma_modes(ph, (0, 0, 1)), params["dielectric"])
    assert "over the 3 members of the deep ensemble" in text


# ------------------------------------------------------------------------------ training
def labelled_molecules(n: int, seed: int = 0) -> list[Atoms]:
    """Random 3-5 atom H/C/O molecules with a per-atom vector ``v_i = sum_j (r_j - r_i) exp(-r_ij)``."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        k = int(rng.integers(3, 6))
        pos = rng.uniform(0.0, 2.6, size=(k, 3))
        d = pos[None] - pos[:, None]
        r = np.linalg.norm(d, axis=-1)
        if (r + 10 * np.eye(k)).min() < 0.9:
            continue
        atoms = Atoms(numbers=rng.choice([1, 6, 8], size=k), positions=pos)
        atoms.new_array("vec", (d * (np.exp(-r) * (1 - np.eye(k)))[..., None]).sum(axis=1))
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "mols.extxyz"
    ase.io.write(path, labelled_molecules(30), format="extxyz")
    return path


def config(tmp_path, data, **training):
    return {"model": {**SMALL, "num_radial": 4, "num_spherical": 3, "dtype": "float32"},
            "targets": {"vec": {"key": "vec", "level": "atom", "rank": 1}},
            "data": {"train": str(data), "split": [0.5, 0.25, 0.25], "cache_dir": None, "num_workers": 0},
            "training": {"max_epochs": 1, "batch_size": 8, "lr": 3e-3, "progress": False, "ensemble": 2} | training,
            "run_dir": str(tmp_path / "run")}


@pytest.fixture(autouse=True)
def _no_parity_plots(monkeypatch):
    import etgnn.train.plots

    monkeypatch.setattr(etgnn.train.plots, "parity_plot", lambda *args, **kwargs: None)


def test_training_an_ensemble_writes_the_members_and_one_model_file(tmp_path, data_file):
    from etgnn.train import train

    result = train(config(tmp_path, data_file))
    run = tmp_path / "run"
    seeds = [etgnn.load_model(run / f"member_{k}" / "best.ckpt").config for k in range(2)]
    assert [(c.model.seed, c.training.seed) for c in seeds] == [(0, 0), (1, 1)]
    model = etgnn.load_model(run / "best.ckpt")
    assert isinstance(model.uncertainty, Ensemble) and model.uncertainty.size == 2
    assert model.config.training.ensemble == 2
    frames_ = ase.io.read(data_file, ":4")
    each = [etgnn.load_model(run / f"member_{k}" / "best.ckpt").predict(frames_) for k in range(2)]
    x = stacked(each, "vec")
    assert np.abs(x[0] - x[1]).max() > 1e-3 * np.abs(x).max()
    got = model.predict(frames_, uncertainty=True)
    np.testing.assert_allclose(stacked([got], "vec")[0], x.mean(0), rtol=1e-5, atol=1e-6)
    scale = model.uncertainty.scales["vec"]
    np.testing.assert_allclose(stacked([got], "vec_std")[0], scale * x.std(0, ddof=1), rtol=1e-4, atol=1e-6)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ensemble"] == 2 and len(metrics["members"]) == 2 and result.members
    assert set(metrics["uncertainty"]) >= {"calibration", "val", "test"}
    assert metrics["val"]["vec"]["mae"] == pytest.approx(result.metrics["val"]["vec"]["mae"])
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config(tmp_path, data_file))


def test_an_interrupted_ensemble_resumes_member_by_member(tmp_path, data_file, monkeypatch):
    from etgnn.train import train
    from etgnn.train import trainer as trainer_mod

    real = trainer_mod._train_epoch

    def interrupted(net, model, loader, opt, ema, cfg, *args):
        if cfg.run_dir.endswith("member_1") and args[1] == 1:  # member 1, its second epoch
            raise KeyboardInterrupt
        return real(net, model, loader, opt, ema, cfg, *args)

    monkeypatch.setattr(trainer_mod, "_train_epoch", interrupted)
    cfg = config(tmp_path, data_file, max_epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    run = tmp_path / "run"
    first = (run / "member_0" / "last.ckpt").stat().st_mtime_ns
    assert (run / "member_0" / "metrics.json").is_file() and not (run / "member_1" / "metrics.json").is_file()
    assert not (run / "best.ckpt").exists()
    monkeypatch.setattr(trainer_mod, "_train_epoch", real)
    result = train(cfg, resume=True)
    assert (run / "member_0" / "last.ckpt").stat().st_mtime_ns == first  # member 0 was not trained again
    log = (run / "member_1" / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["0", "1"]
    assert [m.epochs_run for m in result.members] == [2, 2]
    assert etgnn.load_model(run / "best.ckpt").uncertainty.size == 2


@pytest.mark.parametrize("value, message", [(0, "training.ensemble must be an integer >= 1"),
                                            ("four", "training.ensemble must be an integer"),
                                            (2.5, "training.ensemble must be an integer")])
def test_config_errors_name_the_key(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message):
        etgnn.config.load_config(config(tmp_path, "x.xyz", ensemble=value))
    with pytest.raises(ConfigError, match="training.ensemble: 2 is its own uncertainty"):
        etgnn.config.load_config(config(tmp_path, "x.xyz", uncertainty="llpr"))
