"""The ASE calculator returns the model's predictions, rotated consistently with the structure."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

import etgnn
from etgnn.calculator import ETGNNCalculator
from etgnn.tensors import random_rotation, rotate

CONFIG = {
    "model": {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1, "dtype": "float64"},
    "targets": {
        "forces": {"key": "forces", "level": "atom", "rank": 1},
        "mu": {"key": "mu", "level": "structure", "rank": 1, "reduce": "sum"},
        "alpha": {"key": "alpha", "level": "structure", "rank": 2, "reduce": "sum", "symmetry": "ij=ji"},
    },
}


@pytest.fixture
def model():
    m = etgnn.build_model(CONFIG)
    for head in m.heads.values():
        head.scale.fill_(3.0)  # make the untrained outputs O(1)
        head.edge_norm.fill_(1.0)
    return m


def test_calculator_matches_predict_and_serves_ase_getters(model, tmp_path):
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=0)
    ref = model.predict(atoms)[0]
    path = tmp_path / "m.pt"
    model.save(path)
    atoms.calc = ETGNNCalculator(path, aliases={"mu": "dipole"})
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], atol=1e-12)
    np.testing.assert_allclose(atoms.get_dipole_moment(), ref["mu"], atol=1e-12)
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
