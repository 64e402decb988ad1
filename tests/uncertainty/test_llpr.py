"""LLPR (issue 26): last-layer features, the posterior against closed-form Bayesian linear
regression, calibration, sigma's shape and symmetry, rotation of the covariance, unseen elements,
and the model file."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import etgnn
from etgnn._warnings import UnseenElementWarning
from etgnn.data.batch import collate
from etgnn.data.dataset import GraphDataset
from etgnn.tensors import random_rotation, rotate
from etgnn.uncertainty import LLPR, LastLayerPosterior, last_layer_features, last_layer_parameters

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"hidden_channels": 12, "triplet_channels": 8, "num_blocks": 1, "int_emb_size": 8, "basis_emb_size": 4,
         "num_spherical": 4, "cutoff": 4.5, "triplet_cutoff": 3.3, "dtype": "float64"}
#: per-atom with the sum rule, per-atom rank 3, structure ranks 0-3 with symmetries and both reductions
TARGETS = {
    "bec": {"key": "bec", "level": "atom", "rank": 2, "sum_rule": True},
    "atom3": {"key": "atom3", "level": "atom", "rank": 3},
    "energy": {"key": "energy", "level": "structure", "rank": 0, "reduce": "sum"},
    "dipole": {"key": "dipole", "level": "structure", "rank": 1, "reduce": "sum"},
    "dielectric": {"key": "dielectric", "level": "structure", "rank": 2, "symmetry": "ij=ji"},
    "piezo": {"key": "piezo", "level": "structure", "rank": 3, "symmetry": "ijk=ikj"},
}


def fresh_model(perturb, targets=TARGETS, seed=0):
    model = etgnn.build_model({"model": {**SMALL, "seed": seed}, "targets": targets})
    return perturb(model, seed).eval()


def molecules(n: int, seed: int = 0, elements=(1, 6, 8)) -> list[Atoms]:
    """``n`` random 3-5 atom molecules (no labels)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        k = int(rng.integers(3, 6))
        pos = rng.uniform(0.0, 2.4, size=(k, 3))
        r = np.linalg.norm(pos[None] - pos[:, None], axis=-1) + 10 * np.eye(k)
        if r.min() > 0.9:
            out.append(Atoms(numbers=rng.choice(elements, size=k), positions=pos))
    return out


def labelled_dataset(model, frames, noise: float, seed: int) -> GraphDataset:
    """Each target labelled with the model's own prediction plus Gaussian noise of std ``noise``."""
    rng = np.random.default_rng(seed)
    preds = model.predict(frames)
    labels = [{n: p[n] + noise * rng.standard_normal(p[n].shape) for n in model.targets} for p in preds]
    graphs = [model.graph(a) for a in frames]
    return GraphDataset(graphs, labels, [str(k) for k in range(len(frames))])


def batch_of(model, frames):
    return collate([model.graph(a) for a in frames], dtype=model.dtype)


def reference_jacobian(model, name, batch):
    """d(output component)/d(last-layer weights) by reverse mode, one component at a time."""
    b = model.geometry(batch)
    with torch.no_grad():
        feats = model.backbone(b)
    head = model.heads[name]
    params = list(last_layer_parameters(head).values())
    out = head(feats, b).reshape(b["_n_atoms"].shape[0] if head.level == "structure" else b["_numbers"].shape[0], -1)
    rows = []
    for r in range(out.shape[0]):
        comps = []
        for c in range(out.shape[1]):
            grads = torch.autograd.grad(out[r, c], params, retain_graph=True, allow_unused=True)
            comps.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                    for g, p in zip(grads, params)]))
        rows.append(torch.stack(comps))
    return torch.stack(rows).detach()


