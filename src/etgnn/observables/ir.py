"""Harmonic IR intensities of a molecule from a Hessian and atomic polar tensors (APTs).

Conventions (docs/spectra.md, "Harmonic IR intensities of the shipped molecules"):

- Hessian ``H[3k + a, 3l + b] = d^2 E / dR_ka dR_lb`` in eV/Angstrom^2, masses in amu, positions
  in Angstrom; APTs ``Z[k, i, j] = d mu_i / dR_kj`` in e (first index field/dipole, second
  displacement, as in docs/conventions.md).
- Normal modes: eigenvectors ``e_m`` of the mass-weighted Hessian ``M^-1/2 H M^-1/2`` restricted
  to the complement of the mass-weighted rigid motions (3 translations, 3 rotations, 2 for a
  linear molecule), so exactly ``3n - 6`` (``3n - 5``) vibrations come out, whatever the numerical
  noise of ``H`` in the rigid directions. Wavenumbers ``sign(l) sqrt(|l|) / (2 pi c)`` in cm^-1
  (negative = imaginary).
- Intensity ``I_m = N_A / (12 eps0 c^2) |d mu/dQ_m|^2`` in km/mol (``= N_A pi / (3 c^2)`` in
  Gaussian units), with ``d mu_i/dQ_m = sum_kj Z[k, i, j] e_m,kj / sqrt(m_k)``, the mode
  effective charge of :func:`etgnn.observables.phonons.mode_effective_charges`. Individual
  intensities inside a degenerate set depend on the basis chosen there; their sum does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import constants as sc

from ..errors import DataError
from .phonons import mode_effective_charges

__all__ = ["KM_MOL", "CM1", "NormalModes", "HarmonicIR", "rigid_motions", "normal_modes",
           "ir_intensities", "harmonic_ir", "degenerate_sets"]

#: km/mol per (e/sqrt(amu))^2: N_A e^2 / (12 eps0 c^2 amu), in km/mol (974.86)
KM_MOL = sc.N_A * sc.e**2 / (12 * sc.epsilon_0 * sc.c**2 * sc.atomic_mass) / 1e3
#: cm^-1 per sqrt(eV / (Angstrom^2 amu)) (521.47)
CM1 = np.sqrt(sc.e / (1e-20 * sc.atomic_mass)) / (2 * np.pi * sc.c * 100)


@dataclass(frozen=True)
class NormalModes:
    """Harmonic vibrations of a molecule.

    Attributes:
        frequencies_cm1: (n_vib,) ascending wavenumbers, cm^-1 (negative: imaginary).
        eigenvectors: (3 n_atoms, n_vib) orthonormal mass-weighted eigenvectors as columns,
            row ``3 k + a`` = atom ``k``, direction ``a``.
        masses: (n_atoms,) amu.
    """

    frequencies_cm1: np.ndarray
    eigenvectors: np.ndarray
    masses: np.ndarray

    @property
    def displacements(self) -> np.ndarray:
        """(n_vib, n_atoms, 3) Cartesian displacement per unit normal coordinate, amu^-1/2."""
        n = len(self.masses)
        return (self.eigenvectors.T.reshape(-1, n, 3) / np.sqrt(self.masses)[None, :, None])


@dataclass(frozen=True)
class HarmonicIR:
    """Normal modes and their IR intensities (km/mol), in the order of ``modes``."""

    modes: NormalModes
    intensities_km_mol: np.ndarray

    @property
    def frequencies_cm1(self) -> np.ndarray:
        return self.modes.frequencies_cm1


def _check_shape(name: str, array, shape: tuple) -> np.ndarray:
    array = np.asarray(array, dtype=float)
    if array.shape != shape:
        raise DataError(f"{name} has shape {array.shape}, expected {shape}")
    return array


def rigid_motions(positions, masses, tol: float = 1e-6) -> np.ndarray:
    """Orthonormal basis of the mass-weighted translations and rotations.

    Args:
        positions: (n_atoms, 3) Angstrom.
        masses: (n_atoms,) amu.
        tol: singular values below ``tol`` times the largest are dropped (the third rotation of
            a linear molecule, all rotations of an atom).

    Returns:
        (3 n_atoms, n_rigid) orthonormal columns, ``n_rigid`` = 6, 5 (linear) or 3 (one atom).
    """
    pos = np.asarray(positions, dtype=float)
    masses = np.asarray(masses, dtype=float)
    r = pos - masses @ pos / masses.sum()
    sqm = np.sqrt(masses)[:, None]
    eye = np.eye(3)
    vectors = [(sqm * eye[a]).reshape(-1) for a in range(3)]
    vectors += [(sqm * np.cross(eye[a], r)).reshape(-1) for a in range(3)]
    u, s, _ = np.linalg.svd(np.array(vectors).T, full_matrices=False)
    return u[:, s > tol * s.max()]


def normal_modes(hessian, positions, masses) -> NormalModes:
    """Vibrations from a Cartesian Hessian, rigid motions removed exactly.

    Args:
        hessian: (3 n_atoms, 3 n_atoms) eV/Angstrom^2 (symmetrised here).
        positions: (n_atoms, 3) Angstrom (defines the rotations).
        masses: (n_atoms,) amu.

    Returns:
        :class:`NormalModes` with ``3n - n_rigid`` vibrations.

    Raises:
        DataError: inconsistent shapes.
    """
    masses = np.asarray(masses, dtype=float)
    n = len(masses)
    pos = _check_shape("positions", positions, (n, 3))
    h = _check_shape("hessian", hessian, (3 * n, 3 * n))
    w = np.repeat(masses**-0.5, 3)
    dyn = w[:, None] * (0.5 * (h + h.T)) * w[None, :]
    rigid = rigid_motions(pos, masses)
    # orthonormal complement of the rigid motions: the last columns of a full QR basis
    q, _ = np.linalg.qr(np.concatenate([rigid, np.eye(3 * n)], axis=1))
    basis = q[:, rigid.shape[1] : 3 * n]
    lam, vec = np.linalg.eigh(basis.T @ dyn @ basis)
    return NormalModes(np.sign(lam) * np.sqrt(np.abs(lam)) * CM1, basis @ vec, masses)


def ir_intensities(apt, modes: NormalModes) -> np.ndarray:
    """Harmonic IR intensities (km/mol) of ``modes`` for the APTs ``apt``.

    Args:
        apt: (n_atoms, 3, 3) ``Z[k, i, j] = d mu_i / dR_kj``, e.
        modes: from :func:`normal_modes`.

    Returns:
        (n_vib,) ``KM_MOL |d mu/dQ_m|^2``.

    Raises:
        DataError: ``apt`` does not match the modes' atoms.
    """
    z = _check_shape("apt", apt, (len(modes.masses), 3, 3))
    p = mode_effective_charges(z, modes.masses, modes.eigenvectors)
    return KM_MOL * np.einsum("ma,ma->m", p, p)


def harmonic_ir(hessian, positions, masses, apt) -> HarmonicIR:
    """:func:`normal_modes` then :func:`ir_intensities` (units as there)."""
    modes = normal_modes(hessian, positions, masses)
    return HarmonicIR(modes, ir_intensities(apt, modes))


def degenerate_sets(frequencies_cm1, tol: float = 0.5) -> list[np.ndarray]:
    """Index sets of ascending wavenumbers closer than ``tol`` cm^-1 to their neighbour in the set."""
    breaks = np.flatnonzero(np.diff(np.asarray(frequencies_cm1)) > tol) + 1
    return np.split(np.arange(len(frequencies_cm1)), breaks)
