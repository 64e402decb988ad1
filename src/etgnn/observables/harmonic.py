"""Harmonic crystals from phonopy force constants: an ASE calculator and the static ionic response.

``HarmonicCalculator`` gives ``F = -Phi u`` and ``E = u.Phi.u / 2`` for displacements ``u`` from a
reference structure, so MD runs on real DFT force constants (``load_phonopy_crystal``).  The
phonopy files are read by phonopy itself::

    crystal = load_phonopy_crystal("NaCl.phonopy_disp.yaml", "NaCl.FORCE_SETS", "NaCl.BORN")
    atoms = crystal.atoms.copy(); atoms.calc = HarmonicCalculator(crystal.force_constants, crystal.atoms)

Units: positions Angstrom, force constants eV/Angstrom^2, forces eV/Angstrom, energy eV, Born
charges e with ``Z[k, i, j] = dP_i/du_{k,j}`` (phonopy's BORN convention is the same: the field
index first).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ..errors import DataError

__all__ = ["HarmonicCrystal", "HarmonicCalculator", "load_phonopy_crystal", "displacements",
           "static_dielectric_ionic", "normal_modes", "thermalize_modes", "EPS0_FACTOR", "THZ_PER_SQRT_EV_A2_AMU"]

#: 4 pi e^2 / (4 pi eps0) in eV Angstrom: eps_ij = EPS0_FACTOR / V * (Z Phi^+ Z^T)_ij, and
#: Delta eps = EPS0_FACTOR * Delta P [e/Angstrom^2] / E [V/Angstrom]
EPS0_FACTOR = 4.0 * np.pi * 14.399645
#: frequency in THz of a mass-weighted force-constant eigenvalue of 1 eV/(Angstrom^2 amu):
#: ``f = sqrt(lambda) * THZ_PER_SQRT_EV_A2_AMU`` (phonopy's VaspToTHz)
THZ_PER_SQRT_EV_A2_AMU = 15.633302
#: a BORN file whose charges sum to more than this (e, any component, per primitive cell) is reported
SUM_RULE_WARN = 1e-3


@dataclass
class HarmonicCrystal:
    """A supercell with its force constants and (optionally) Born charges.

    Attributes:
        atoms: the phonopy supercell, reference (equilibrium) positions, Angstrom.
        force_constants: (n_atoms, n_atoms, 3, 3) ``Phi[k, l, a, b] = d^2E / du_{k,a} du_{l,b}``, eV/A^2.
        born: (n_atoms, 3, 3) Born charges of every supercell atom (e), or None; they obey the
            acoustic sum rule ``sum_k Z_k = 0`` exactly (see :func:`load_phonopy_crystal`).
        epsilon: (3, 3) eps_inf, or None.
        phonon: the ``phonopy.Phonopy`` object (primitive cell, NAC parameters).
        born_sum: (3, 3) sum of the file's Born charges over the primitive cell before the sum rule
            was enforced (e), or None: how far the file broke it.
    """

    atoms: Atoms
    force_constants: np.ndarray
    born: np.ndarray | None
    epsilon: np.ndarray | None
    phonon: object
    born_sum: np.ndarray | None = None


def load_phonopy_crystal(disp_yaml: str | os.PathLike, force_sets: str | os.PathLike | None = None,
                         born: str | os.PathLike | None = None) -> HarmonicCrystal:
    """Read phonopy's ``phonopy_disp.yaml`` + ``FORCE_SETS`` (+ ``BORN``) with ``phonopy.load``.

    Force constants are produced by phonopy (symmetrised, full supercell form); the BORN file's
    symmetry-inequivalent charges are expanded by phonopy's own reader to the primitive cell and
    here to every supercell atom (an atom takes the charge of its primitive-cell image).

    The acoustic sum rule ``sum_k Z_k = 0`` is enforced as ``etgnn export-born`` does, by
    subtracting the mean charge of the primitive cell from every atom: charges that break it make a
    uniform field push the centre of mass (net force ``q E . sum_k Z_k``) in
    :class:`~etgnn.observables.field.FieldCalculator`. The file's own sum is kept in
    ``HarmonicCrystal.born_sum``, and a warning names the file when a component exceeds
    :data:`SUM_RULE_WARN` e per primitive cell.
    """
    import phonopy

    for path in (disp_yaml, force_sets, born):
        if path is not None and not os.path.isfile(path):
            raise DataError(f"phonopy file not found: {path}")
    try:
        phonon = phonopy.load(disp_yaml, force_sets_filename=force_sets, born_filename=born,
                              is_compact_fc=False, primitive_matrix="auto", log_level=0)
    except Exception as exc:  # phonopy raises many kinds on bad files
        raise DataError(f"phonopy could not read {disp_yaml} / {force_sets} / {born}: {exc}") from exc
    if phonon.force_constants is None:
        raise DataError(f"{disp_yaml}: no force constants (give the FORCE_SETS file)")
    sc = phonon.supercell
    atoms = Atoms(sc.symbols, positions=sc.positions, cell=sc.cell, masses=sc.masses, pbc=True)
    z = eps = total = None
    if phonon.nac_params is not None:
        prim = phonon.primitive
        index = np.array([prim.p2p_map[s] for s in prim.s2p_map])
        z_prim = np.asarray(phonon.nac_params["born"], dtype=float)
        total = z_prim.sum(axis=0)
        worst = float(np.abs(total).max())
        if worst > SUM_RULE_WARN:
            warnings.warn(f"{born}: the Born charges break the acoustic sum rule: they add up to "
                          f"{worst:.4g} e (largest component of sum_k Z_k over the {len(z_prim)} atoms of the "
                          f"primitive cell, {worst / len(z_prim):.3g} e per atom); the mean charge was "
                          "subtracted from every atom so that a uniform field exerts no net force",
                          stacklevel=2)
        z = (z_prim - total / len(z_prim))[index]
        eps = np.asarray(phonon.nac_params["dielectric"], dtype=float)
    return HarmonicCrystal(atoms, np.asarray(phonon.force_constants, dtype=float), z, eps, phonon, total)


def _wrap(u: np.ndarray, reference: Atoms) -> np.ndarray:
    """Displacements (n, 3) to the nearest periodic image along the periodic directions."""
    if not reference.pbc.any():
        return u
    cell = reference.cell.array
    frac = np.linalg.solve(cell.T, u.T).T
    frac[:, reference.pbc] -= np.round(frac[:, reference.pbc])
    return frac @ cell


def displacements(atoms: Atoms, reference: Atoms, remove_translation: bool = False) -> np.ndarray:
    """``u = positions - reference positions``, wrapped to the nearest periodic image.

    Args:
        remove_translation: subtract the mean displacement.  For a crystal the displacements are
            then taken relative to atom 0's, so that a drift of the whole crystal (by up to any
            number of cells) never splits atoms between images.

    Returns:
        (n_atoms, 3) Angstrom.
    """
    if len(atoms) != len(reference) or (atoms.numbers != reference.numbers).any():
        raise DataError(f"structure {atoms.get_chemical_formula()} ({len(atoms)} atoms) does not match the "
                        f"harmonic reference {reference.get_chemical_formula()} ({len(reference)} atoms) "
                        "atom by atom")
    u = atoms.positions - reference.positions
    if not remove_translation:
        return _wrap(u, reference)
    u = _wrap(u - _wrap(u[:1], reference), reference)
    return u - u.mean(axis=0)


class HarmonicCalculator(Calculator):
    """Energy and forces of a harmonic crystal or molecule: ``F = -Phi u``, ``E = u.Phi.u / 2``.

    For a periodic reference the rigid translation is removed from ``u`` first (it costs no
    energy when ``Phi`` obeys the acoustic sum rule, and a drifting crystal stays harmonic).

    Args:
        force_constants: (n_atoms, n_atoms, 3, 3) in eV/Angstrom^2 (or (3 n_atoms, 3 n_atoms)).
        reference: equilibrium structure, same atoms in the same order.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, force_constants, reference: Atoms, **kwargs):
        super().__init__(**kwargs)
        n = len(reference)
        fc = np.asarray(force_constants, dtype=float)
        if fc.shape == (n, n, 3, 3):
            fc = fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
        if fc.shape != (3 * n, 3 * n):
            raise DataError(f"force constants of shape {np.shape(force_constants)} do not fit the "
                            f"{n}-atom reference: expected ({n}, {n}, 3, 3) or ({3 * n}, {3 * n})")
        self.matrix = fc
        self.reference = reference.copy()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        u = displacements(self.atoms, self.reference, remove_translation=self.reference.pbc.any()).reshape(-1)
        f = -self.matrix @ u
        energy = -0.5 * float(u @ f)
        self.results = {"energy": energy, "free_energy": energy, "forces": f.reshape(-1, 3)}


