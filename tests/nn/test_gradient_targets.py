"""Conservative forces (``gradient_of: energy``): F = -dE/dR exactly, in every code path.

The shared physics suite (equivariance, permutations, batches, supercells, space-group
operations) covers the ``conservative_forces`` head of the test models too; here: the derivative
itself by finite differences, chunked == unchunked, Table S1, energy conservation in MD, export
and the config errors.  Training through the second derivative: tests/train/test_gradient_training.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

import etgnn
from etgnn.config import load_config
from etgnn.errors import ConfigError
from etgnn.symmetry import table_s1_structures

pytestmark = pytest.mark.usefixtures("single_thread")

ENERGY_FORCES = ["energy", "conservative_forces"]


def _energy(model, atoms) -> float:
    return float(model.predict(atoms)[0]["energy"])


@pytest.mark.parametrize("name", ["CH3OH", "triclinic"])
def test_forces_are_minus_the_finite_difference_gradient(make_model, structures, name, assert_close):
    model = make_model("float64", targets=ENERGY_FORCES)
    atoms = structures[name]
    forces = model.predict(atoms)[0]["conservative_forces"]
    h = 1e-5
    fd = np.zeros_like(forces)
    for i in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, k] += h
            minus.positions[i, k] -= h
            fd[i, k] = -(_energy(model, plus) - _energy(model, minus)) / (2 * h)
    assert_close(forces, fd, 1e-7, f"{name}: forces vs -dE/dR by central differences")
    assert np.abs(forces).max() > 0.1, "forces ~0: the comparison would be void"
    assert_close(forces.sum(axis=0), np.zeros(3), 1e-12, f"{name}: sum of the forces (translation invariance)")


def test_chunked_energy_and_forces_equal_one_pass(make_model, structures, assert_close, assert_differs):
    """Inference takes the gradient chunk by chunk (bounded memory); training through chunks too."""
    one = make_model("float64", targets=ENERGY_FORCES, chunk_triplets=None)
    chunked = make_model("float64", targets=ENERGY_FORCES, chunk_triplets=40)
    atoms = structures["triclinic"].repeat((2, 1, 1))
    ref, got = one.predict(atoms)[0], chunked.predict(atoms)[0]
    assert_close(got["conservative_forces"], ref["conservative_forces"], 1e-12, "chunked forces")
    assert_close(got["energy"], ref["energy"], 1e-12, "chunked energy")
    assert_differs(ref["conservative_forces"][:2], ref["conservative_forces"][2:4], 1e-12, "forces of two atoms")
    from etgnn.data.batch import collate

    batch = collate([chunked.graph(atoms)], dtype=torch.float64)
    with torch.enable_grad():  # training mode keeps the graph through the forces
        out = chunked(batch)
        assert out["conservative_forces"].requires_grad
        g = torch.autograd.grad(out["conservative_forces"].square().sum(), list(chunked.backbone.parameters()),
                                allow_unused=True)
    assert any(x is not None and x.abs().max() > 0 for x in g), "no gradient reaches the backbone through the forces"
    assert_close(out["conservative_forces"].detach().numpy(), ref["conservative_forces"], 1e-12, "training-mode forces")


def test_table_s1_conservative_forces_vanish(make_model, assert_close, assert_differs):
    """Ideal graphene, h-BN, diamond: zero conservative force on every atom for random weights."""
    model = make_model("float64", targets=ENERGY_FORCES)
    for name, atoms in table_s1_structures().items():
        forces = model.predict(atoms)[0]["conservative_forces"]
        assert_close(forces, np.zeros_like(forces), 1e-10, f"{name}: conservative forces")
        atoms.positions[0] += [0.05, -0.03, 0.02]
        moved = model.predict(atoms)[0]["conservative_forces"]
        assert_differs(moved, np.zeros_like(moved), 1e-10, f"{name} with a moved atom")


def _nve_energies(forces: dict) -> tuple[float, float]:
    """(spread of the total energy, spread of the kinetic energy) over 60 Velocity Verlet steps of
    rattled diamond Si at 300 K with a random float64 model whose forces are ``forces``."""
    from ase import units
    from ase.build import bulk
    from ase.md.verlet import VelocityVerlet

    model = etgnn.build_model({"model": {"hidden_channels": 16, "triplet_channels": 8, "num_blocks": 1,
                                         "cutoff": 4.0, "triplet_cutoff": 3.0, "dtype": "float64", "seed": 1},
                               "targets": {"energy": {"key": "E", "level": "structure", "rank": 0, "reduce": "sum",
                                                      "unit": "eV"},
                                           "forces": {"key": "F", "level": "atom", "rank": 1, "unit": "eV/Angstrom",
                                                      **forces}}})
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=2)
    kt = units.kB * 300.0  # Maxwell-Boltzmann momenta at 300 K, total momentum removed
    p = np.random.default_rng(0).normal(size=(len(atoms), 3)) * np.sqrt(atoms.get_masses() * kt)[:, None]
    atoms.set_momenta(p - p.mean(axis=0))
    atoms.calc = etgnn.ETGNNCalculator(model)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    total, kinetic = [], []
    for _ in range(60):
        dyn.run(1)
        total.append(atoms.get_total_energy())
        kinetic.append(atoms.get_kinetic_energy())
    return float(np.ptp(total)), float(np.ptp(kinetic))


def test_nve_md_conserves_the_total_energy():
    """Velocity Verlet with conservative forces: the total energy stays constant to a tiny fraction
    of the kinetic energy's swings (O(dt^2), no drift); with a direct force head (the energy a
    separate head) it does not, so the check can fail."""
    total, swing = _nve_energies({"gradient_of": "energy"})
    assert swing > 1e-3, "the atoms barely move: the check would be void"
    assert total < 0.02 * swing, f"conservative forces: total energy varies by {total:.2e} eV, kinetic by {swing:.2e} eV"
    total, swing = _nve_energies({})
    assert total > 0.1 * swing, f"direct forces: total energy varies by only {total:.2e} eV (kinetic {swing:.2e} eV)"


def test_export_leaves_gradients_to_autograd(make_model, structures, assert_close, tmp_path):
    import json

    from etgnn.export import export_model

    model = make_model("float64", targets=ENERGY_FORCES + ["bec"])
    path = export_model(model, tmp_path / "m.pt2")
    extra = {"etgnn.json": ""}
    program = torch.export.load(path, extra_files=extra)
    meta = json.loads(extra["etgnn.json"])
    assert set(meta["targets"]) == {"energy", "bec"}
    assert meta["gradients"] == {"conservative_forces": {"of": "energy", "level": "atom", "rank": 1, "unit": "",
                                                         "key": "conservative_forces"}}
    atoms = structures["triclinic"]
    g = model.graph(atoms)
    from etgnn.data import keys as K

    cell = g[K.CELL]
    shifts = torch.as_tensor(np.rint(g[K.EDGE_SHIFT] @ np.linalg.inv(cell)), dtype=torch.int64)
    pos = torch.as_tensor(g[K.POSITIONS]).requires_grad_(True)
    out = program.module()(pos, torch.as_tensor(g[K.NUMBERS]), torch.as_tensor(cell), torch.as_tensor(g[K.EDGE_INDEX]),
                           shifts, torch.as_tensor(g[K.TRIPLET_A]), torch.as_tensor(g[K.TRIPLET_B]))
    forces = -torch.autograd.grad(out["energy"], pos)[0]
    ref = model.predict(atoms)[0]
    assert_close(forces.numpy(), ref["conservative_forces"], 1e-10, "exported energy's -gradient")
    assert_close(out["bec"].detach().numpy(), ref["bec"], 1e-10, "exported bec")


def _config(**forces):
    return {"targets": {"energy": {"key": "E", "level": "structure", "rank": 0, "reduce": "sum"},
                        "mean_energy": {"key": "e", "level": "structure", "rank": 0},
                        "forces": {"key": "F", "level": "atom", "rank": 1, "gradient_of": "energy", **forces}}}


@pytest.mark.parametrize("change, message", [
    ({"gradient_of": "enrgy"}, r"targets.forces.gradient_of: no target named 'enrgy'; did you mean 'energy'\?"),
    ({"gradient_of": "mean_energy"}, r"targets.forces.gradient_of: 'mean_energy' must be an energy, a structure target "
                                     r"of rank 0 summed over atoms \(level: structure, rank: 0, reduce: sum\), got level "
                                     r"structure, rank 0, reduce mean"),
    ({"rank": 2}, r"targets.forces.gradient_of: a gradient with respect to the positions is a per-atom vector; set "
                  r"targets.forces.level: atom and rank: 1 \(got level atom, rank 2\)"),
    ({"sum_rule": True}, r"targets.forces: sum_rule, sum_rule_weight and symmetry do not apply to a gradient target"),
])
def test_gradient_target_config_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_config(**change))


def test_chunk_checkpointing_is_refused_with_gradient_targets():
    cfg = _config()
    cfg["model"] = {"checkpoint": "chunks"}
    with pytest.raises(ConfigError, match="model.checkpoint: chunks cannot differentiate twice"):
        load_config(cfg)
    cfg["model"] = {"checkpoint": "blocks"}
    assert load_config(cfg).targets["forces"].gradient_of == "energy"
