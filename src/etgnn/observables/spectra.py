"""IR and Raman spectra from time series of predicted tensors (pure numpy; no I/O).

Conventions (see docs/spectra.md for the derivations):

* Time in fs (``timestep`` of the series), frequencies in THz (``Spectrum.freq_thz``) and cm^-1
  (``Spectrum.freq_cm1`` = 33.35641 x THz).
* ``autocorrelation(x)[m] = < x(t) . x(t + m dt) >`` (dot product over the components).
* ``power_spectrum`` is the one-sided spectral density per THz of the windowed correlation,
  ``G(f) = 2 int C(tau) w(tau) exp(-2 pi i f tau) dtau``, normalised so that the trapezoid integral
  of ``G`` over ``[0, f_Nyquist]`` (THz) equals ``C(0)`` exactly: a signal ``A cos(2 pi f0 t)``
  gives a peak at ``f0`` of area ``A^2 / 2``.
* IR: polarization current ``J = V dP/dt = sum_k Z*_k v_k`` (e Angstrom/fs), absorption
  ``alpha(w) n(w) = Q(w) (1 - exp(-b h w)) / (b h w) * b S_J(w) / (6 c V eps0)`` with
  ``S_J(w) = int <J(0).J(t)> exp(-i w t) dt`` and the quantum correction ``Q``; the harmonic
  ``Q = b h w / (1 - exp(-b h w))`` gives the classical formula ``b S_J / (6 c V eps0)``, exact for
  harmonic systems.
* Raman: ``a = tr(alpha)/3`` (isotropic), ``beta = alpha - a 1`` (anisotropic, traceless);
  polarized ``I_VV = S_a + (2/15) S_tr(beta beta)``, depolarized ``I_VH = (1/10) S_tr(beta beta)``
  (``gamma^2 = 3/2 tr(beta beta)``: ``I_VV = a^2 + 4 gamma^2/45``, ``I_VH = gamma^2/15``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase.units import _c, _e, _eps0, _hbar, _k, _Nav

from ..errors import ConfigError, DataError

__all__ = ["WINDOWS", "BROADENINGS", "QUANTUM_CORRECTIONS", "NORMALIZATIONS", "Spectrum",
           "autocorrelation", "lag_window", "broadening_damping", "power_spectrum",
           "polarization_current", "dipole_current", "quantum_correction", "bose_factor",
           "ir_spectrum", "raman_spectrum", "THZ_TO_CM1"]

WINDOWS = ("hann", "blackman", "none")
BROADENINGS = ("gaussian", "lorentzian")
QUANTUM_CORRECTIONS = ("harmonic", "standard", "schofield", "none")
NORMALIZATIONS = ("unbiased", "biased")

#: 1 THz in cm^-1 (1e12 / (100 c))
THZ_TO_CM1 = 1e12 / (100.0 * _c)
#: h (J s) x 1 THz / k_B (J/K): hbar w / (k_B T) = HBAR_OVER_KB_THZ * f_THz / T
_H_THZ_OVER_KB = 2.0 * np.pi * _hbar * 1e12 / _k


def _choice(value: str, choices: tuple, what: str) -> str:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return value


@dataclass
class Spectrum:
    """Spectra on a common frequency grid.

    Attributes:
        freq_thz: (n_freq,) frequencies in THz, 0 to the Nyquist frequency.
        columns: ``{name: (n_freq,) array}``.
        units: ``{name: unit string}``.
        meta: anything worth writing next to the numbers (temperature, volume, options).
    """

    freq_thz: np.ndarray
    columns: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def freq_cm1(self) -> np.ndarray:
        """(n_freq,) frequencies in cm^-1."""
        return self.freq_thz * THZ_TO_CM1

    def to_csv(self, path) -> None:
        """Write ``freq_cm1, freq_THz, <columns>`` with a ``#`` header of units and metadata."""
        names = list(self.columns)
        header = [f"{k}: {v}" for k, v in self.meta.items()]
        header += [f"{n} [{self.units.get(n, '')}]" for n in names]
        header.append(",".join(["freq_cm1", "freq_THz", *names]))
        data = np.column_stack([self.freq_cm1, self.freq_thz, *[self.columns[n] for n in names]])
        np.savetxt(path, data, delimiter=",", header="\n".join(header), fmt="%.10g")