@pytest.mark.parametrize("name", list(TARGETS))
def test_features_are_the_last_layer_gradients_and_the_output_is_linear_in_them(perturb, name):
    model = fresh_model(perturb)
    batch = batch_of(model, [molecule("CH3OH"), molecules(1, seed=4)[0]])
    jac = LLPR({name: LastLayerPosterior(1)}).features(model, batch)[name]
    ref = reference_jacobian(model, name, batch)
    assert jac.shape == ref.shape
    np.testing.assert_allclose(jac.numpy(), ref.numpy(), rtol=1e-9, atol=1e-12 * float(ref.abs().max()))
    # exact linearity: output(theta) - output(0) = J theta
    head = model.heads[name]
    b = model.geometry(batch)
    with torch.no_grad():
        feats = model.backbone(b)
        out = head(feats, b).reshape(jac.shape[0], -1)
        theta = torch.cat([p.reshape(-1) for p in last_layer_parameters(head).values()])
        saved = [p.clone() for p in last_layer_parameters(head).values()]
        for p in last_layer_parameters(head).values():
            p.zero_()
        out0 = head(feats, b).reshape(jac.shape[0], -1)
        for p, s in zip(last_layer_parameters(head).values(), saved):
            p.copy_(s)
    np.testing.assert_allclose((out - out0).numpy(), (jac @ theta).numpy(), atol=1e-10 * float(out.abs().max()))


def test_posterior_is_bayesian_linear_regression_on_a_linear_toy_problem():
    """Features X, noise variance s2n, prior variance s2p: LLPR with alpha^2 = s2n and
    lambda = s2n / s2p is the closed-form posterior predictive variance x^T (X^T X / s2n + I / s2p)^-1 x."""
    rng = np.random.default_rng(0)
    p, s2n, s2p = 7, 0.3**2, 2.0**2
    x_train = rng.standard_normal((40, p)) * np.linspace(0.2, 3.0, p)
    x_test = rng.standard_normal((9, p))
    post = LastLayerPosterior(p)
    for chunk in np.array_split(x_train, 5):  # accumulated batch by batch
        post.add(torch.as_tensor(chunk))
    post.set(regularizer=s2n / s2p, alpha2=s2n)
    cov = np.linalg.inv(x_train.T @ x_train / s2n + np.eye(p) / s2p)
    expected = np.einsum("np,pq,nq->n", x_test, cov, x_test)
    np.testing.assert_allclose(post.variance(torch.as_tensor(x_test)).numpy(), expected, rtol=1e-10)
    # and the same through a model: the design matrix is the model's own last-layer features
    samples = rng.multivariate_normal(np.zeros(p), cov, size=200_000) @ x_test.T  # posterior draws of x.w
    np.testing.assert_allclose(samples.var(0), expected, rtol=0.02)


def test_llpr_of_a_model_is_the_closed_form_posterior_of_its_features(perturb):
    model = fresh_model(perturb, targets={"dielectric": TARGETS["dielectric"], "bec": TARGETS["bec"]})
    train, test = molecules(12, seed=1), molecules(3, seed=2)
    llpr = LLPR.fit(model, labelled_dataset(model, train, 0.1, 0), labelled_dataset(model, molecules(6, 3), 0.1, 1))
    for name, post in llpr.posteriors.items():
        x = torch.cat([reference_jacobian(model, name, batch_of(model, [a])).reshape(-1, post.n_features) for a in train])
        x_test = reference_jacobian(model, name, batch_of(model, test))
        cov = post.alpha2 * torch.linalg.inv(x.T @ x + post.regularizer * torch.eye(post.n_features, dtype=x.dtype))
        expected = torch.einsum("rcp,pq,rcq->rc", x_test, cov, x_test).sqrt()
        got = llpr.std(model, batch_of(model, test))[name].reshape(expected.shape)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("method", ["coverage2", "coverage1", "likelihood"])
