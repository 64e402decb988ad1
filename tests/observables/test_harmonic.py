"""Harmonic DFT crystals (phonopy force constants + BORN): forces, static field response, IR from MD."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from etgnn.errors import DataError
from etgnn.observables import spectra as sp
from etgnn.observables.field import FieldCalculator
from etgnn.observables.harmonic import (EPS0_FACTOR, HarmonicCalculator, load_phonopy_crystal, normal_modes,
                                        static_dielectric_ionic, thermalize_modes)

PHONOPY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "phonopy_born"


def _crystal(name):
    files = [PHONOPY / f"{name}.{ext}" for ext in ("phonopy_disp.yaml", "FORCE_SETS", "BORN")]
    if not all(f.is_file() for f in files):
        pytest.skip(f"phonopy data for {name} not found in {PHONOPY}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # phonopy's primitive_matrix='auto' notice
        return load_phonopy_crystal(*files)


def _gamma(crystal, direction):
    ph = crystal.phonon  # phonopy's q direction is reduced (primitive reciprocal lattice)
    ph.run_qpoints([[0, 0, 0]], nac_q_direction=ph.primitive.cell @ np.asarray(direction, dtype=float))
    return ph.qpoints.frequencies[0]  # THz, ascending


def test_harmonic_forces_energy_and_errors():
    rng = np.random.default_rng(0)
    ref = Atoms("H3", positions=rng.normal(size=(3, 3)))
    a = rng.normal(size=(9, 9))
    calc = HarmonicCalculator(a @ a.T, ref)
    atoms = ref.copy()
    atoms.positions += 0.01 * rng.normal(size=(3, 3))
    atoms.calc = calc
    u = (atoms.positions - ref.positions).reshape(-1)
    np.testing.assert_allclose(atoms.get_forces().reshape(-1), -(a @ a.T) @ u, rtol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(0.5 * u @ a @ a.T @ u, rel=1e-12)
    with pytest.raises(DataError, match=r"do not fit the 3-atom reference: expected \(3, 3, 3, 3\) or \(9, 9\)"):
        HarmonicCalculator(np.zeros((6, 6)), ref)
    with pytest.raises(DataError, match="does not match the harmonic reference"):
        calc.get_forces(Atoms("H2"))


@pytest.mark.parametrize("name", ["NaCl", "MgO"])
def test_force_constants_reproduce_dft_force_sets(name):
    crystal = _crystal(name)
    calc = HarmonicCalculator(crystal.force_constants, crystal.atoms)
    for disp in crystal.phonon.dataset["first_atoms"]:
        atoms = crystal.atoms.copy()
        atoms.positions[disp["number"]] += disp["displacement"]
        forces = calc.get_forces(atoms)
        # phonopy's symmetrised force constants fit the DFT forces to 1 % of the largest force
        assert np.abs(forces - disp["forces"]).max() < 0.015 * np.abs(disp["forces"]).max()
    # a lattice translation is no displacement, and a drift of the whole crystal changes nothing
    shifted = crystal.atoms.copy()
    shifted.positions += crystal.atoms.cell[0]
    np.testing.assert_allclose(calc.get_forces(shifted), 0.0, atol=1e-12)
    rattled = crystal.atoms.copy()
    rattled.rattle(0.02, seed=1)
    drifted = rattled.copy()
    drifted.positions += 0.5 * crystal.atoms.cell.sum(axis=0) + 0.3 * crystal.atoms.cell[1]  # splits atoms
    drifted.wrap()
    np.testing.assert_allclose(calc.get_forces(drifted), calc.get_forces(rattled), atol=1e-10)


@pytest.mark.parametrize("name", ["NaCl", "MgO"])
def test_static_field_response_obeys_lyddane_sachs_teller(name):
    """Exact linear solve Phi u = Z^T E: eps_0/eps_inf = (w_LO/w_TO)^2 of phonopy's NAC frequencies."""
    crystal = _crystal(name)
    d_eps = static_dielectric_ionic(crystal.force_constants, crystal.born, crystal.atoms.get_volume())
    eps_inf = crystal.epsilon[0, 0]
    np.testing.assert_allclose(d_eps, d_eps[0, 0] * np.eye(3), atol=1e-6 * d_eps[0, 0])  # cubic
    freqs = _gamma(crystal, [1, 0, 0])
    to, lo = freqs[3], freqs[5]
    assert (eps_inf + d_eps[0, 0]) / eps_inf == pytest.approx((lo / to) ** 2, rel=1e-3)
    assert lo / to > 1.5  # a real LO-TO splitting: the check can fail