# ----------------------------------------------------------------------------- correlation
def autocorrelation(x, normalization: str = "unbiased", max_lag: int | None = None,
                    subtract_mean: bool = False) -> np.ndarray:
    """Autocorrelation ``C[m] = < x(t) . x(t + m) >`` by zero-padded FFT.

    Args:
        x: (n_frames,) or (n_frames, ...) series; trailing axes are summed as a dot product.
        normalization: ``"unbiased"`` divides lag ``m`` by ``n_frames - m`` (the number of pairs),
            ``"biased"`` by ``n_frames`` (a triangular taper; the spectrum is then non-negative).
        max_lag: last lag kept (frames); default ``n_frames - 1``.
        subtract_mean: remove the time average first (drops the zero-frequency delta).

    Returns:
        (max_lag + 1,) array in the units of ``x`` squared; ``C[0] = mean over t of |x(t)|^2``.

    >>> autocorrelation(np.array([1.0, -1.0, 1.0, -1.0]))
    array([ 1., -1.,  1., -1.])
    """
    _choice(normalization, NORMALIZATIONS, "normalization")
    x = np.asarray(x, dtype=float)
    if x.ndim == 0 or x.shape[0] < 2:
        raise DataError(f"autocorrelation needs a series of at least 2 frames, got shape {x.shape}")
    n = x.shape[0]
    x = x.reshape(n, -1)
    if subtract_mean:
        x = x - x.mean(axis=0)
    max_lag = n - 1 if max_lag is None else int(max_lag)
    if not 0 <= max_lag < n:
        raise ConfigError(f"max_lag must be in [0, {n - 1}] frames, got {max_lag}")
    spec = np.fft.rfft(x, n=2 * n, axis=0)
    corr = np.fft.irfft((spec * spec.conj()).real.sum(axis=1), n=2 * n)[: max_lag + 1]
    norm = (n - np.arange(max_lag + 1)) if normalization == "unbiased" else n
    return corr / norm


def lag_window(name: str, n_lags: int) -> np.ndarray:
    """Half window over lags 0..n_lags-1, 1 at lag 0 and (for hann/blackman) 0 at the last lag.

    ``hann``: ``cos^2(pi m / (2 (n - 1)))``; ``blackman``: ``0.42 + 0.5 cos(pi m/(n-1)) +
    0.08 cos(2 pi m/(n-1))``; ``none``: 1.

    Returns:
        (n_lags,) float array.
    """
    _choice(name, WINDOWS, "window")
    if name == "none" or n_lags < 2:
        return np.ones(n_lags)
    s = np.pi * np.arange(n_lags) / (n_lags - 1)
    if name == "hann":
        return np.cos(s / 2) ** 2
    return 0.42 + 0.5 * np.cos(s) + 0.08 * np.cos(2 * s)


def broadening_damping(lags_fs, fwhm_cm1: float, shape: str = "gaussian") -> np.ndarray:
    """Time-domain factor whose product with C(tau) convolves the spectrum with a unit-area line.

    A Gaussian of full width at half maximum ``Gamma`` (in frequency) is ``exp(-(pi Gamma tau)^2
    / (4 ln 2))`` in time, a Lorentzian ``exp(-pi Gamma |tau|)``; both are 1 at ``tau = 0``, so
    areas are preserved.

    Args:
        lags_fs: (n_lags,) lag times in fs.
        fwhm_cm1: full width at half maximum in cm^-1 (> 0).
        shape: ``"gaussian"`` or ``"lorentzian"``.
    """
    _choice(shape, BROADENINGS, "broadening shape")
    if not fwhm_cm1 > 0:
        raise ConfigError(f"broadening FWHM must be > 0 cm^-1, got {fwhm_cm1}")
    gamma = fwhm_cm1 / THZ_TO_CM1 * 1e-3  # 1/fs
    tau = np.abs(np.asarray(lags_fs, dtype=float))
    if shape == "gaussian":
        return np.exp(-((np.pi * gamma * tau) ** 2) / (4 * np.log(2)))
    return np.exp(-np.pi * gamma * tau)