@pytest.mark.parametrize("factor", [0.2, 3.0])
def test_calibration_recovers_a_known_factor(factor, method):
    """Residuals drawn with std factor x the LLPR sigma of a known lambda: every method finds
    alpha = factor; the likelihood also finds lambda, and the coverage methods pick the lambda
    whose sigma ranks the rows' errors best, which is the true one here."""
    rng = np.random.default_rng(1)
    p = 12
    post = LastLayerPosterior(p)
    post.add(torch.as_tensor(rng.standard_normal((300, p)) * np.geomspace(0.01, 10, p)))
    lam_rel = post.calibrator().relative[6]  # 1e-5 of the mean eigenvalue: on the grid
    truth = LastLayerPosterior.from_state_dict(post.state_dict())
    truth.set(lam_rel * post.mean_eigenvalue, 1.0)
    cal = post.calibrator(method=method)
    for _ in range(10):
        f = torch.as_tensor(rng.standard_normal((2000, 3, p)) * rng.uniform(0.01, 3, size=(2000, 1, 1)))
        err = factor * truth.variance(f).sqrt() * torch.as_tensor(rng.standard_normal((2000, 3)))
        cal.add(f, err)
    info = cal.finish()
    assert info["method"] == method
    assert info["alpha"] == pytest.approx(factor, rel=0.03)
    assert info["lambda_relative"] == pytest.approx(lam_rel, rel=1e-9) or method != "likelihood"
    assert info["coverage_1sigma"] == pytest.approx(0.683, abs=0.01)
    assert info["coverage_2sigma"] == pytest.approx(0.954, abs=0.01)
    assert info["spearman"] > 0.5


def test_coverage_calibration_resists_a_heavy_tail_that_inflates_the_likelihood_fit():
    """Gaussian residuals with 2 % of them 30x larger: the likelihood's alpha grows to cover the
    tail (far too many components within 1 sigma); matching the 2-sigma share keeps the bulk right."""
    rng = np.random.default_rng(2)
    p = 6
    post = LastLayerPosterior(p)
    post.add(torch.as_tensor(rng.standard_normal((200, p))))
    post.set(1e-3 * post.mean_eigenvalue, 1.0)
    f = torch.as_tensor(rng.standard_normal((20000, 1, p)))
    err = post.variance(f).sqrt() * torch.as_tensor(rng.standard_normal((20000, 1)))
    err[:400] *= 30.0
    infos = {}
    for method in ("likelihood", "coverage2"):
        cal = post.calibrator(grid=(1e-3,), method=method)
        cal.add(f, err)
        infos[method] = cal.finish()
    assert infos["likelihood"]["alpha"] > 3.0 and infos["likelihood"]["coverage_1sigma"] > 0.95
    assert 1.0 < infos["coverage2"]["alpha"] < 1.2  # 1.116: the 97.4 % quantile covers the 2 % tail
    assert infos["coverage2"]["coverage_2sigma"] == pytest.approx(0.954, abs=0.005)


#: the calibrated model shared by the tests of this file (fitted once, on first use)
_CALIBRATED: dict = {}


@pytest.fixture
def calibrated(perturb, tmp_path_factory):
    """A model with LLPR fitted on its own predictions plus noise 0.05, and its saved file
    (fitted once for the whole file; tests must not modify it)."""
    if "model" not in _CALIBRATED:
        model = fresh_model(perturb)
        model.elements_seen[[1, 6, 8]] = True
        model.uncertainty = LLPR.fit(model, labelled_dataset(model, molecules(16, seed=1), 0.05, 0),
                                     labelled_dataset(model, molecules(8, seed=2), 0.05, 1))
        path = tmp_path_factory.mktemp("llpr") / "model.pt"
        model.save(path)
        _CALIBRATED["model"] = (model, path)
    return _CALIBRATED["model"]


def test_sigma_has_the_shape_and_index_symmetry_of_the_prediction(calibrated):
    model, _ = calibrated
    pred = model.predict([molecule("CH3OH"), molecule("H2O")], uncertainty=True)
    for p in pred:
        for name in TARGETS:
            std = p[f"{name}_std"]
            assert std.shape == p[name].shape, name
            assert np.all(std >= 0) and np.all(np.isfinite(std)), name
        np.testing.assert_allclose(p["dielectric_std"], p["dielectric_std"].T, rtol=1e-10)
        np.testing.assert_allclose(p["piezo_std"], p["piezo_std"].transpose(0, 2, 1), rtol=1e-10)
        assert p["energy_std"].shape == () and p["energy_std"] > 0
    # calibrated on noise 0.05: sigma is of that order, not of the O(1) predictions
    assert 0.005 < np.median(pred[0]["dielectric_std"]) < 0.5