def test_relaxation_under_field_matches_linear_solve():
    """BFGS on HarmonicCalculator + FieldCalculator (DFT Born charges) relaxes to the exact response."""
    crystal = _crystal("NaCl")
    field = np.array([0.0, 0.0, 0.01])  # V/Angstrom
    atoms = crystal.atoms.copy()
    calc = FieldCalculator(HarmonicCalculator(crystal.force_constants, crystal.atoms), field, crystal.born)
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=1e-6, steps=200)
    d_eps = EPS0_FACTOR * atoms.calc.get_property("polarization_change", atoms) / field[2]
    exact = static_dielectric_ionic(crystal.force_constants, crystal.born, crystal.atoms.get_volume())
    np.testing.assert_allclose(d_eps, exact[:, 2], atol=2e-3 * exact[2, 2])
    # enthalpy -E.dmu/2 at the minimum of u Phi u/2 - E.Z u
    assert atoms.get_potential_energy() == pytest.approx(
        -0.5 * field[2] * atoms.calc.get_property("dipole_change", atoms)[2], rel=1e-4)


def test_md_current_route_peaks_at_phonopy_to_frequency():
    """NVE on the DFT force constants, J = sum Z v with DFT charges: one IR peak, at phonopy's TO."""
    crystal = _crystal("NaCl")
    atoms = crystal.atoms.copy()
    atoms.calc = HarmonicCalculator(crystal.force_constants, crystal.atoms)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dt, currents = 5.0, []
    md = VelocityVerlet(atoms, timestep=dt * units.fs)
    md.attach(lambda: currents.append(sp.polarization_current(crystal.born, atoms.get_velocities() * units.fs)))
    md.run(3999)
    spec = sp.ir_spectrum(np.array(currents), dt, 300.0, volume=atoms.get_volume(), max_lag=2000)
    resolution = 1e3 / (2000 * dt)  # THz
    to = _gamma(crystal, [1, 0, 0])[3]
    absorption = spec.columns["absorption"]
    assert abs(spec.freq_thz[np.argmax(absorption)] - to) < resolution
    # LO (7.40 THz) is not seen under periodic (zero-field) boundary conditions; nothing else either
    band = np.abs(spec.freq_thz - to) < 3 * resolution
    assert absorption[~band].max() < 0.02 * absorption.max()


