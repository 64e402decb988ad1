"""Infrared dielectric function of a crystal from its Gamma modes: eps(omega), reflectivity, absorption.

Pure numpy functions (no phonopy, no I/O).  The model is the sum of damped Lorentz oscillators

    eps_ab(nu) = eps_inf,ab + sum_m Omega_m,ab / (nu_m^2 - nu^2 - i gamma_m nu)

with every frequency an ordinary frequency in THz (``nu = omega / 2 pi``; cm^-1 = THz x 33.35641):
``nu_m`` the TO frequency of mode ``m`` (no non-analytical correction), ``gamma_m`` its damping
(the full width at half maximum of the peak of ``Im eps`` when ``gamma_m << nu_m``) and
``Omega_m`` its strength tensor in THz^2.  In SI units, once:

    eps(omega) = eps_inf + 1 / (eps_0 V) sum_m p_m p_m^T / (omega_m^2 - omega^2 - i Gamma_m omega),

``p_m = sum_k Z_k e_m,k / sqrt(M_k)`` (C / sqrt(kg)) the mode effective charge of the unit-norm
eigenvector ``e_m`` of the dynamical matrix, ``V`` the primitive-cell volume, ``omega`` in rad/s.
With ``S_m = p_m p_m^T`` in e^2/amu (:func:`etgnn.observables.phonons.oscillator_strengths`), the
volume in Angstrom^3 and phonopy's frequency factor ``f = 15.633302`` THz / sqrt(eV/(Angstrom^2 amu))
this is ``Omega_m = 4 pi F S_m f^2 / V`` with ``F = e^2 / (4 pi eps_0) = 14.399645`` eV Angstrom
(:func:`mode_strengths_thz2`), so that ``eps(0)`` is exactly the ``eps_0`` of
:func:`etgnn.observables.phonons.static_dielectric`.

Properties used by the tests: ``eps(0) = eps_inf + sum_m Omega_m / nu_m^2`` (static limit; with one
oscillator per direction the zero of ``eps`` is the LO frequency, ``nu_LO^2 / nu_TO^2 = eps_0 / eps_inf``,
Lyddane-Sachs-Teller, and with several, the product form of LST), the f-sum rule
``int_0^inf nu Im eps(nu) dnu = (pi / 2) sum_m Omega_m`` for any damping, and Kramers-Kronig
consistency of the real and imaginary parts.

Observables:

- :func:`reflectivity`: normal incidence from vacuum, light polarised along a unit vector ``e``
  (the electric field), ``R = |(n - 1) / (n + 1)|^2`` with ``n = sqrt(e . eps . e)``; exact when
  ``e`` is a principal axis of ``eps`` at every frequency (any axis of a cubic crystal, the optic
  axis or a direction normal to it in a uniaxial one, the axes of an orthorhombic one).
- :func:`absorption_coefficient`: ``alpha(nu) = 4 pi nu kappa / c`` in cm^-1, ``kappa = Im n``.
- :func:`loss_function`: ``-Im 1/eps``, peaked at the LO frequencies.
- :func:`ir_absorption`: a broadened stick spectrum ``sum_m I_m L(nu - nu_m)``, each line shape of
  unit area (Lorentzian or Gaussian of a given FWHM), for comparison with a measured (powder) spectrum.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["THZ_TO_CM1", "NAC_FACTOR", "PHONOPY_THZ", "DEFAULT_GAMMA_THZ", "mode_strengths_thz2",
           "dielectric_function", "static_limit", "directional", "refractive_index", "reflectivity",
           "absorption_coefficient", "loss_function", "ir_absorption", "lo_frequencies", "mode_oscillators", "spectra"]

#: cm^-1 per THz (1e12 / c in cm/s)
THZ_TO_CM1 = 33.35640951981521
#: e^2 / (4 pi eps_0) in eV Angstrom (phonopy's NAC factor for eV/Angstrom force units)
NAC_FACTOR = 14.399645478425668
#: THz per sqrt(eV / (Angstrom^2 amu)) (phonopy's ``defaults.Physical_units.DefaultToTHz``)
PHONOPY_THZ = 15.633302300230191
#: Default damping, THz (0.1 THz = 3.3 cm^-1): narrow lines, a typical room-temperature width
DEFAULT_GAMMA_THZ = 0.1
#: speed of light, cm per ps (nu in THz = 1/ps)
_C_CM_PER_PS = 2.99792458e-2


def mode_strengths_thz2(strengths, volume: float, factor: float = NAC_FACTOR) -> np.ndarray:
    """``Omega_m = 4 pi F f^2 S_m / V`` (THz^2) from oscillator strengths ``S_m`` (e^2/amu).

    Args:
        strengths: (n_modes, 3, 3) ``S_m = p_m p_m^T``, e^2/amu.
        volume: primitive-cell volume, Angstrom^3.
        factor: ``F`` in eV Angstrom / e^2 (the NAC factor; default e^2/(4 pi eps_0)).
    """
    if not volume > 0:
        raise DataError(f"cell volume must be positive, got {volume}")
    return 4.0 * np.pi * factor * PHONOPY_THZ**2 / volume * np.asarray(strengths, dtype=float)


def _per_mode(gamma, n: int) -> np.ndarray:
    g = np.broadcast_to(np.asarray(gamma, dtype=float), (n,)) if np.ndim(gamma) == 0 else np.asarray(gamma, float)
    if g.shape != (n,):
        raise DataError(f"damping: one number or one per mode ({n}), got shape {np.shape(gamma)}")
    if (g < 0).any() or not np.isfinite(g).all():
        raise DataError("damping must be finite and >= 0")
    return g


def dielectric_function(freq_thz, eps_inf, mode_freqs_thz, strengths_thz2, gamma_thz=DEFAULT_GAMMA_THZ) -> np.ndarray:
    """``eps(nu) = eps_inf + sum_m Omega_m / (nu_m^2 - nu^2 - i gamma_m nu)``, complex tensors.

    Args:
        freq_thz: (n_freq,) frequencies ``nu`` (THz) at which to evaluate.
        eps_inf: (3, 3) electronic dielectric tensor (or a scalar).
        mode_freqs_thz: (n_modes,) TO frequencies ``nu_m`` (THz, > 0; give the optical modes only).
        strengths_thz2: (n_modes, 3, 3) ``Omega_m`` in THz^2 (:func:`mode_strengths_thz2`), or
            (n_modes,) scalars for an isotropic model.
        gamma_thz: damping, one number for every mode or (n_modes,) per mode, THz.

    Returns:
        (n_freq, 3, 3) complex, or (n_freq,) for scalar ``eps_inf`` and strengths.
    """
    nu = np.asarray(freq_thz, dtype=float).reshape(-1)
    nu_m = np.asarray(mode_freqs_thz, dtype=float).reshape(-1)
    omega = np.asarray(strengths_thz2, dtype=float)
    if len(omega) != len(nu_m):
        raise DataError(f"{len(nu_m)} mode frequencies but {len(omega)} strengths")
    if (nu_m <= 0).any():
        raise DataError("mode frequencies must be > 0 (leave out the acoustic and the imaginary modes): "
                        f"got {nu_m[nu_m <= 0]}")
    g = _per_mode(gamma_thz, len(nu_m))
    denom = nu_m[None, :] ** 2 - nu[:, None] ** 2 - 1j * g[None, :] * nu[:, None]  # (n_freq, n_modes)
    eps_inf = np.asarray(eps_inf, dtype=float)
    if omega.ndim == 1:
        return eps_inf + (omega[None, :] / denom).sum(axis=1)
    return eps_inf[None] + np.einsum("fm,mab->fab", 1.0 / denom, omega)


def static_limit(eps_inf, mode_freqs_thz, strengths_thz2) -> np.ndarray:
    """``eps(0) = eps_inf + sum_m Omega_m / nu_m^2`` (real)."""
    nu_m = np.asarray(mode_freqs_thz, dtype=float)
    omega = np.asarray(strengths_thz2, dtype=float)
    return np.asarray(eps_inf, dtype=float) + np.tensordot(1.0 / nu_m**2, omega, axes=1)


def directional(eps, direction) -> np.ndarray:
    """``e . eps . e`` for the unit vector along ``direction``: (n_freq, 3, 3) -> (n_freq,)."""
    e = np.asarray(direction, dtype=float).reshape(-1)
    if e.shape != (3,) or not np.isfinite(e).all() or np.linalg.norm(e) == 0:
        raise ConfigError(f"direction must be 3 finite numbers, not all zero; got {direction!r}")
    e = e / np.linalg.norm(e)
    eps = np.asarray(eps)
    return eps if eps.ndim == 1 else np.einsum("a,fab,b->f", e, eps, e)


def refractive_index(eps_scalar) -> np.ndarray:
    """Complex ``n + i kappa = sqrt(eps)`` on the branch with ``kappa >= 0`` (and ``n >= 0``)."""
    n = np.sqrt(np.asarray(eps_scalar, dtype=complex))  # principal branch: Re >= 0
    return np.where(n.imag < 0, -n, n)


def reflectivity(eps, direction=None) -> np.ndarray:
    """Normal-incidence reflectivity from vacuum, ``R = |(n - 1) / (n + 1)|^2``.

    Args:
        eps: (n_freq, 3, 3) complex tensors, or (n_freq,) scalars.
        direction: electric-field (polarisation) direction for tensors; see the module notes.
    """
    eps = np.asarray(eps)
    if eps.ndim == 3:
        if direction is None:
            raise ConfigError("reflectivity of a tensor eps needs a polarisation direction")
        eps = directional(eps, direction)
    n = refractive_index(eps)
    return np.abs((n - 1) / (n + 1)) ** 2


def absorption_coefficient(freq_thz, eps_scalar) -> np.ndarray:
    """``alpha = 4 pi nu kappa / c`` in cm^-1 (intensity decays as ``exp(-alpha x)``)."""
    nu = np.asarray(freq_thz, dtype=float)
    return 4 * np.pi * nu * refractive_index(eps_scalar).imag / _C_CM_PER_PS


def loss_function(eps_scalar) -> np.ndarray:
    """``-Im(1 / eps)``: peaks at the LO frequencies."""
    return -np.imag(1.0 / np.asarray(eps_scalar, dtype=complex))


def lo_frequencies(eps_inf: float, mode_freqs_thz, strengths_thz2) -> np.ndarray:
    """Zeros of the undamped scalar ``eps(nu)`` (the LO frequencies along a principal direction), THz.

    ``eps(nu^2) (prod_m (nu_m^2 - nu^2))`` is a polynomial in ``x = nu^2``; its roots are the
    squared LO frequencies (one per TO mode with a non-zero strength).
    """
    nu_m = np.asarray(mode_freqs_thz, dtype=float)
    omega = np.asarray(strengths_thz2, dtype=float)
    poly = np.poly1d([float(eps_inf)])
    for m in range(len(nu_m)):
        poly = poly * np.poly1d([-1.0, nu_m[m] ** 2])
    for m in range(len(nu_m)):
        other = np.poly1d([omega[m]])
        for k in range(len(nu_m)):
            if k != m:
                other = other * np.poly1d([-1.0, nu_m[k] ** 2])
        poly = poly + other
    roots = np.roots(poly.coeffs)
    return np.sort(np.sqrt(np.abs(roots.real)))


_SHAPES = ("lorentzian", "gaussian")


def ir_absorption(freq_thz, mode_freqs_thz, intensities, fwhm_thz: float = 0.3, shape: str = "lorentzian") -> np.ndarray:
    """Broadened stick spectrum ``sum_m I_m L(nu - nu_m)`` (each ``L`` of unit area, FWHM ``fwhm_thz``).

    Args:
        freq_thz: (n_freq,) THz.
        mode_freqs_thz: (n_modes,) THz.
        intensities: (n_modes,) any unit (e.g. ``tr S_m`` in e^2/amu); the result is per THz.
        fwhm_thz: full width at half maximum, THz (default 0.3 THz = 10 cm^-1).
        shape: ``"lorentzian"`` or ``"gaussian"``.
    """
    if shape not in _SHAPES:
        raise ConfigError(f"line shape {shape!r}: expected one of {', '.join(_SHAPES)}")
    if not fwhm_thz > 0:
        raise ConfigError(f"line width must be > 0, got {fwhm_thz}")
    x = np.asarray(freq_thz, dtype=float)[:, None] - np.asarray(mode_freqs_thz, dtype=float)[None, :]
    if shape == "lorentzian":
        hw = 0.5 * fwhm_thz
        lines = hw / np.pi / (x**2 + hw**2)
    else:
        sigma = fwhm_thz / (2 * np.sqrt(2 * np.log(2)))
        lines = np.exp(-0.5 * (x / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return lines @ np.asarray(intensities, dtype=float)


def mode_oscillators(modes, volume: float, factor: float = NAC_FACTOR, warn=None):
    """TO frequencies (THz), ``Omega_m`` (THz^2) and IR intensities ``tr S_m`` (e^2/amu) of the
    optical modes of :class:`~etgnn.observables.phonons.GammaModes` (no NAC), for :func:`spectra`.

    Acoustic modes are left out; so are optical modes with an imaginary frequency (reported to
    ``warn``, a callable taking a message, when given) and IR-inactive ones (zero strength).
    """
    freqs = np.asarray(modes.frequencies, dtype=float)
    labels = modes.labels
    keep = [m for m, label in enumerate(labels) if label == "IR"]
    imaginary = [m for m in keep if freqs[m] <= 0]
    if imaginary and warn is not None:
        warn(f"left out of eps(omega): {len(imaginary)} IR-active mode(s) with imaginary frequency "
             f"({', '.join(f'{freqs[m]:.3f}' for m in imaginary)} THz): the structure is not at a minimum "
             "of the force field (relax it, or check the supercell)")
    keep = [m for m in keep if freqs[m] > 0]
    strengths = np.asarray(modes.strengths)[keep]
    return freqs[keep], mode_strengths_thz2(strengths, volume, factor), np.einsum("maa->m", strengths)


def spectra(freq_thz, eps_inf, mode_freqs_thz, strengths_thz2, intensities, directions,
            gamma_thz=DEFAULT_GAMMA_THZ, fwhm_thz: float = 0.3, shape: str = "lorentzian") -> dict:
    """Everything :func:`dielectric_function` gives on a grid, per polarisation direction.

    Returns:
        ``{"freq_THz", "freq_cm-1", "ir_absorption"}`` (n_freq,) arrays and, for each direction
        label ``d`` (``directions`` maps labels to 3-vectors), ``eps_re_d``, ``eps_im_d``,
        ``reflectivity_d``, ``alpha_cm-1_d`` (absorption coefficient) and ``loss_d``.
    """
    nu = np.asarray(freq_thz, dtype=float)
    eps = dielectric_function(nu, eps_inf, mode_freqs_thz, strengths_thz2, gamma_thz)
    out = {"freq_THz": nu, "freq_cm-1": nu * THZ_TO_CM1,
           "ir_absorption": ir_absorption(nu, mode_freqs_thz, intensities, fwhm_thz, shape)}
    for label, direction in directions.items():
        e = directional(eps, direction)
        out.update({f"eps_re_{label}": e.real, f"eps_im_{label}": e.imag, f"reflectivity_{label}": reflectivity(e),
                    f"alpha_cm-1_{label}": absorption_coefficient(nu, e), f"loss_{label}": loss_function(e)})
    return out