def power_spectrum(corr, timestep: float, window: str = "hann", broadening: float | None = None,
                   shape: str = "gaussian", pad: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One-sided spectral density of a correlation function, per THz.

    ``G(f) = 2 dt [c_0 + 2 sum_{m>0} c_m cos(2 pi f m dt)]`` with ``c = C w d`` (window ``w``,
    broadening ``d``), evaluated on ``f_k = k / (L dt)``, ``L = pad * 2 * n_lags``.

    Args:
        corr: (n_lags,) correlation ``C[m]`` at lags ``m * timestep``.
        timestep: time between frames, fs.
        window, broadening, shape: see :func:`lag_window`, :func:`broadening_damping` (cm^-1).
        pad: extra zero padding of the frequency grid (interpolation only; >= 1).

    Returns:
        ``(freq_thz, G)``: (L/2 + 1,) frequencies in THz and ``G`` in units of ``corr`` per THz,
        with ``trapezoid(G, freq_thz) == C[0]`` (up to round-off).
    """
    if not timestep > 0:
        raise ConfigError(f"timestep must be > 0 fs, got {timestep}")
    c = np.asarray(corr, dtype=float) * lag_window(window, len(corr))
    if broadening:
        c = c * broadening_damping(np.arange(len(c)) * timestep, broadening, shape)
    n_fft = 2 * len(c) * max(int(pad), 1)
    even = np.zeros(n_fft)
    even[: len(c)] = c
    even[n_fft - len(c) + 1:] = c[1:][::-1]
    dt_ps = timestep * 1e-3
    density = 2.0 * dt_ps * np.fft.rfft(even).real
    return np.fft.rfftfreq(n_fft, d=dt_ps), density


# ----------------------------------------------------------------------------- IR
def polarization_current(born, velocities) -> np.ndarray:
    """``J_i = sum_k sum_j Z[k, i, j] v[k, j]`` (= V dP_i/dt, = d mu_i/dt for a molecule).

    Args:
        born: (..., n_atoms, 3, 3) Born charges / APTs in e, ``Z[k, i, j] = dP_i/du_{k,j}``
            (docs/conventions.md).
        velocities: (..., n_atoms, 3) in Angstrom/fs.

    Returns:
        (..., 3) current in e Angstrom/fs.
    """
    born, velocities = np.asarray(born, dtype=float), np.asarray(velocities, dtype=float)
    if born.shape[-3:] != velocities.shape[-2:] + (3,) or velocities.shape[-1] != 3:
        raise DataError(f"Born charges of shape {born.shape} do not match velocities of shape "
                        f"{velocities.shape}: expected (n_atoms, 3, 3) and (n_atoms, 3)")
    return np.einsum("...kij,...kj->...i", born, velocities)


def dipole_current(dipoles, timestep: float) -> np.ndarray:
    """``d mu/dt`` by central differences (one-sided at the ends).

    The central difference multiplies the spectrum by ``(sin(w dt) / (w dt))^2`` relative to the
    exact derivative: 1.18 % lower at 1000 cm^-1 for dt = 1 fs (``w dt = 0.188``), 19 % at 4200 cm^-1;
    use a short timestep.

    Args:
        dipoles: (n_frames, 3) dipoles in e Angstrom.
        timestep: fs.

    Returns:
        (n_frames, 3) in e Angstrom/fs.
    """
    dipoles = np.asarray(dipoles, dtype=float)
    if dipoles.ndim != 2 or dipoles.shape[0] < 3:
        raise DataError(f"the dipole route needs >= 3 frames of (3,) dipoles, got shape {dipoles.shape}")
    return np.gradient(dipoles, timestep, axis=0)


def _x(freq_thz, temperature):
    return _H_THZ_OVER_KB * np.asarray(freq_thz, dtype=float) / temperature


def quantum_correction(freq_thz, temperature: float, kind: str = "harmonic") -> np.ndarray:
    """Factor ``Q(w)`` turning a classical correlation spectrum into the quantum one.

    With ``x = hbar w / (k_B T)``: harmonic ``x / (1 - e^-x)``, standard ``2 / (1 + e^-x)``,
    schofield ``e^(x/2)``, none ``1``; all -> 1 as ``x -> 0``.

    Args:
        freq_thz: (n_freq,) THz.  temperature: K (> 0).
    """
    _choice(kind, QUANTUM_CORRECTIONS, "quantum correction")
    _check_temperature(temperature)
    x = _x(freq_thz, temperature)
    if kind == "harmonic":
        return np.where(x > 1e-12, x / -np.expm1(-np.maximum(x, 1e-300)), 1.0)
    if kind == "standard":
        return 2.0 / (1.0 + np.exp(-x))
    if kind == "schofield":
        return np.exp(x / 2)
    return np.ones_like(x)


def bose_factor(freq_thz, temperature: float) -> np.ndarray:
    """``n(w) + 1 = 1 / (1 - exp(-hbar w / k_B T))`` (Stokes side); inf at w = 0."""
    _check_temperature(temperature)
    with np.errstate(divide="ignore"):
        return 1.0 / -np.expm1(-_x(freq_thz, temperature))


def _check_temperature(temperature):
    if temperature is None or not temperature > 0:
        raise ConfigError(f"temperature must be > 0 K, got {temperature}")


def ir_spectrum(current, timestep: float, temperature: float, volume: float | None = None,
                quantum: str = "harmonic", window: str = "hann", broadening: float | None = None,
                shape: str = "gaussian", max_lag: int | None = None,
                normalization: str = "unbiased") -> Spectrum:
    """IR absorption from the polarization current.

    ``alpha(w) n(w) = F(x) b S_J(w) / (6 c V eps0)``, ``x = b hbar w``, ``F = Q(w) (1 - e^-x)/x``
    (``F = 1`` for the harmonic correction), ``S_J(w) = int <J(0).J(t)> e^{-iwt} dt`` (two-sided).

    Args:
        current: (n_frames, 3) ``J = sum_k Z_k v_k`` in e Angstrom/fs (its mean is removed).
        timestep: fs.  temperature: K of the trajectory (the ``b = 1/k_B T`` of the prefactor).
        volume: cell volume in Angstrom^3; ``None`` for a molecule.
        quantum, window, broadening (cm^-1 FWHM), shape, max_lag (frames), normalization: options of
            :func:`quantum_correction`, :func:`power_spectrum` and :func:`autocorrelation`.

    Returns:
        :class:`Spectrum` with column ``absorption``: ``alpha n`` in cm^-1 for a crystal, or for a
        molecule (``volume=None``) the molar cross section ``N_A sigma`` in (km/mol)/cm^-1, whose
        integral over wavenumber (cm^-1) is the band intensity in km/mol; and ``current_psd``, the
        one-sided spectral density of ``J`` in (e Angstrom/fs)^2/THz.
    """
    _check_temperature(temperature)
    if volume is not None and not volume > 0:
        raise DataError(f"cell volume must be > 0 Angstrom^3, got {volume}")
    corr = autocorrelation(current, normalization, max_lag, subtract_mean=True)
    freq, psd = power_spectrum(corr, timestep, window, broadening, shape)
    x = _x(freq, temperature)
    boltz = np.where(x > 1e-12, -np.expm1(-np.maximum(x, 1e-300)) / np.maximum(x, 1e-300), 1.0)
    factor = quantum_correction(freq, temperature, quantum) * boltz
    # S_J(w) two-sided, SI: (e A/fs)^2 ps per THz -> (C m/s)^2 s; G = 2 S.
    s_si = psd / 2 * 1e-12 * (_e * 1e-10 / 1e-15) ** 2
    beta = 1.0 / (_k * temperature)
    per_volume = factor * beta * s_si / (6.0 * _c * _eps0)  # alpha n * V, m^2
    meta = {"temperature_K": temperature, "timestep_fs": timestep, "quantum_correction": quantum,
            "window": window, "broadening_cm1": broadening or 0, "frames": len(current)}
    if volume is None:
        absorption, unit = per_volume * _Nav * 0.1, "(km/mol)/cm^-1, molar cross section N_A sigma"
    else:
        absorption, unit = per_volume / (volume * 1e-30) / 100.0, "cm^-1, alpha n"
        meta["volume_A3"] = volume
    return Spectrum(freq, {"absorption": absorption, "current_psd": psd},
                    {"absorption": unit, "current_psd": "(e Angstrom/fs)^2/THz"}, meta)


# ----------------------------------------------------------------------------- Raman
def raman_spectrum(polarizability, timestep: float, temperature: float | None = None,
                   quantum: str = "harmonic", window: str = "hann", broadening: float | None = None,
                   shape: str = "gaussian", max_lag: int | None = None,
                   normalization: str = "unbiased") -> Spectrum:
    """Isotropic, anisotropic, polarized and depolarized Raman spectra.

    The spectra are the one-sided densities of the fluctuations (mean removed) of ``a = tr/3``
    and of the traceless ``beta`` of the symmetrised polarizability; with a ``temperature`` each
    is multiplied by ``Q(w)`` (harmonic: ``hbar w b (n(w) + 1)``, the Stokes line shape whose
    integral over a band is proportional to ``(n + 1) |d alpha/dQ|^2 / w``). The laser factor
    ``(w_L - w)^4`` is not applied.

    Args:
        polarizability: (n_frames, 3, 3) in units U (Angstrom^3, or eps for a crystal).
        timestep: fs; other options as in :func:`ir_spectrum`.

    Returns:
        :class:`Spectrum` with ``isotropic`` (S_a), ``anisotropic`` (S_tr(beta beta)),
        ``polarized`` and ``depolarized``, in U^2/THz.
    """
    alpha = np.asarray(polarizability, dtype=float)
    if alpha.ndim != 3 or alpha.shape[1:] != (3, 3):
        raise DataError(f"polarizability series must have shape (n_frames, 3, 3), got {alpha.shape}")
    alpha = 0.5 * (alpha + alpha.transpose(0, 2, 1))
    iso = np.trace(alpha, axis1=1, axis2=2) / 3.0
    aniso = alpha - iso[:, None, None] * np.eye(3)
    cols = {}
    for name, series in (("isotropic", iso), ("anisotropic", aniso)):
        corr = autocorrelation(series, normalization, max_lag, subtract_mean=True)
        freq, cols[name] = power_spectrum(corr, timestep, window, broadening, shape)
    cols["polarized"] = cols["isotropic"] + 2.0 / 15.0 * cols["anisotropic"]
    cols["depolarized"] = cols["anisotropic"] / 10.0
    meta = {"timestep_fs": timestep, "window": window, "broadening_cm1": broadening or 0,
            "frames": len(alpha)}
    if temperature is not None:
        q = quantum_correction(freq, temperature, quantum)
        cols = {k: v * q for k, v in cols.items()}
        meta.update(temperature_K=temperature, quantum_correction=quantum)
    return Spectrum(freq, cols, {k: "polarizability units^2/THz" for k in cols}, meta)