def static_dielectric_ionic(force_constants, born, volume: float) -> np.ndarray:
    """Exact relaxed-ion dielectric contribution of a harmonic crystal under a uniform field.

    Solves ``Phi u = Z^T E`` on the supercell (pseudo-inverse on the complement of the three
    rigid translations, so a small violation of the charge sum rule is projected out), then
    ``Delta P = (1/V) sum_k Z_k u_k``: ``Delta eps = 4 pi (e^2/4 pi eps0) Z Phi^+ Z^T / V``.

    Args:
        force_constants: (n_atoms, n_atoms, 3, 3), eV/Angstrom^2.
        born: (n_atoms, 3, 3), e.  volume: supercell volume, Angstrom^3.

    Returns:
        (3, 3) dimensionless ``eps_0 - eps_inf``.
    """
    n = len(born)
    phi = np.asarray(force_constants, dtype=float).transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    zt = np.asarray(born, dtype=float).transpose(0, 2, 1).reshape(3 * n, 3)  # rows (k, j), cols i
    trans = np.tile(np.eye(3), (n, 1)) / np.sqrt(n)  # orthonormal rigid translations
    proj = np.eye(3 * n) - trans @ trans.T
    phi = proj @ (0.5 * (phi + phi.T)) @ proj
    u = np.linalg.lstsq(phi + trans @ trans.T, proj @ zt, rcond=None)[0]  # (3n, 3): u per unit E_i
    return EPS0_FACTOR / volume * zt.T @ u


