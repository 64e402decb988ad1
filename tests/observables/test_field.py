"""FieldCalculator: the field force q Z^T E, the integrated dipole change, predicted Born charges."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError

from etgnn.errors import ConfigError, DataError
from etgnn.observables.field import FieldCalculator, field_forces
from etgnn.observables.harmonic import HarmonicCalculator

pytestmark = pytest.mark.usefixtures("single_thread")


def _harmonic(atoms, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3 * len(atoms), 3 * len(atoms)))
    return HarmonicCalculator(a @ a.T + np.eye(3 * len(atoms)), atoms)


def test_rigid_ions_feel_exactly_q_e():
    rng = np.random.default_rng(1)
    atoms = Atoms("NaClKBr", positions=rng.normal(size=(4, 3)) * 3, cell=np.eye(3) * 9, pbc=True)
    q = np.array([1.0, -1.0, 0.8, -0.8])
    field = np.array([0.02, -0.05, 0.01])
    base = _harmonic(atoms)
    moved = atoms.copy()
    moved.positions += 0.02 * rng.normal(size=(4, 3))
    moved.calc = FieldCalculator(base, field, q[:, None, None] * np.eye(3))
    np.testing.assert_allclose(moved.get_forces() - base.get_forces(moved), q[:, None] * field, rtol=0, atol=1e-15)


def test_field_index_is_first_displacement_second():
    z = np.zeros((1, 3, 3))
    z[0, 0, 1] = 2.0  # dP_x/du_y = dF_y/dE_x
    np.testing.assert_allclose(field_forces(z, [1.0, 0, 0]), [[0.0, 2.0, 0.0]])
    np.testing.assert_allclose(field_forces(z, [0, 1.0, 0]), [[0.0, 0.0, 0.0]])


def test_fixed_charges_dipole_change_and_conservative_energy():
    rng = np.random.default_rng(2)
    atoms = molecule("CH3OH")
    z = rng.normal(size=(len(atoms), 3, 3))
    field = np.array([0.1, 0.0, -0.2])
    calc = FieldCalculator(_harmonic(atoms), field, z)
    path = atoms.copy()
    path.calc = calc
    path.get_forces()  # starting point of the integration
    for _ in range(5):  # any path: the dipole change is sum_k Z_k u_k for fixed charges
        path.positions += 0.01 * rng.normal(size=path.positions.shape)
        path.get_forces()
    u = path.positions - atoms.positions
    np.testing.assert_allclose(calc.get_property("dipole_change", path), np.einsum("kij,kj->i", z, u), atol=1e-13)
    with pytest.raises(PropertyNotImplementedError):  # a molecule has no volume
        calc.get_property("polarization_change", path)
    # F = -dE/du with E = E_harm - E.dmu: finite differences along a random direction
    d = rng.normal(size=u.shape)
    h = 1e-5
    energies = []
    for s in (h, -h):
        probe = path.copy()
        probe.positions += s * d
        probe.calc = FieldCalculator(_harmonic(atoms), field, z)
        probe.calc.get_forces(atoms)  # integrate from the reference
        energies.append(probe.get_potential_energy())
    assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(np.sum(path.get_forces() * d), rel=1e-6)


def test_predicted_born_charges(make_model):
    model = make_model(targets=("bec", "dipole"))
    atoms = molecule("H2O")
    field = np.array([0.0, 0.3, 0.1])
    base = _harmonic(atoms)
    atoms.calc = FieldCalculator(base, field, model)
    z = model.predict(atoms)[0]["bec"]
    assert np.abs(z).max() > 0.1
    np.testing.assert_allclose(atoms.get_forces() - base.get_forces(atoms), field_forces(z, field), atol=1e-12)
    np.testing.assert_allclose(atoms.calc.get_property("born_effective_charges", atoms), z)


def test_errors(make_model):
    atoms = molecule("H2O")
    with pytest.raises(ConfigError, match=r"3 numbers \(V/Angstrom\), got shape \(2,\)"):
        FieldCalculator(_harmonic(atoms), [0.1, 0.2], np.zeros((3, 3, 3)))
    with pytest.raises(DataError, match=r"shape \(n_atoms, 3, 3\), got \(3, 9\)"):
        FieldCalculator(_harmonic(atoms), [0, 0, 0.1], np.zeros((3, 9)))
    with pytest.raises(ConfigError,
                       match=r"no target of level atom and rank 2 for Born charges.*dipole \(structure rank 1\)"):
        FieldCalculator(_harmonic(atoms), [0, 0, 0.1], make_model(targets=("dipole",)))
    with pytest.raises(ConfigError, match="several targets of level atom and rank 2"):
        FieldCalculator(_harmonic(atoms), [0, 0, 0.1], make_model(targets=("bec", "atom_rank2")))
    calc = FieldCalculator(_harmonic(atoms), [0, 0, 0.1], np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match="2 fixed Born charges for a structure of 3 atoms"):
        calc.get_forces(atoms)


def test_dipole_change_integrates_predicted_charges_along_the_path(make_model):
    """Moving atoms, model charges Z(R): the dipole change is the trapezoid rule of sum_k Z_k du_k.

    Reference: the line integral over each straight step by 8-point Gauss-Legendre quadrature of
    the model's charges (converged to 1e-8). Over 8 steps of ~0.003 Angstrom per coordinate along
    a curved path the trapezoid rule is off by 6e-5 of the dipole change, the end-point rule
    (the charge at the end of each step instead of the average) by 5e-3: replacing the average by
    either end fails.
    """
    model = make_model(targets=("bec", "dipole"))
    rng = np.random.default_rng(5)
    start = molecule("H2O")
    d1, d2 = rng.normal(size=(2, 3, 3))
    path = [start.positions + 0.02 * s * d1 + 0.01 * s**2 * d2 for s in np.linspace(0, 1, 9)]  # 8 straight steps
    calc = FieldCalculator(_harmonic(start), [0.0, 0.1, 0.0], model)
    atoms = start.copy()
    atoms.calc = calc
    nodes, weights = np.polynomial.legendre.leggauss(8)
    exact, trapezoid, end_point = np.zeros(3), np.zeros(3), np.zeros(3)
    for a, b in zip(path[:-1], path[1:]):
        du = b - a
        probes = []
        for s in (nodes + 1) / 2:
            probe = start.copy()
            probe.positions = a + s * du
            probes.append(probe)
        z = np.array([p["bec"] for p in model.predict(probes)])  # (8, n_atoms, 3, 3)
        exact += np.einsum("s,skij,kj->i", weights / 2, z, du)
        za, zb = (model.predict(start.__class__(start.numbers, positions=x))[0]["bec"] for x in (a, b))
        trapezoid += np.einsum("kij,kj->i", (za + zb) / 2, du)
        end_point += np.einsum("kij,kj->i", zb, du)
    for x in path:
        atoms.positions = x
        atoms.get_forces()
    got = calc.get_property("dipole_change", atoms)
    np.testing.assert_allclose(got, trapezoid, rtol=0, atol=1e-12)
    error = np.linalg.norm(got - exact)
    assert error < 0.05 * np.linalg.norm(end_point - exact)
    assert error < 2e-4 * np.linalg.norm(exact)
