"""Kinetic temperature of a trajectory: internal kinetic energy over the internal degrees of freedom."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk, molecule

from etgnn.observables.timeseries import degrees_of_freedom, internal_kinetic_energy


def _internal_velocities(atoms, rng):
    """Random velocities (Angstrom/fs) with zero total momentum and zero angular momentum."""
    m = atoms.get_masses()
    r = atoms.positions - atoms.get_center_of_mass()
    v = rng.normal(size=r.shape) * 0.01
    rigid = np.concatenate([np.tile(np.eye(3), (len(atoms), 1)),
                            np.cross(np.eye(3)[:, None, :], r[None]).reshape(3, -1).T], axis=1)
    sq = np.repeat(np.sqrt(m), 3)
    q = np.linalg.qr(sq[:, None] * rigid)[0]  # mass-weighted rigid motions, orthonormal
    w = sq * v.reshape(-1)
    return ((w - q @ (q.T @ w)) / sq).reshape(-1, 3)


def test_rigid_motion_adds_no_internal_kinetic_energy():
    rng = np.random.default_rng(0)
    atoms = molecule("CH3OH")
    m = atoms.get_masses()
    v = _internal_velocities(atoms, rng)
    kinetic = 0.5 * np.sum(m[:, None] * (v / units.fs) ** 2)
    drift, spin = np.array([0.003, -0.01, 0.02]), np.array([0.004, 0.001, -0.002])  # A/fs, rad/fs
    moving = v + drift + np.cross(spin, atoms.positions - atoms.get_center_of_mass())
    got = internal_kinetic_energy(m, atoms.positions[None], np.stack([v, moving]), periodic=False)
    np.testing.assert_allclose(got, kinetic, rtol=1e-12)
    # a crystal keeps its rotation-like motion (it is not a symmetry there) but loses the drift
    crystal = internal_kinetic_energy(m, atoms.positions[None], (v + drift)[None], periodic=True)
    assert crystal[0] == pytest.approx(kinetic, rel=1e-12)


@pytest.mark.parametrize("atoms, dof, note", [
    (molecule("H2O"), 3, "3N - 6 = 3: centre-of-mass motion and rotation removed"),
    (molecule("CO2"), 4, "3N - 5 = 4: centre-of-mass motion and rotation (linear) removed"),
    (molecule("H"), 0, "3N - 3 = 0: centre-of-mass motion and rotation removed"),
    (bulk("NaCl", "rocksalt", a=5.64).repeat(2), 45, "3N - 3 = 45: centre-of-mass motion removed"),
])
def test_degrees_of_freedom(atoms, dof, note):
    assert degrees_of_freedom(atoms) == (dof, note)


class _Model:
    """The part of a model select_target reads: config.targets (name -> level, rank)."""

    def __init__(self, **targets):
        from types import SimpleNamespace

        self.config = SimpleNamespace(targets={n: SimpleNamespace(level=lv, rank=r) for n, (lv, r) in targets.items()})


def test_select_target_prefers_the_shipped_default_among_several():
    """dielectric-v1 has born_charges (PBEsol, default) and born_charges_pbe: the spectrum's current
    route takes born_charges, as etgnn phonons does; with no default name among them it refuses."""
    from etgnn.errors import ConfigError
    from etgnn.observables.timeseries import select_target

    shipped = _Model(born_charges=("atom", 2), born_charges_pbe=("atom", 2), epsilon=("structure", 2),
                     epsilon_pbe=("structure", 2))
    assert select_target(shipped, None, "atom", 2, "Born charges") == "born_charges"
    assert select_target(shipped, "born_charges_pbe", "atom", 2, "Born charges") == "born_charges_pbe"
    two = _Model(z_a=("atom", 2), z_b=("atom", 2))
    with pytest.raises(ConfigError, match=r"several targets of level atom and rank 2 for Born charges"):
        select_target(two, None, "atom", 2, "Born charges")
    with pytest.raises(ConfigError, match=r"no target of level structure and rank 1"):
        select_target(two, None, "structure", 1, "dipoles")
