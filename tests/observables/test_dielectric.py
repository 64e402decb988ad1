"""eps(omega), reflectivity and IR absorption (etgnn.observables.dielectric) on synthetic oscillators.

Checked: the static limit and the product form of Lyddane-Sachs-Teller, the f-sum rule,
Kramers-Kronig consistency of Re and Im eps (computed by an independent numerical principal-value
integral), the normal-incidence reflectivity of one Lorentz oscillator against the closed form
(n, kappa from |eps| and Re eps; R = 1 in the undamped reststrahlen band), unit areas of the
broadened lines, and, on phonopy's DFT NaCl when the shared data are there, eps(0) = the
eps_0 of etgnn phonons and the zero of eps(omega) = phonopy's LO frequency.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from etgnn.errors import ConfigError, DataError
from etgnn.observables import dielectric as D

#: three oscillators (THz, THz^2, THz), eps_inf 2.5: an isotropic crystal with well separated modes
NU_M = np.array([4.0, 9.0, 15.0])
OMEGA = np.array([30.0, 60.0, 25.0])
GAMMA = np.array([0.3, 0.5, 0.8])
EPS_INF = 2.5


def test_static_limit_and_lst():
    eps0 = D.static_limit(EPS_INF, NU_M, OMEGA)
    assert eps0 == pytest.approx(EPS_INF + np.sum(OMEGA / NU_M**2), rel=1e-14)
    assert D.dielectric_function([0.0], EPS_INF, NU_M, OMEGA, GAMMA)[0] == pytest.approx(eps0, rel=1e-14)
    lo = D.lo_frequencies(EPS_INF, NU_M, OMEGA)
    assert len(lo) == 3
    # LO and TO interlace, eps vanishes at every LO, and prod(LO^2 / TO^2) = eps_0 / eps_inf
    assert (NU_M < lo).all() and (lo[:-1] < NU_M[1:]).all()
    assert np.abs(D.dielectric_function(lo, EPS_INF, NU_M, OMEGA, 0.0)).max() < 1e-9
    assert np.prod(lo**2 / NU_M**2) == pytest.approx(eps0 / EPS_INF, rel=1e-12)
    # one oscillator: nu_LO^2 / nu_TO^2 = eps_0 / eps_inf
    lo1 = D.lo_frequencies(EPS_INF, NU_M[:1], OMEGA[:1])
    assert lo1[0] ** 2 / NU_M[0] ** 2 == pytest.approx(D.static_limit(EPS_INF, NU_M[:1], OMEGA[:1]) / EPS_INF)


def test_tensor_form_matches_scalar_and_static_tensor():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3, 3))
    strengths = np.einsum("ma,mb->mab", p, p) * 10
    eps_inf = np.diag([2.0, 3.0, 4.0])
    nu = np.linspace(0, 20, 7)
    eps = D.dielectric_function(nu, eps_inf, NU_M, strengths, GAMMA)
    assert eps.shape == (7, 3, 3)
    np.testing.assert_allclose(eps[0].real, D.static_limit(eps_inf, NU_M, strengths), rtol=1e-13)
    e = np.array([1.0, 2.0, -1.0]) / np.sqrt(6)
    scalar = D.dielectric_function(nu, e @ eps_inf @ e, NU_M, np.einsum("a,mab,b->m", e, strengths, e), GAMMA)
    np.testing.assert_allclose(D.directional(eps, e), scalar, rtol=1e-13)


def test_f_sum_rule():
    """int_0^inf nu Im eps dnu = (pi/2) sum_m Omega_m for any damping (tail ~ sum Omega g / nu^2 added)."""
    nu = np.linspace(0, 400, 800_001)
    im = D.dielectric_function(nu, EPS_INF, NU_M, OMEGA, GAMMA).imag
    tail = np.sum(OMEGA * GAMMA) / nu[-1]
    assert np.trapezoid(nu * im, nu) + tail == pytest.approx(np.pi / 2 * OMEGA.sum(), rel=2e-4)


def _kk_real(nu_grid, im, nu):
    """Re eps(nu) - eps_inf = (2/pi) P int_0^L x Im(x) / (x^2 - nu^2) dx, singularity subtracted."""
    out = []
    for v, im_at in zip(nu, np.interp(nu, nu_grid, im)):
        f = (nu_grid * im - v * im_at) / (nu_grid**2 - v**2)
        f[np.isclose(nu_grid, v, rtol=0, atol=1e-12)] = 0.0  # removable point, measure zero
        pv = np.log(abs((nu_grid[-1] - v) / (nu_grid[-1] + v))) / 2 * im_at
        pv -= np.log(abs((nu_grid[0] - v) / (nu_grid[0] + v))) / 2 * im_at
        out.append(2 / np.pi * (np.trapezoid(f, nu_grid) + pv))
    return np.array(out)


def test_kramers_kronig_consistency():
    nu_grid = np.linspace(0, 600, 1_200_001) + 1.234e-4  # never exactly on an evaluation point
    im = D.dielectric_function(nu_grid, EPS_INF, NU_M, OMEGA, GAMMA).imag
    nu = np.array([1.0, 3.9, 4.2, 7.0, 9.1, 12.0, 15.3, 25.0])
    re = D.dielectric_function(nu, EPS_INF, NU_M, OMEGA, GAMMA).real - EPS_INF
    kk = _kk_real(nu_grid, im, nu)
    # tail beyond the grid (Im ~ sum Omega g / nu^3) and the grid: ~1e-5 of |Re eps - eps_inf| <= 13
    np.testing.assert_allclose(kk, re, atol=1e-4)


def _closed_form_reflectivity(eps):
    """R from n = sqrt((|eps| + e1)/2), kappa = sqrt((|eps| - e1)/2): ((n-1)^2 + k^2) / ((n+1)^2 + k^2)."""
    e1, mod = eps.real, np.abs(eps)
    n, k = np.sqrt((mod + e1) / 2), np.sqrt((mod - e1) / 2)
    return ((n - 1) ** 2 + k**2) / ((n + 1) ** 2 + k**2)


def test_single_oscillator_reflectivity_closed_form():
    nu_to, omega, eps_inf, g = 5.0, 80.0, 3.0, 0.2
    nu = np.linspace(0.01, 20, 2001)
    eps = D.dielectric_function(nu, eps_inf, [nu_to], [omega], g)
    np.testing.assert_allclose(D.reflectivity(eps), _closed_form_reflectivity(eps), rtol=1e-12)
    # undamped: total reflection in the reststrahlen band nu_TO < nu < nu_LO, nu_LO^2 = nu_TO^2 eps_0 / eps_inf
    eps_0 = eps_inf + omega / nu_to**2
    nu_lo = nu_to * np.sqrt(eps_0 / eps_inf)
    band = nu[(nu > nu_to + 1e-3) & (nu < nu_lo - 1e-3)]
    r = D.reflectivity(D.dielectric_function(band, eps_inf, [nu_to], [omega], 0.0))
    np.testing.assert_allclose(r, 1.0, atol=1e-12)
    # outside it, R of a real eps; static and optical limits
    r0 = D.reflectivity(D.dielectric_function([1e-9], eps_inf, [nu_to], [omega], 0.0))[0]
    assert r0 == pytest.approx(((np.sqrt(eps_0) - 1) / (np.sqrt(eps_0) + 1)) ** 2, rel=1e-9)
    rinf = D.reflectivity(D.dielectric_function([1e6], eps_inf, [nu_to], [omega], 0.0))[0]
    assert rinf == pytest.approx(((np.sqrt(eps_inf) - 1) / (np.sqrt(eps_inf) + 1)) ** 2, rel=1e-6)
    # the reflectivity is zero where eps = 1 (undamped), just above nu_LO
    nu_1 = nu_to * np.sqrt((eps_0 - 1) / (eps_inf - 1))
    assert D.reflectivity(D.dielectric_function([nu_1], eps_inf, [nu_to], [omega], 0.0))[0] < 1e-20
    # tensor input picks the polarisation component
    eps_t = D.dielectric_function(nu, np.diag([eps_inf, 1.0, 1.0]), [nu_to], [np.diag([omega, 0.0, 0.0])], g)
    np.testing.assert_allclose(D.reflectivity(eps_t, [1, 0, 0]), _closed_form_reflectivity(eps), rtol=1e-12)
    np.testing.assert_allclose(D.reflectivity(eps_t, [0, 1, 0]), 0.0, atol=1e-15)
    with pytest.raises(ConfigError):
        D.reflectivity(eps_t)


def test_absorption_and_loss():
    nu = np.linspace(0.5, 30, 3000)
    eps = D.dielectric_function(nu, EPS_INF, NU_M, OMEGA, GAMMA)
    alpha = D.absorption_coefficient(nu, eps)
    assert (alpha >= 0).all() and alpha.max() > 1e3  # cm^-1: strong absorbers
    # the loss function peaks at the LO frequencies, the absorption near the TO ones
    loss = D.loss_function(eps)
    lo = D.lo_frequencies(EPS_INF, NU_M, OMEGA)
    peak = nu[np.argmax(loss)]
    assert np.min(np.abs(lo - peak)) < 0.1
    # broadened lines have unit area
    grid = np.linspace(-200, 250, 900_001)
    for shape in ("lorentzian", "gaussian"):
        spec = D.ir_absorption(grid, [10.0, 20.0], [1.0, 2.0], 0.4, shape)
        tol = 2e-3 if shape == "lorentzian" else 1e-9
        assert np.trapezoid(spec, grid) == pytest.approx(3.0, rel=tol)
    with pytest.raises(ConfigError):
        D.ir_absorption(grid, [1.0], [1.0], 0.3, "voigt")
    with pytest.raises(DataError):
        D.dielectric_function(nu, EPS_INF, [0.0], [1.0])
    with pytest.raises(DataError):
        D.dielectric_function(nu, EPS_INF, NU_M, OMEGA, [0.1, 0.2])


DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "phonopy_born"


@pytest.mark.skipif(not (DATA / "NaCl.FORCE_SETS").is_file(), reason=f"no DFT phonon data in {DATA}")
def test_nacl_dft_static_limit_and_lo():
    """eps(0) from mode_strengths_thz2 = etgnn phonons' eps_0; the zero of eps_xx = phonopy's LO."""
    pytest.importorskip("phonopy")
    from etgnn.observables import phonons as P

    ph = P.load_phonopy(DATA / "NaCl.phonopy_disp.yaml", force_sets=DATA / "NaCl.FORCE_SETS")
    params = P.read_born(DATA / "NaCl.BORN", ph)
    # acoustic sum rule exact (the file's charges miss it by 3e-4 e), as LST needs
    params = P.nac_params(ph, params["born"], params["dielectric"], params["factor"])
    P.set_nac(ph, params)
    modes = P.gamma_modes(ph, (1, 0, 0))
    optical = [i for i, c in enumerate(modes.labels) if c != "acoustic"]
    omega = D.mode_strengths_thz2(modes.strengths[optical], ph.primitive.volume, params["factor"])
    eps0 = D.static_limit(params["dielectric"], modes.frequencies[optical], omega)
    np.testing.assert_allclose(eps0, modes.epsilon_static, rtol=1e-9, atol=1e-12)
    lo = D.lo_frequencies(params["dielectric"][0, 0], modes.frequencies[optical], omega[:, 0, 0])
    nac_lo = [f for f, c in zip(modes.nac_frequencies, modes.nac_labels) if c == "LO"]
    assert max(lo) == pytest.approx(nac_lo[0], rel=1e-9)