def test_model_file_keeps_the_uncertainty(calibrated):
    model, path = calibrated
    loaded = etgnn.load_model(path)
    assert isinstance(loaded.uncertainty, LLPR)
    a, b = (m.predict(molecule("CH3OH"), uncertainty=True)[0] for m in (model, loaded))
    for name in TARGETS:
        np.testing.assert_allclose(b[f"{name}_std"], a[f"{name}_std"], rtol=1e-9, atol=1e-12 * a[f"{name}_std"].max())


def test_without_uncertainty_predict_says_how_to_add_it(perturb):
    model = fresh_model(perturb, targets={"dipole": TARGETS["dipole"]})
    assert "dipole_std" not in model.predict(molecule("H2O"))[0]
    with pytest.raises(etgnn.errors.EtgnnError, match="etgnn calibrate"):
        model.predict(molecule("H2O"), uncertainty=True)


@pytest.mark.parametrize("improper", [False, True])
def test_component_covariance_rotates_as_the_tensor_and_its_trace_is_invariant(calibrated, improper):
    model, _ = calibrated
    atoms = molecules(1, seed=7)[0]
    r = random_rotation(np.random.default_rng(3), improper=improper)
    turned = atoms.copy()
    turned.positions = atoms.positions @ r.T
    cov = model.uncertainty.std(model, batch_of(model, [atoms]), covariance=True)
    cov_r = model.uncertainty.std(model, batch_of(model, [turned]), covariance=True)
    for name, c in cov.items():
        rank = model.targets[name].rank
        d = rotate(np.eye(3**rank).reshape(3**rank, *(3,) * rank), r, rank).reshape(3**rank, 3**rank).T  # D(R)
        expected = d @ c.numpy() @ d.T
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(cov_r[name].numpy(), expected, atol=1e-9 * scale, err_msg=name)
        np.testing.assert_allclose(np.trace(cov_r[name].numpy(), axis1=1, axis2=2),
                                   np.trace(c.numpy(), axis1=1, axis2=2), rtol=1e-9, err_msg=name)
        if rank >= 1 and not improper:  # the check can fail: the covariance is not isotropic
            assert np.abs(cov_r[name].numpy() - c.numpy()).max() > 1e-6 * scale, name


def test_an_unseen_element_raises_sigma_and_warns(calibrated):
    model, _ = calibrated
    seen = molecule("CH3OH")
    unseen = seen.copy()
    unseen.numbers[0] = 14  # C -> Si: never in the training data
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenElementWarning)
        base = model.predict(seen, uncertainty=True)[0]
    with pytest.warns(UnseenElementWarning, match="Si"):
        new = model.predict(unseen, uncertainty=True)[0]
    for name in TARGETS:
        scale = float(model.heads[name].scale)
        std = new[f"{name}_std"]
        assert std[std > 0].min() >= scale * (1 - 1e-12), name
        assert std.mean() > base[f"{name}_std"].mean(), name
        np.testing.assert_array_equal(std == 0, base[f"{name}_std"] == 0, err_msg=name)  # the mirror of CH3OH stays


def test_sigma_vanishes_exactly_where_the_symmetry_forbids_the_component(calibrated):
    """H2O (C2v, axis z, plane yz): the dipole may only point along z; CH4 (Td): no dipole at all."""
    model, _ = calibrated
    h2o, ch4 = model.predict([molecule("H2O"), molecule("CH4")], uncertainty=True)
    assert h2o["dipole_std"][0] == 0.0 and h2o["dipole_std"][1] == 0.0 and h2o["dipole_std"][2] > 0
    assert np.all(ch4["dipole_std"] == 0.0)
    assert np.all(ch4["dielectric_std"][~np.eye(3, dtype=bool)] == 0.0) and np.all(np.diag(ch4["dielectric_std"]) > 0)
