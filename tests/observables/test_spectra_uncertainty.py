"""``etgnn spectrum ir --uncertainty`` (issue 26, item 4): a band of spectra from posterior samples."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk

import etgnn
from etgnn.cli import main
from etgnn.data.batch import collate
from etgnn.uncertainty import LLPR, LastLayerPosterior, n_last_layer
from etgnn.uncertainty.sampling import SampledPredictor

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = {"model": {"hidden_channels": 12, "triplet_channels": 8, "num_blocks": 1, "int_emb_size": 8,
                    "basis_emb_size": 4, "num_spherical": 4, "cutoff": 4.5, "triplet_cutoff": 3.3,
                    "dtype": "float64", "seed": 2},
          "targets": {"bec": {"key": "becs", "level": "atom", "rank": 2, "sum_rule": True}}}


def trajectory(n=24, dt=2.0):
    rng = np.random.default_rng(0)
    base = bulk("NaCl", "rocksalt", a=5.64)
    frames, u, v = [], rng.normal(scale=0.05, size=(2, 3)), rng.normal(scale=0.01, size=(2, 3))
    for i in range(n):
        at = base.copy()
        u = u + v * dt
        v = v - 0.002 * u * dt  # a harmonic-ish wobble
        at.positions += u
        at.set_velocities(v)
        at.info["time_fs"] = i * dt
        frames.append(at)
    return frames


@pytest.fixture
def model_file(perturb, tmp_path):
    m = perturb(etgnn.build_model(CONFIG), seed=2).eval()
    llpr = LLPR({n: LastLayerPosterior(n_last_layer(m.heads[n])) for n in m.heads})
    batch = collate([m.graph(a) for a in trajectory()[::6]], dtype=m.dtype)
    for n, j in llpr.features(m, batch).items():
        llpr.posteriors[n].add(j.reshape(-1, j.shape[-1]))
    for post in llpr.posteriors.values():
        post.set(1e-3 * post.mean_eigenvalue, 0.01)
    m.uncertainty = llpr
    path = tmp_path / "model.pt"
    m.save(path)
    return path, m


def _read(path):
    with open(path) as fh:
        header = [line for line in fh if line.startswith("#")][-1]
    names = header.lstrip("# ").strip().split(",")
    data = np.loadtxt(path, delimiter=",")
    return {n: data[:, i] for i, n in enumerate(names)}


def test_sampled_predictor_first_entry_is_the_prediction(model_file):
    _, model = model_file
    frames = trajectory()[:3]
    out = SampledPredictor(model, 5, seed=1).predict(frames, batch_size=2)
    plain = model.predict(frames)
    for o, p in zip(out, plain):
        assert o["bec"].shape == (6, 2, 3, 3)
        np.testing.assert_allclose(o["bec"][0], p["bec"], rtol=1e-12, atol=1e-14)  # batching: round-off only


def test_spectrum_band(model_file, tmp_path, capsys):
    path, _ = model_file
    traj = tmp_path / "traj.extxyz"
    ase.io.write(traj, trajectory(), format="extxyz")
    plain, banded, png = tmp_path / "plain.csv", tmp_path / "band.csv", tmp_path / "band.png"
    assert main(["spectrum", "ir", str(path), str(traj), "-o", str(plain), "--temperature", "300"]) == 0
    assert main(["spectrum", "ir", str(path), str(traj), "-o", str(banded), "--temperature", "300",
                 "--uncertainty", "--samples", "6", "--plot", str(png)]) == 0
    assert "6 posterior samples" in capsys.readouterr().out
    a, b = _read(plain), _read(banded)
    np.testing.assert_allclose(b["absorption"], a["absorption"], rtol=1e-10, atol=1e-14 * a["absorption"].max())
    lo, hi = b["absorption_p16"], b["absorption_p84"]
    assert (lo <= hi + 1e-15).all() and (hi - lo).max() > 1e-6 * a["absorption"].max()
    assert png.read_bytes()[:4] == b"\x89PNG"
    # zero posterior covariance: the band collapses onto the spectrum
    import etgnn as E

    m = E.load_model(path)
    for post in m.uncertainty.posteriors.values():
        post.set(1e-3 * post.mean_eigenvalue, 1e-300)
    m.save(path)
    assert main(["spectrum", "ir", str(path), str(traj), "-o", str(banded), "--temperature", "300",
                 "--uncertainty", "--samples", "3"]) == 0
    b = _read(banded)
    np.testing.assert_allclose(b["absorption_p16"], a["absorption"], rtol=1e-8, atol=1e-12 * a["absorption"].max())
    np.testing.assert_allclose(b["absorption_p84"], a["absorption"], rtol=1e-8, atol=1e-12 * a["absorption"].max())


def test_uncertainty_needs_a_model_with_it(model_file, tmp_path, capsys):
    path, model = model_file
    model.uncertainty = None
    model.save(path)
    traj = tmp_path / "traj.extxyz"
    ase.io.write(traj, trajectory(), format="extxyz")
    assert main(["spectrum", "ir", str(path), str(traj), "-o", str(tmp_path / "x.csv"), "--temperature", "300",
                 "--uncertainty"]) != 0
    assert "no uncertainty" in capsys.readouterr().err
