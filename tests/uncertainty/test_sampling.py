"""Posterior samples of a model's outputs (issue 26, item 4) and active-learning selection (item 5).

Models are tiny perturbed random-weight ones; their LLPR is set by hand (features of a few
training structures, a fixed lambda and alpha), so no calibration runs here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.spacegroup import crystal

import etgnn
from etgnn.data.batch import collate
from etgnn.errors import ConfigError
from etgnn.uncertainty import LLPR, LastLayerPosterior, n_last_layer
from etgnn.uncertainty.sampling import output_covariance, posterior_samples, weight_samples
from etgnn.uncertainty.selection import greedy_select, select_structures

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = {"model": {"hidden_channels": 12, "triplet_channels": 8, "num_blocks": 1, "int_emb_size": 8,
                    "basis_emb_size": 4, "num_spherical": 4, "cutoff": 4.5, "triplet_cutoff": 3.3,
                    "dtype": "float64", "seed": 5},
          "targets": {"bec": {"key": "becs", "level": "atom", "rank": 2, "sum_rule": True},
                      "dielectric": {"key": "eps", "level": "structure", "rank": 2, "symmetry": "ij=ji"}}}


def rutile() -> Atoms:
    """SnO2 rutile: O on a site of symmetry mmm (anisotropic, constrained Born charges)."""
    return crystal(["Sn", "O"], basis=[(0, 0, 0), (0.3056, 0.3056, 0)], spacegroup=136,
                   cellpar=[4.737, 4.737, 3.186, 90, 90, 90])


def training_frames() -> list[Atoms]:
    rng = np.random.default_rng(0)
    out = []
    for a in (4.6, 4.75, 4.9):
        at = rutile()
        at.set_cell(at.cell * a / 4.737, scale_atoms=True)
        at.positions += rng.normal(scale=0.05, size=at.positions.shape)
        out.append(at)
    return out


def with_llpr(model, frames, lam_rel=1e-3, alpha2=0.04):
    """Give ``model`` an LLPR from the features of ``frames`` (lambda relative to the mean eigenvalue)."""
    llpr = LLPR({n: LastLayerPosterior(n_last_layer(model.heads[n])) for n in model.heads})
    batch = collate([model.graph(a) for a in frames], dtype=model.dtype)
    for n, j in llpr.features(model, batch).items():
        llpr.posteriors[n].add(j.reshape(-1, j.shape[-1]))
    for post in llpr.posteriors.values():
        post.set(lam_rel * post.mean_eigenvalue, alpha2)
    model.uncertainty = llpr
    return model


@pytest.fixture
def model(perturb):
    m = perturb(etgnn.build_model(CONFIG), seed=5).eval()
    with torch.no_grad():
        m.heads["dielectric"].normalizer.element_shift[:, 0] += 6.0
    return with_llpr(m, training_frames())


def site_symmetry_error(atoms, z, symprec=1e-5) -> float:
    """max over space-group operations of |Z_perm(k) - R Z_k R^T|."""
    import spglib

    cell = (np.asarray(atoms.cell), atoms.get_scaled_positions(), atoms.numbers)
    ds = spglib.get_symmetry(cell, symprec=symprec)
    frac, a = atoms.get_scaled_positions(), np.asarray(atoms.cell).T
    worst = 0.0
    for r, t in zip(ds["rotations"], ds["translations"]):
        moved = frac @ r.T + t
        d = moved[:, None, :] - frac[None, :, :]
        perm = np.argmin(np.abs(d - np.round(d)).sum(axis=2), axis=1)
        rc = a @ r @ np.linalg.inv(a)
        worst = max(worst, float(np.abs(z[perm] - np.einsum("ab,kbc,dc->kad", rc, z, rc)).max()))
    return worst


# ----------------------------------------------------------------------------- sampling
def test_weight_samples_have_the_covariance():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    cov = torch.as_tensor(a @ a.T)
    draws = weight_samples(cov, 40_000, seed=3)
    assert draws.shape == (40_000, 5) and draws.dtype == torch.float64
    np.testing.assert_allclose(np.cov(draws.numpy().T), cov.numpy(), atol=0.05 * float(cov.abs().max()))
    assert torch.equal(draws, weight_samples(cov, 40_000, seed=3))  # deterministic
    assert float(weight_samples(torch.zeros(4, 4), 10, seed=0).abs().max()) == 0.0


def test_sampled_born_charges_obey_sum_rule_and_site_symmetry(model):
    atoms = rutile()
    preds, samples = posterior_samples(model, [atoms], 16, seed=0)
    z = samples[0]["bec"]
    assert z.shape == (16, len(atoms), 3, 3)
    spread = float(np.abs(z - preds[0]["bec"]).max())
    assert spread > 1e-3  # the samples do differ from the prediction
    assert np.abs(z.sum(axis=1)).max() < 1e-10 * max(1.0, np.abs(z).max())  # acoustic sum rule, every sample
    for s in range(z.shape[0]):
        assert site_symmetry_error(atoms, z[s]) < 1e-9 * max(1.0, np.abs(z).max())
    eps = samples[0]["dielectric"]
    np.testing.assert_allclose(eps, eps.transpose(0, 2, 1), atol=1e-12)
    # tetragonal point group: eps_xx = eps_yy, off-diagonal 0, in every sample
    np.testing.assert_allclose(eps[:, 0, 0], eps[:, 1, 1], atol=1e-10)
    assert np.abs(eps[:, 0, 1]).max() < 1e-10


def test_sample_std_of_a_linear_observable_matches_the_analytic_propagation(model):
    atoms = rutile()
    rng = np.random.default_rng(7)
    w = rng.normal(size=(len(atoms), 3, 3))
    n = 4000
    preds, samples = posterior_samples(model, [atoms], n, seed=11)
    obs = np.einsum("skab,kab->s", samples[0]["bec"], w)
    cov = output_covariance(model, atoms, "bec")  # (n_atoms * 9, n_atoms * 9)
    analytic = float(np.sqrt(w.reshape(-1) @ cov @ w.reshape(-1)))
    assert analytic > 1e-4
    assert obs.std(ddof=1) == pytest.approx(analytic, rel=4 * np.sqrt(1 / (2 * n)))  # 4 standard errors
    assert obs.mean() == pytest.approx(np.einsum("kab,kab->", preds[0]["bec"], w), abs=4 * analytic / np.sqrt(n))
    # the diagonal of the joint covariance is LLPR's own sigma
    batch = collate([model.graph(atoms)], dtype=model.dtype)
    sigma = model.uncertainty.std(model, batch)["bec"].numpy()
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), sigma.reshape(-1), rtol=1e-8, atol=1e-12)


def test_zero_posterior_covariance_gives_the_plain_prediction(model):
    for post in model.uncertainty.posteriors.values():
        post._cov = torch.zeros(post.n_features, post.n_features, dtype=torch.float64)
    atoms = rutile()
    preds, samples = posterior_samples(model, [atoms], 5, seed=0)
    plain = model.predict([atoms])[0]
    for name in ("bec", "dielectric"):
        np.testing.assert_array_equal(samples[0][name], np.broadcast_to(plain[name], samples[0][name].shape))
        np.testing.assert_array_equal(preds[0][name], plain[name])


def test_samples_share_weights_across_structures(model):
    """One weight sample is one model: the same draw applies to every structure (same seed, same draws)."""
    frames = training_frames()[:2]
    _, together = posterior_samples(model, frames, 4, seed=2)
    _, alone = posterior_samples(model, frames[:1], 4, seed=2)
    np.testing.assert_allclose(together[0]["bec"], alone[0]["bec"], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- greedy selection
def test_greedy_select_on_a_toy_pool():
    """Features in 3 dimensions, unit prior: first pick is the largest variance; a duplicate of a
    pick is not picked next (its variance dropped), the orthogonal one is."""
    blocks = [torch.tensor([[3.0, 0, 0]]), torch.tensor([[3.0, 0, 0]]), torch.tensor([[0, 2.0, 0]]),
              torch.tensor([[0, 0, 1.0]]), torch.tensor([[1.0, 1.0, 0]])]
    cov = torch.eye(3, dtype=torch.float64)
    picked, scores = greedy_select([[b] for b in blocks], [cov], 3)
    assert picked[0] == 0 and scores[0] == pytest.approx(9.0)
    assert 1 not in picked  # the duplicate of structure 0
    assert picked[2] == 3 and scores[2] == pytest.approx(1.0)  # orthogonal to both picks: untouched
    assert picked[1] == 2 and scores[1] == pytest.approx(4.0)
    assert greedy_select([[b] for b in blocks], [cov], 3) == (picked, scores)  # deterministic


def test_greedy_select_is_the_closed_form_posterior_variance():
    """After the picks, the scores are the Bayesian-linear-regression variances given those labels."""
    rng = np.random.default_rng(0)
    blocks = [torch.as_tensor(rng.normal(size=(int(rng.integers(1, 4)), 4))) for _ in range(8)]
    cov = torch.eye(4, dtype=torch.float64) * 0.7
    noise = 0.3
    picked, scores = greedy_select([[b] for b in blocks], [cov], 4, noise=noise)
    for k in range(1, 4):
        f = torch.cat([blocks[i] for i in picked[:k]])
        post = torch.linalg.inv(torch.linalg.inv(cov) + f.T @ f / noise)
        expected = float(((blocks[picked[k]] @ post) * blocks[picked[k]]).sum())
        assert scores[k] == pytest.approx(expected, rel=1e-9)
        others = [float(((blocks[i] @ post) * blocks[i]).sum()) for i in range(8) if i not in picked[:k]]
        assert expected == pytest.approx(max(others), rel=1e-9)


def test_select_structures_with_a_model(model):
    pool = [rutile()]
    rng = np.random.default_rng(3)
    for s in (0.02, 0.3):
        at = rutile()
        at.positions += rng.normal(scale=s, size=at.positions.shape)
        pool.append(at)
    pool.append(pool[2].copy())  # duplicate of the most distorted one
    result = select_structures(model, pool, 2)
    assert len(result.indices) == 2 and len(set(result.indices)) == 2
    first = int(np.argmax(result.initial_scores))
    assert result.indices[0] == first
    assert not {2, 3} <= set(result.indices)  # never both copies
    again = select_structures(model, pool, 2)
    assert again.indices == result.indices and np.allclose(again.scores, result.scores)
    with pytest.raises(ConfigError, match="pool"):
        select_structures(model, pool, 5)


def test_select_cli(model, tmp_path, capsys):
    import ase.io

    from etgnn.cli import main

    rng = np.random.default_rng(4)
    pool = []
    for s in (0.0, 0.05, 0.3, 0.15):
        at = rutile()
        at.positions += rng.normal(scale=s, size=at.positions.shape)
        pool.append(at)
    pool.append(pool[2].copy())
    pool_file, out, path = tmp_path / "pool.extxyz", tmp_path / "chosen.extxyz", tmp_path / "model.pt"
    ase.io.write(pool_file, pool, format="extxyz")
    model.save(path)
    assert main(["select", str(path), str(pool_file), "-n", "3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 of 5 structures picked" in printed
    chosen = ase.io.read(out, ":")
    idx = [a.info["pool_index"] for a in chosen]
    assert len(set(idx)) == 3 and not {2, 4} <= set(idx)
    assert [a.info["selection_rank"] for a in chosen] == [1, 2, 3]
    scores = [a.info["selection_score"] for a in chosen]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(chosen[0].positions, pool[idx[0]].positions, atol=1e-8)
    # deterministic
    out2 = tmp_path / "again.extxyz"
    assert main(["select", str(path), str(pool_file), "-n", "3", "-o", str(out2)]) == 0
    assert [a.info["pool_index"] for a in ase.io.read(out2, ":")] == idx
    # K larger than the pool: a clear error, exit code 2 or 1, no traceback
    capsys.readouterr()
    code = main(["select", str(path), str(pool_file), "-n", "9", "-o", str(out2)])
    assert code != 0
    assert "holds 5 structure(s)" in capsys.readouterr().err


def test_unseen_elements_are_picked_first_as_a_cover(model):
    """Trained on Sn and O only: the structure bringing two new elements comes first, one bringing
    only an element already covered by that pick is not forced in; the rest is by variance."""
    with torch.no_grad():
        model.elements_seen.zero_()
        model.elements_seen[[8, 50]] = True
    ti = rutile()
    ti.numbers[ti.numbers == 50] = 22
    tige = rutile()
    tige.numbers[[0]] = 22
    tige.numbers[[1]] = 32
    ge = rutile()
    ge.numbers[ge.numbers == 50] = 32
    pool = [rutile(), ti, tige, ge]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = select_structures(model, pool, 2)
    assert result.indices[0] == 2 and result.scores[0] == float("inf")
    assert list(result.unseen) == [False, True, True, True]
    assert np.isfinite(result.scores[1])