def test_field_md_example_runs(capsys):
    """examples/field_md.py: a short run under a field prints MD and exact eps_0 - eps_inf."""
    import importlib.util

    _crystal("NaCl")  # skips without the data
    path = Path(__file__).resolve().parents[2] / "examples" / "field_md.py"
    spec = importlib.util.spec_from_file_location("field_md", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert module.main(["--data", str(PHONOPY), "--steps", "200"]) == 0
    out = capsys.readouterr().out
    assert "exact static response (DFT charges): 3.816" in out


def test_born_charges_obey_the_sum_rule_and_a_broken_file_is_reported():
    """ZnO.BORN sums to 0.06 e per primitive cell: enforced (no net field force), reported with the number."""
    files = [PHONOPY / f"ZnO.{ext}" for ext in ("phonopy_disp.yaml", "FORCE_SETS", "BORN")]
    if not all(f.is_file() for f in files):
        pytest.skip(f"phonopy data for ZnO not found in {PHONOPY}")
    with pytest.warns(UserWarning, match=r"ZnO.BORN: the Born charges break the acoustic sum rule: they add up to "
                                         r"0.06\d* e .* over the 4 atoms of the primitive cell"):
        crystal = load_phonopy_crystal(*files)
    raw = np.asarray(crystal.phonon.nac_params["born"])
    np.testing.assert_allclose(crystal.born_sum, raw.sum(axis=0), atol=1e-14)
    assert np.abs(crystal.born_sum).max() == pytest.approx(0.0603, abs=1e-3)
    np.testing.assert_allclose(crystal.born.sum(axis=0), 0.0, atol=1e-12)
    # the field pushes no atom on average: zero net force on the crystal
    atoms = crystal.atoms.copy()
    atoms.calc = FieldCalculator(HarmonicCalculator(crystal.force_constants, crystal.atoms), [0.01, -0.02, 0.03],
                                 crystal.born)
    np.testing.assert_allclose(atoms.get_forces().sum(axis=0), 0.0, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # NaCl.BORN holds the rule to 3e-4 e: no warning
        warnings.filterwarnings("ignore", message=".*primitive_matrix.*")
        nacl = _crystal("NaCl")
    assert np.abs(nacl.born_sum).max() < 1e-3


def test_thermalize_modes_gives_every_mode_kT():
    """Energy (3N - 3) k_B T (to the asymmetry of phonopy's force constants, 1e-7), no drift."""
    crystal = _crystal("NaCl")
    atoms = crystal.atoms.copy()
    freq = thermalize_modes(atoms, crystal.force_constants, 300.0, np.random.default_rng(0), born=crystal.born)
    n = len(atoms)
    assert len(freq) == 3 * n - 3
    atoms.calc = HarmonicCalculator(crystal.force_constants, crystal.atoms)
    kt = units.kB * 300.0
    assert atoms.get_potential_energy() + atoms.get_kinetic_energy() == pytest.approx((3 * n - 3) * kt, rel=1e-6)
    np.testing.assert_allclose(atoms.get_momenta().sum(axis=0), 0.0, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_md_band_area_from_thermalized_modes(seed):
    """Docs walk-through 1: every mode started with k_B T, the single run's band area is the harmonic one.

    Expected: ``int alpha n d(wavenumber) = sum_m |Zbar_m|^2 / (12 eps0 c^2 V)`` over the supercell
    modes (``Zbar_m = sum_k Z_k e_m,k / sqrt(m_k)``). Maxwell-Boltzmann momenta at the equilibrium
    geometry (the old walk-through) give a run near T/2 and a random area (0.05-1.4 of this).
    """
    from scipy import constants as sc

    crystal = _crystal("NaCl")
    atoms = crystal.atoms.copy()
    thermalize_modes(atoms, crystal.force_constants, 300.0, np.random.default_rng(seed), born=crystal.born)
    atoms.calc = HarmonicCalculator(crystal.force_constants, crystal.atoms)
    dt, currents = 5.0, []
    md = VelocityVerlet(atoms, timestep=dt * units.fs)
    md.attach(lambda: currents.append(sp.polarization_current(crystal.born, atoms.get_velocities() * units.fs)))
    md.run(3999)
    volume = crystal.atoms.get_volume()
    spec = sp.ir_spectrum(np.array(currents), dt, 300.0, volume=volume, max_lag=2000)
    area = np.trapezoid(spec.columns["absorption"], spec.freq_cm1)  # cm^-2
    freq, vec = normal_modes(crystal.force_constants, atoms.get_masses())
    m = np.repeat(atoms.get_masses() ** -0.5, 3)
    zbar = crystal.born.transpose(1, 0, 2).reshape(3, -1) @ (m[:, None] * vec)
    to_cm2 = (sc.e**2 / sc.atomic_mass) / (12 * sc.epsilon_0 * sc.c**2 * volume * 1e-30) / 1e4
    expected = float(np.sum(zbar[:, freq > 0.1] ** 2)) * to_cm2
    assert area == pytest.approx(expected, rel=0.02)
