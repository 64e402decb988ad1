"""``etgnn phonons`` with a model that carries uncertainty (issue 26, item 4): TO/LO frequencies,
eps_0 and IR intensities +- one sigma from posterior samples of the Born charges and eps_inf."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

phonopy = pytest.importorskip("phonopy")

import etgnn  # noqa: E402
from etgnn.cli import main  # noqa: E402
from etgnn.data.batch import collate  # noqa: E402
from etgnn.observables import born as B  # noqa: E402
from etgnn.observables import phonons as P  # noqa: E402
from etgnn.observables.phonons_uq import sample_gamma_modes  # noqa: E402
from etgnn.uncertainty import LLPR, LastLayerPosterior, n_last_layer  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = {"model": {"hidden_channels": 12, "triplet_channels": 8, "num_blocks": 1, "int_emb_size": 8,
                    "basis_emb_size": 4, "num_spherical": 4, "cutoff": 4.5, "triplet_cutoff": 3.3,
                    "dtype": "float64", "seed": 3},
          "targets": {"bec": {"key": "becs", "level": "atom", "rank": 2, "sum_rule": True},
                      "dielectric": {"key": "eps", "level": "structure", "rank": 2, "symmetry": "ij=ji"}}}


def cucl():
    return bulk("CuAl", "cesiumchloride", a=2.95)


@pytest.fixture
def model(perturb):
    m = perturb(etgnn.build_model(CONFIG), seed=3).eval()
    with torch.no_grad():
        m.heads["dielectric"].normalizer.element_shift[:, 0] += 6.0
    frames = []
    rng = np.random.default_rng(0)
    for a in (2.9, 3.0):
        at = cucl().repeat(2)
        at.set_cell(at.cell * a / 2.95, scale_atoms=True)
        at.positions += rng.normal(scale=0.05, size=at.positions.shape)
        frames.append(at)
    llpr = LLPR({n: LastLayerPosterior(n_last_layer(m.heads[n])) for n in m.heads})
    batch = collate([m.graph(a) for a in frames], dtype=m.dtype)
    for n, j in llpr.features(m, batch).items():
        llpr.posteriors[n].add(j.reshape(-1, j.shape[-1]))
    for post in llpr.posteriors.values():
        post.set(1e-3 * post.mean_eigenvalue, 0.01)
    m.uncertainty = llpr
    return m


@pytest.fixture
def emt_phonopy_files(tmp_path):
    ph = P.phonopy_from_calculator(cucl(), EMT(), [2, 2, 2])
    yaml, fs = tmp_path / "phonopy_disp.yaml", tmp_path / "FORCE_SETS"
    ph.save(yaml, settings={"force_sets": False, "displacements": True})
    phonopy.file_IO.write_FORCE_SETS(ph.dataset, filename=str(fs))
    return yaml, fs


def test_sampled_modes_spread_and_plain_centre(model, emt_phonopy_files):
    yaml, fs = emt_phonopy_files
    ph = P.load_phonopy(yaml, force_sets=fs)
    unc = sample_gamma_modes(ph, model, 24, direction=(0, 0, 1), seed=0)
    assert unc.n_samples == 24
    assert unc.nac_frequencies.shape == (24, 6) and unc.intensities.shape == (24, 6)
    # TO frequencies (no NAC) do not depend on the Born charges; the LO one does
    assert unc.frequencies.std(axis=0)[3:].max() < 1e-9  # acoustic ones: phonopy round-off about 0
    assert unc.nac_frequencies.std(axis=0)[5] > 1e-4
    assert unc.epsilon_static.std(axis=0)[2, 2] > 1e-4
    assert unc.intensities.std(axis=0)[3:].max() > 1e-5
    # every sample's Born charges obey the sum rule and the (cubic) site symmetry exactly
    assert np.abs(unc.born.sum(axis=1)).max() < 1e-12
    for z in unc.born:
        for k in range(2):
            np.testing.assert_allclose(z[k], z[k, 0, 0] * np.eye(3), atol=1e-12)
    # the plain model result sits inside the spread
    z, eps = B.predict_born(model, B.to_ase_atoms(ph.primitive))
    P.set_nac(ph, P.nac_params(ph, z, eps))
    plain = P.gamma_modes(ph, (0, 0, 1))
    assert abs(unc.nac_frequencies[:, 5].mean() - plain.nac_frequencies[5]) < 4 * unc.nac_frequencies[:, 5].std() + 1e-9


def test_zero_covariance_gives_zero_spread_and_the_plain_result(model, emt_phonopy_files):
    for post in model.uncertainty.posteriors.values():
        post._cov = torch.zeros(post.n_features, post.n_features, dtype=torch.float64)
    yaml, fs = emt_phonopy_files
    ph = P.load_phonopy(yaml, force_sets=fs)
    unc = sample_gamma_modes(ph, model, 4, direction=(0, 0, 1))
    z, eps = B.predict_born(model, B.to_ase_atoms(ph.primitive))
    P.set_nac(ph, P.nac_params(ph, z, eps))
    plain = P.gamma_modes(ph, (0, 0, 1))
    assert unc.nac_frequencies.std(axis=0).max() == 0.0 and unc.epsilon_static.std(axis=0).max() == 0.0
    np.testing.assert_allclose(unc.nac_frequencies.mean(axis=0), plain.nac_frequencies, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(unc.epsilon_static.mean(axis=0), plain.epsilon_static, rtol=1e-12)
    np.testing.assert_allclose(unc.intensities.mean(axis=0), plain.intensities, rtol=1e-10, atol=1e-14)


def test_phonons_cli_prints_and_writes_plus_minus(model, emt_phonopy_files, tmp_path, capsys):
    path = tmp_path / "model.pt"
    model.save(path)
    yaml, fs = emt_phonopy_files
    out = tmp_path / "modes.csv"
    assert main(["phonons", str(path), "--phonopy", str(yaml), "--force-sets", str(fs), "--q-direction", "0", "0", "1",
                 "--samples", "8", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "+-" in printed and "8 posterior samples" in printed
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    for col in ("frequency_THz_mean", "frequency_THz_std", "ir_intensity_e2_per_amu_std"):
        assert col in rows[0]
    lo = [r for r in rows if r["set"] == "gamma_nac"][5]
    assert float(lo["frequency_THz_std"]) > 0
    # --samples 0: no uncertainty columns
    assert main(["phonons", str(path), "--phonopy", str(yaml), "--force-sets", str(fs), "--samples", "0",
                 "-o", str(out)]) == 0
    assert "+-" not in capsys.readouterr().out
    with open(out) as fh:
        assert "frequency_THz_std" not in fh.readline()
