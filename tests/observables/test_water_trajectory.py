"""The shipped ``water_trajectory.extxyz``: a real RHF/def2-SVP Born-Oppenheimer MD of one H2O
(``python -m etgnn.qm.md``), and the README's spectrum command on it."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units

from etgnn.cli import main
from etgnn.data.dataset import resolve_data_path
from etgnn.observables import spectra as sp
from etgnn.observables.timeseries import degrees_of_freedom, internal_kinetic_energy

pytestmark = pytest.mark.usefixtures("single_thread")

SHIPPED = "etgnn:examples_data/water_trajectory.extxyz"
#: RHF/def2-SVP harmonic wavenumbers at the method's minimum (etgnn.qm.md.harmonic_hessian), cm^-1
HARMONIC_CM1 = (1750.4, 4148.6, 4244.7)


@pytest.fixture(scope="module")
def frames():
    import ase.io

    return ase.io.read(resolve_data_path(SHIPPED), index=":")


def test_a_real_nve_trajectory(frames):
    """1 fs between frames (time_fs), velocities that are the time derivative of the positions,
    a conserved total energy, no drift, no rotation, and 300 K over the 3 internal degrees of freedom."""
    assert len(frames) == 1501 and all(f.info["method"] == "RHF/def2-SVP" for f in frames)
    times = np.array([f.info["time_fs"] for f in frames])
    np.testing.assert_allclose(np.diff(times), 1.0, atol=1e-9)
    pos = np.array([f.positions for f in frames])
    vel = np.array([f.get_velocities() for f in frames]) * units.fs  # Angstrom/fs
    central = (pos[2:] - pos[:-2]) / 2.0
    # the central difference over +-1 fs is the velocity times sin(w dt)/(w dt) (0.90 for the 8 fs
    # stretch period): within 8 % of the largest velocity; a wrong time unit would be off by 10x
    assert np.abs(central - vel[1:-1]).max() < 0.15 * np.abs(vel).max()
    total = np.array([f.get_potential_energy() + f.get_kinetic_energy() for f in frames])
    assert total.std() < 5e-4  # eV (1.2e-4 measured), against 3 k_B T = 0.078 eV of vibrational energy
    masses = frames[0].get_masses()
    np.testing.assert_allclose(np.einsum("k,fki->fi", masses, vel), 0.0, atol=1e-6)
    assert degrees_of_freedom(frames[0])[0] == 3
    kinetic = internal_kinetic_energy(masses, pos, vel, periodic=False)
    np.testing.assert_allclose(kinetic, [f.get_kinetic_energy() for f in frames], atol=1e-5)  # eV: no rotation (1.4e-6 measured)
    assert 2 * kinetic.mean() / (3 * units.kB) == pytest.approx(300.0, rel=0.05)


def test_rhf_dipole_spectrum_has_the_bands_of_the_method(frames):
    """The file's own RHF dipoles (dipole route, corrected for the central difference) put the bend
    and both stretches within 1.5 % of the RHF harmonic wavenumbers (anharmonic and Verlet shifts)."""
    mu = np.array([f.get_dipole_moment() for f in frames])
    spec = sp.ir_spectrum(sp.dipole_current(mu, 1.0), 1.0, 300.0, max_lag=750)
    cm1, absorption = spec.freq_cm1, spec.columns["absorption"]
    for w in HARMONIC_CM1:
        sel = np.abs(cm1 - w) < 60
        peak = cm1[sel][np.argmax(absorption[sel])]
        assert peak == pytest.approx(w, rel=0.015)
        assert absorption[sel].max() > 0.05 * absorption.max()


def test_labels_are_the_method(frames):
    """Energy and dipole of a frame are etgnn.qm's RHF/def2-SVP single point at its positions."""
    pytest.importorskip("pyscf")
    from etgnn.qm import single_point

    frame = frames[777]
    sp_ = single_point(frame.get_chemical_symbols(), frame.positions)
    assert frame.get_potential_energy() == pytest.approx(sp_.energy, abs=1e-6)
    np.testing.assert_allclose(frame.get_dipole_moment(), sp_.dipole, atol=1e-6)


def test_readme_spectrum_command(tmp_path, make_model, capsys):
    """``etgnn spectrum ir CKPT etgnn:examples_data/water_trajectory.extxyz -o ir.csv``: no --timestep
    (time_fs), no --temperature (3N - 6 degrees of freedom), the bands where the method puts them."""
    ckpt = tmp_path / "model.pt"
    make_model(targets=("bec", "dipole")).save(ckpt)
    out = tmp_path / "ir.csv"
    assert main(["spectrum", "ir", str(ckpt), SHIPPED, "-o", str(out), "--batch-size", "256", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "over 3N - 6 = 3: centre-of-mass motion and rotation removed" in printed
    assert "1501 frames 1 fs apart" in printed
    temperature = float(printed.split("T = ")[1].split(" K")[0])
    assert temperature == pytest.approx(300.0, rel=0.05)
    data = np.loadtxt(out, delimiter=",")
    for w in HARMONIC_CM1:
        sel = np.abs(data[:, 0] - w) < 60
        assert data[sel, 0][np.argmax(data[sel, 2])] == pytest.approx(w, rel=0.015)
