"""Physics checks of the PySCF labels and of the make-dataset writer (RHF/def2-SVP, H2O and HF).

Tolerances: finite-difference steps are 1e-3 Angstrom in positions (truncation error about
4e-5 eV/Angstrom in forces, 1e-5 e in APTs) and 1e-3 a.u. in the field; SCF convergence is
1e-11 Hartree / 1e-8 orbital gradient. Measured on this H2O: acoustic sum 4e-12 e, rotational
sum rule 3e-6 e*Angstrom, alpha asymmetry 1e-6 Angstrom^3, rotated alpha / APT 2e-6 / 3e-6
(field finite-difference noise); tolerances below leave a margin of 10x or more.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest

pytest.importorskip("pyscf")

from ase.io import read  # noqa: E402

from etgnn.errors import ConfigError, DataError, EtgnnError  # noqa: E402
from etgnn.qm import labels as qm_labels  # noqa: E402
from etgnn.qm.labels import BOHR_ANGSTROM, compute_labels, single_point  # noqa: E402
from etgnn.qm.make_dataset import UNITS, add_parser, make_dataset  # noqa: E402
from etgnn.qm.molecules import random_rotation, sample_geometry, sample_plan  # noqa: E402

METHOD, BASIS = "RHF", "def2-SVP"
STEP = 1e-3  # Angstrom, position finite-difference step


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    from pyscf import lib

    old = lib.num_threads()
    lib.num_threads(1)
    yield
    lib.num_threads(old)


@pytest.fixture(scope="module")
def water():
    """Distorted, randomly oriented H2O and its unsymmetrised labels."""
    symbols, pos = sample_geometry("H2O", 0, 0.06, seed=3)
    return symbols, pos, compute_labels(symbols, pos, METHOD, BASIS, symmetrize=False)


def _dipole(symbols, pos):
    return single_point(symbols, pos, METHOD, BASIS).dipole


def _cross_matrix(axis: int) -> np.ndarray:
    """(3, 3) L with L @ v = e_axis x v."""
    e = np.eye(3)[axis]
    return np.cross(e[None, :], np.eye(3)).T


def test_acoustic_sum_rule(water):
    _, _, lab = water
    err = np.abs(lab.apt.sum(axis=0)).max()
    assert err < 1e-6, f"sum_A apt[A] deviates from 0 by {err:.2e} e"


def test_rotational_sum_rule(water):
    # an infinitesimal rotation dR_A = theta x R_A changes the dipole by theta x mu
    _, pos, lab = water
    for axis in range(3):
        L = _cross_matrix(axis)
        lhs = np.einsum("aij,aj->i", lab.apt, pos @ L.T)
        err = np.abs(lhs - L @ lab.dipole).max()
        assert err < 3e-5, f"rotational sum rule about axis {axis}: error {err:.2e} e*Angstrom"


def test_dipole_displacement_matches_apt_column(water):
    symbols, pos, lab = water
    u = np.array([0.3, -0.5, 0.8])
    u /= np.linalg.norm(u)
    plus, minus = pos.copy(), pos.copy()
    plus[1] += STEP * u
    minus[1] -= STEP * u
    fd = (_dipole(symbols, plus) - _dipole(symbols, minus)) / (2 * STEP)
    err = np.abs(fd - lab.apt[1] @ u).max()
    assert err < 1e-4, f"d mu / d R_H1 along u: finite difference vs apt, error {err:.2e} e"


def test_apt_finite_field_equals_position_finite_difference(water):
    # second, independent route: every column from central differences of the dipole
    symbols, pos, lab = water
    fd = np.empty_like(lab.apt)
    for atom in range(len(symbols)):
        for j in range(3):
            plus, minus = pos.copy(), pos.copy()
            plus[atom, j] += STEP
            minus[atom, j] -= STEP
            fd[atom, :, j] = (_dipole(symbols, plus) - _dipole(symbols, minus)) / (2 * STEP)
    err = np.abs(fd - lab.apt).max()
    assert err < 1e-4, f"apt: finite field vs d mu / d R, max error {err:.2e} e"
    assert np.abs(lab.apt).max() > 0.1  # not trivially zero


def test_polarizability_symmetric_positive_definite(water):
    _, _, lab = water
    alpha = lab.polarizability
    asym = np.abs(alpha - alpha.T).max()
    assert asym < 1e-4, f"polarizability antisymmetric part {asym:.2e} Angstrom^3"
    eig = np.linalg.eigvalsh(0.5 * (alpha + alpha.T))
    assert eig.min() > 0.1, f"polarizability eigenvalues {eig} Angstrom^3, expected > 0"


def test_polarizability_equals_energy_second_derivative(water):
    # independent route: alpha_ii = -d2 W / dF_i^2 from energies (dipoles are not used)
    symbols, pos, lab = water
    field = 2e-3
    w0 = single_point(symbols, pos, METHOD, BASIS).energy
    for i in range(3):
        f = np.zeros(3)
        f[i] = field
        wp = single_point(symbols, pos, METHOD, BASIS, f).energy
        wm = single_point(symbols, pos, METHOD, BASIS, -f).energy
        alpha_au = -(wp + wm - 2 * w0) / qm_labels.HARTREE_EV / field**2
        err = abs(alpha_au * BOHR_ANGSTROM**3 - lab.polarizability[i, i])
        assert err < 3e-4, f"alpha[{i},{i}] from energies vs dipoles: error {err:.2e} Angstrom^3"


@pytest.mark.parametrize("field", [(0.0, 0.0, 0.0), (3e-3, -2e-3, 4e-3)])
def test_forces_are_minus_energy_gradient(water, field):
    # under a field this also checks the added field-gradient terms
    symbols, pos, _ = water
    sp = single_point(symbols, pos, METHOD, BASIS, field)
    for atom, j in [(0, 0), (2, 1)]:
        plus, minus = pos.copy(), pos.copy()
        plus[atom, j] += STEP
        minus[atom, j] -= STEP
        e_p = single_point(symbols, plus, METHOD, BASIS, field).energy
        e_m = single_point(symbols, minus, METHOD, BASIS, field).energy
        err = abs(sp.forces[atom, j] + (e_p - e_m) / (2 * STEP))
        assert err < 2e-4, f"forces[{atom},{j}] vs -dE/dR (field {field}): error {err:.2e} eV/A"


def test_labels_rotate_covariantly(water):
    symbols, pos, lab = water
    R = random_rotation(np.random.default_rng(11))
    rot = compute_labels(symbols, pos @ R.T, METHOD, BASIS, symmetrize=False)
    checks = {
        "energy": (rot.energy, lab.energy, 1e-6),
        "forces": (rot.forces, lab.forces @ R.T, 1e-5),
        "dipole": (rot.dipole, R @ lab.dipole, 1e-6),
        "polarizability": (rot.polarizability, R @ lab.polarizability @ R.T, 1e-4),
        "apt": (rot.apt, np.einsum("ij,ajk,lk->ail", R, lab.apt, R), 1e-4),
    }
    for key, (got, want, tol) in checks.items():
        err = np.abs(np.asarray(got) - want).max()
        assert err < tol, f"{key} after rotation: max error {err:.2e} (tolerance {tol})"


def test_write_read_round_trip_and_resume(tmp_path):
    out = tmp_path / "hf.extxyz"
    assert make_dataset(out, ["HF"], 2, sigma=0.05, seed=7, progress=False) == 2
    frames = read(out, index=":", format="extxyz")
    assert len(frames) == 2
    for sample, atoms in enumerate(frames):
        symbols, pos = sample_geometry("HF", sample, 0.05, seed=7)
        lab = compute_labels(symbols, pos, METHOD, BASIS)
        assert atoms.info["molecule"] == "HF" and atoms.info["sample"] == sample
        assert atoms.info["method"] == "RHF/def2-SVP" and atoms.info["units"] == UNITS
        assert not atoms.pbc.any()
        np.testing.assert_allclose(atoms.positions, pos, atol=1e-8)
        np.testing.assert_allclose(atoms.get_potential_energy(), lab.energy, atol=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), lab.forces, atol=1e-7)
        np.testing.assert_allclose(atoms.get_dipole_moment(), lab.dipole, atol=1e-10)
        np.testing.assert_allclose(atoms.info["polarizability"], lab.polarizability.ravel(),
                                   atol=1e-10)
        np.testing.assert_allclose(atoms.arrays["apt"], lab.apt.reshape(2, 9), atol=1e-7)

    first = out.read_bytes()
    with open(out, "a") as fh:  # simulate a run killed while writing a frame
        fh.write("2\nProperties=species:S:1:pos:R:3 molecule=HF\nF 0.0 0.0")
    with pytest.warns(UserWarning, match="incomplete last frame"):
        assert make_dataset(out, ["HF"], 3, sigma=0.05, seed=7, progress=False) == 1
    assert out.read_bytes().startswith(first)  # done frames untouched
    frames = read(out, index=":", format="extxyz")
    assert [a.info["sample"] for a in frames] == [0, 1, 2]
    assert make_dataset(out, ["HF"], 3, sigma=0.05, seed=7, progress=False) == 0

    with pytest.raises(DataError, match="'seed' is 7, this run uses 8"):
        make_dataset(out, ["HF"], 3, sigma=0.05, seed=8, progress=False)


def test_two_workers_give_the_same_file(tmp_path):
    a, b = tmp_path / "a.extxyz", tmp_path / "b.extxyz"
    make_dataset(a, ["HF"], 2, seed=1, workers=1, progress=False)
    make_dataset(b, ["HF"], 2, seed=1, workers=2, progress=False)
    assert a.read_bytes() == b.read_bytes()


def test_sampling_is_deterministic_and_rotated():
    s1, p1 = sample_geometry("CH3OH", 4, 0.06, seed=0)
    _, p2 = sample_geometry("CH3OH", 4, 0.06, seed=0)
    _, p3 = sample_geometry("CH3OH", 5, 0.06, seed=0)
    assert s1 == ["C", "O", "H", "H", "H", "H"]
    np.testing.assert_array_equal(p1, p2)
    assert np.abs(p1 - p3).max() > 0.1
    np.testing.assert_allclose(p1.mean(axis=0), 0.0, atol=1e-12)


def test_bad_input_errors():
    with pytest.raises(ConfigError, match="did you mean 'H2O'"):
        sample_plan(["H20"], 1)
    with pytest.raises(ConfigError, match="sigma"):
        sample_geometry("HF", 0, -0.1, seed=0)
    with pytest.raises(ConfigError, match="unknown method 'MP2'"):
        compute_labels(["H", "F"], np.array([[0, 0, 0], [0, 0, 0.9]]), method="MP2")


def test_missing_pyscf_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyscf", None)  # makes `import pyscf` fail
    with pytest.raises(EtgnnError, match=r"pip install 'etgnn\[qm\]'"):
        qm_labels.require_pyscf()


def test_add_parser_registers_make_dataset():
    parser = argparse.ArgumentParser(prog="etgnn")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["make-dataset", "-o", "x.extxyz", "--molecules", "HF, H2O",
                              "--n-per-molecule", "3", "--sigma", "0.07", "--method", "rhf",
                              "--basis", "6-31G*", "--seed", "5", "--workers", "2"])
    assert (args.output, args.molecules, args.n_per_molecule, args.sigma) == (
        "x.extxyz", "HF, H2O", 3, 0.07)
    assert (args.method, args.basis, args.seed, args.workers) == ("RHF", "6-31G*", 5, 2)
    assert callable(args.func)