def normal_modes(force_constants, masses) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and mass-weighted eigenvectors of ``M^-1/2 Phi M^-1/2``.

    Args:
        force_constants: (n_atoms, n_atoms, 3, 3) or (3 n_atoms, 3 n_atoms), eV/Angstrom^2
            (symmetrised here).
        masses: (n_atoms,) amu.

    Returns:
        ``(freq_thz, vectors)``: (3 n_atoms,) ascending frequencies in THz (negative for unstable
        modes), and (3 n_atoms, 3 n_atoms) orthonormal eigenvectors in the columns; the Cartesian
        displacement of mode ``m`` with mass-weighted amplitude ``q`` (sqrt(amu) Angstrom) is
        ``q * vectors[:, m] / sqrt(m_k)``.
    """
    masses = np.asarray(masses, dtype=float)
    n = len(masses)
    phi = np.asarray(force_constants, dtype=float)
    if phi.shape == (n, n, 3, 3):
        phi = phi.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    if phi.shape != (3 * n, 3 * n):
        raise DataError(f"force constants of shape {np.shape(force_constants)} do not fit {n} atoms")
    m = np.repeat(masses ** -0.5, 3)
    lam, vec = np.linalg.eigh(m[:, None] * 0.5 * (phi + phi.T) * m)
    return np.sign(lam) * np.sqrt(np.abs(lam)) * THZ_PER_SQRT_EV_A2_AMU, vec


def thermalize_modes(atoms: Atoms, force_constants, temperature: float, rng=None, born=None,
                     min_thz: float = 0.1) -> np.ndarray:
    """Give every vibrational mode of a harmonic system the energy ``k_B T``, with random phases.

    The start of an NVE run whose time average is the canonical one at ``T`` for every mode:
    mode ``m`` gets ``q_m = A_m cos(phi_m)``, ``dq_m/dt = -A_m w_m sin(phi_m)`` with
    ``A_m = sqrt(2 k_B T) / w_m``, so its energy is exactly ``k_B T`` and its kinetic energy
    averages to ``k_B T / 2``. (Drawing Maxwell-Boltzmann momenta at the equilibrium geometry instead
    puts only ``k_B T / 2`` per mode on average, so such a run settles near ``T / 2``, and its band
    areas are random.) Modes below ``min_thz`` (rigid translations, and for a molecule rotations)
    are left at rest, so the total momentum is zero and the kinetic temperature over the
    ``3 n_atoms - 3`` (crystal) or ``3 n_atoms - 6`` (molecule) internal degrees of freedom
    averages to ``T``.

    Args:
        atoms: the structure at its equilibrium positions; its positions and momenta are set here.
        force_constants: (n_atoms, n_atoms, 3, 3) or (3 n_atoms, 3 n_atoms), eV/Angstrom^2 (for a
            molecule, a Hessian at a minimum or with the rigid rotations projected out).
        temperature: K.
        rng: ``numpy.random.Generator`` for the phases (default: a fresh unseeded one).
        born: optional (n_atoms, 3, 3) Born charges (e). Degenerate modes are then rotated among
            themselves so that their mode charges ``sum_k Z_k e_m,k / sqrt(m_k)`` are orthogonal:
            the cross terms between them vanish from ``<J . J>``, and the band area of a single run
            is the harmonic one for any phases.
        min_thz: frequency below which a mode is not excited, THz.

    Returns:
        (n_excited,) frequencies of the excited modes, THz.
    """
    from ase import units

    if not temperature >= 0 or not np.isfinite(temperature):
        raise DataError(f"temperature must be a finite number >= 0 K, got {temperature}")
    rng = np.random.default_rng() if rng is None else rng
    masses = atoms.get_masses()
    freq, vec = normal_modes(force_constants, masses)
    m = np.repeat(masses ** -0.5, 3)
    if born is not None:
        zbar = np.asarray(born, dtype=float).transpose(1, 0, 2).reshape(3, -1) @ (m[:, None] * vec)
        groups = np.split(np.arange(len(freq)), np.flatnonzero(np.diff(freq) > 1e-4 * max(freq.max(), 1.0)) + 1)
        for g in groups:
            if len(g) > 1:
                vt = np.linalg.svd(zbar[:, g])[2]
                vec[:, g] = vec[:, g] @ vt.T
    excited = freq > min_thz
    omega = 2 * np.pi * freq[excited] * 1e-3 / units.fs  # rad per ASE time unit
    amp = np.sqrt(2 * units.kB * temperature) / omega  # sqrt(amu) Angstrom
    phase = rng.uniform(0, 2 * np.pi, size=len(omega))
    modes = m[:, None] * vec[:, excited]
    atoms.positions = atoms.positions + (modes @ (amp * np.cos(phase))).reshape(-1, 3)
    atoms.set_velocities((modes @ (-amp * omega * np.sin(phase))).reshape(-1, 3))
    return freq[excited]
