"""ase.vibrations.Infrared on forces from one calculator and the dipole of an etgnn model."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.mixing import SumCalculator
from ase.optimize import BFGS
from ase.vibrations import Infrared
from scipy import constants as sc

from etgnn.calculator import ETGNNCalculator
from etgnn.errors import ConfigError
from etgnn.observables.combined import CombinedCalculator, combine

pytestmark = pytest.mark.usefixtures("single_thread")


def _relaxed_water():
    atoms = molecule("H2O")
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=1e-4)
    return atoms


def test_sum_calculator_cannot_serve_a_dipole(make_model):
    """Why combine exists: ASE's mixing calculators offer only the common properties."""
    atoms = molecule("H2O")
    atoms.calc = SumCalculator([EMT(), ETGNNCalculator(make_model(targets=("dipole",)))])
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_dipole_moment()


def test_infrared_with_combined_calculator(make_model, tmp_path):
    model = make_model(targets=("dipole",))
    atoms = _relaxed_water()
    atoms.calc = combine(EMT(), ETGNNCalculator(model))
    np.testing.assert_allclose(atoms.get_forces(), EMT().get_forces(atoms))
    np.testing.assert_allclose(atoms.get_dipole_moment(), model.predict(atoms)[0]["dipole"])

    ir = Infrared(atoms, name=str(tmp_path / "ir"), delta=0.01)
    ir.run()
    ir.read()
    km_mol = ir.intensities * 42.255  # ASE's (D/Angstrom)^2/amu -> km/mol

    # independent: Hessian from EMT, dipole derivatives from model.predict, A = N_A |dmu/dQ|^2/(12 eps0 c^2)
    n, h = len(atoms), 0.01
    hess, dmu = np.zeros((3 * n, 3 * n)), np.zeros((3 * n, 3))
    for r in range(3 * n):
        pair = []
        for s in (h, -h):
            probe = atoms.copy()
            probe.positions[r // 3, r % 3] += s
            pair.append((EMT().get_forces(probe).reshape(-1), model.predict(probe)[0]["dipole"]))
        hess[r] = -(pair[0][0] - pair[1][0]) / (2 * h)
        dmu[r] = (pair[0][1] - pair[1][1]) / (2 * h)
    inv_sqrt_m = np.repeat(atoms.get_masses() ** -0.5, 3)
    w2, modes = np.linalg.eigh(inv_sqrt_m[:, None] * 0.5 * (hess + hess.T) * inv_sqrt_m)
    dmu_dq = modes.T @ (inv_sqrt_m[:, None] * dmu)  # e Angstrom / (Angstrom sqrt(amu))
    si = (dmu_dq * sc.e / np.sqrt(sc.atomic_mass)) ** 2  # C^2/kg
    expected = sc.N_A * si.sum(axis=1) / (12 * sc.epsilon_0 * sc.c**2) / 1e3  # km/mol
    vib = slice(6, None)  # the 3 vibrations; translations/rotations carry ~nothing
    assert expected[vib].max() > 1.0  # the random model's dipole does change: the check can fail
    np.testing.assert_allclose(km_mol[vib], expected[vib], rtol=2e-3)


def test_routes_are_checked(make_model):
    with pytest.raises(ConfigError, match="EMT does not offer 'dipole'"):
        CombinedCalculator({"dipole": (EMT(), "dipole")})
    atoms = molecule("H2O")
    atoms.calc = combine(EMT(), ETGNNCalculator(make_model(targets=("dipole",))))
    assert set(atoms.calc.implemented_properties) == {"energy", "free_energy", "forces", "stress", "dipole"}
    with pytest.raises(PropertyNotImplementedError, match="charges"):
        atoms.calc.get_property("charges", atoms)
