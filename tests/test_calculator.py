"""The ASE calculator returns the model's predictions, rotated consistently with the structure."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.units import Bohr, Debye

import etgnn
from etgnn.calculator import ETGNNCalculator
from etgnn.errors import ConfigError
from etgnn.tensors import random_rotation, rotate

CONFIG = {
    "model": {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1, "dtype": "float64"},
    "targets": {
        "forces": {"key": "forces", "level": "atom", "rank": 1},
        "mu": {"key": "mu", "level": "structure", "rank": 1, "reduce": "sum", "unit": "e*bohr"},
        "alpha": {"key": "alpha", "level": "structure", "rank": 2, "reduce": "sum", "symmetry": "ij=ji"},
    },
}


@pytest.fixture
def model():
    m = etgnn.build_model(CONFIG)
    for head in m.heads.values():
        head.scale.fill_(3.0)  # make the untrained outputs O(1)
    m.backbone.counts.edges_per_atom.fill_(1.0)
    return m


def test_calculator_matches_predict_and_serves_ase_getters(model, tmp_path):
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=0)
    ref = model.predict(atoms)[0]
    path = tmp_path / "m.pt"
    model.save(path)
    atoms.calc = ETGNNCalculator(path, aliases={"mu": "dipole"})
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], atol=1e-12)
    np.testing.assert_allclose(atoms.get_dipole_moment(), ref["mu"] * Bohr, atol=1e-12)  # e*bohr -> e*Angstrom
    np.testing.assert_allclose(atoms.calc.get_property("mu", atoms), ref["mu"], atol=1e-12)  # training units
    np.testing.assert_allclose(atoms.calc.get_property("alpha", atoms), ref["alpha"], atol=1e-12)
    assert np.abs(ref["forces"]).max() > 1e-3


def test_calculator_results_rotate_with_the_structure(model):
    atoms = molecule("H2CO")
    atoms.rattle(0.05, seed=1)
    atoms.calc = ETGNNCalculator(model)
    f0 = atoms.get_forces()
    a0 = atoms.calc.get_property("alpha", atoms)
    r = random_rotation(np.random.default_rng(3), improper=True)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ r.T
    rotated.calc = ETGNNCalculator(model)
    np.testing.assert_allclose(rotated.get_forces(), f0 @ r.T, atol=1e-10)
    np.testing.assert_allclose(rotated.calc.get_property("alpha", rotated), rotate(a0, r, 2), atol=1e-10)


def test_calculator_recomputes_after_moving_atoms(model):
    atoms = molecule("H2O")
    atoms.calc = ETGNNCalculator(model)
    f0 = atoms.get_forces().copy()
    atoms.positions[0] += [0.1, 0.0, 0.0]
    assert not np.allclose(atoms.get_forces(), f0)


def test_calculator_is_exported_and_converts_declared_units(model):
    """Debye and atomic units become ASE's e*Angstrom (1 D = 0.2081943 e*A, 1 e*bohr = 0.5291772 e*A)."""
    assert etgnn.ETGNNCalculator is ETGNNCalculator
    atoms = molecule("H2O")
    raw = model.predict(atoms)[0]["mu"]
    for unit, factor in (("Debye", 0.2081943), ("au", 0.5291772), ("e*Angstrom", 1.0), ("e * angstrom", 1.0)):
        atoms.calc = ETGNNCalculator(model, aliases={"mu": "dipole"}, units={"mu": unit})
        np.testing.assert_allclose(atoms.get_dipole_moment(), raw * factor, rtol=1e-6)
    assert Debye == pytest.approx(0.2081943, rel=1e-6) and Bohr == pytest.approx(0.5291772, rel=1e-6)


def test_calculator_refuses_an_alias_without_a_known_unit(model):
    with pytest.raises(ConfigError, match=r"target 'mu' has unit 'furlong', which etgnn cannot convert to "
                                          r"ASE's 'dipole' \(e\*Angstrom\); declare it in the training config "
                                          r"\(targets.mu.unit: one of e\*Angstrom, Debye, e\*bohr, au\)"):
        ETGNNCalculator(model, aliases={"mu": "dipole"}, units={"mu": "furlong"})
    bare = etgnn.build_model({**CONFIG, "targets": {"mu": {**CONFIG["targets"]["mu"], "unit": ""}}})
    with pytest.raises(ConfigError, match="target 'mu' declares no unit, so it cannot be served as ASE's 'dipole'"):
        ETGNNCalculator(bare, aliases={"mu": "dipole"})
    with pytest.raises(ConfigError, match=r"target 'alpha' \(structure, rank 2\) cannot serve ASE's 'dipole'"):
        ETGNNCalculator(model, aliases={"alpha": "dipole"})
