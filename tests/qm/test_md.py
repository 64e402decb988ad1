"""``etgnn.qm.md``: Born-Oppenheimer MD on etgnn's own PySCF route."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("pyscf")

from etgnn.qm.md import PySCFCalculator, run_bomd  # noqa: E402
from etgnn.qm.molecules import reference_geometry  # noqa: E402


def test_forces_are_minus_the_energy_gradient():
    symbols, pos = reference_geometry("H2O")
    atoms = Atoms(symbols, positions=pos)
    atoms.calc = PySCFCalculator()
    f = atoms.get_forces()[1, 2]
    h, e = 1e-4, []
    for s in (h, -h):
        probe = atoms.copy()
        probe.positions[1, 2] += s
        probe.calc = PySCFCalculator()
        e.append(probe.get_potential_energy())
    assert f == pytest.approx(-(e[0] - e[1]) / (2 * h), abs=1e-5)


@pytest.mark.slow
def test_bomd_frames():
    symbols, pos = reference_geometry("H2O")
    frames, info = run_bomd(Atoms(symbols, positions=pos), 300.0, 0.25, 8, every=4)
    assert [f.info["time_fs"] for f in frames] == [0.0, 1.0, 2.0]
    np.testing.assert_allclose(info["harmonic_cm1"], [1750.4, 4148.6, 4244.7], atol=0.1)
    total = [f.info["energy"] + f.get_kinetic_energy() for f in frames]
    assert np.ptp(total) < 1e-3  # eV
    masses = frames[0].get_masses()
    np.testing.assert_allclose(masses @ frames[-1].get_velocities(), 0.0, atol=1e-9)
    assert all(f.info["method"] == "RHF/def2-SVP" for f in frames)
