"""Exact relations of the harmonic IR intensities of molecules (etgnn.observables.ir)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import constants as sc
from scipy.spatial.transform import Rotation

from etgnn.errors import DataError
from etgnn.observables.ir import KM_MOL, harmonic_ir, ir_intensities, normal_modes

# independent unit conversions: 1 eV/(Angstrom^2 amu) -> angular frequency in rad/s -> cm^-1
CM1 = np.sqrt(sc.e / (1e-20 * sc.atomic_mass)) / (2 * np.pi * sc.c * 100)


def spring_hessian(positions, pairs, k):
    """(3n, 3n) Hessian of central springs ``k/2 (|r_a - r_b| - d_ab)^2`` at their rest lengths."""
    n = len(positions)
    h = np.zeros((3 * n, 3 * n))
    for a, b in pairs:
        e = positions[b] - positions[a]
        e = e / np.linalg.norm(e)
        block = k * np.outer(e, e)
        for i, j, s in ((a, a, 1), (b, b, 1), (a, b, -1), (b, a, -1)):
            h[3 * i : 3 * i + 3, 3 * j : 3 * j + 3] += s * block
    return h


def co2(axis=(0.0, 0.0, 1.0), d=1.16):
    """C between two O on a line: positions (3, 3) Angstrom, masses (3,) amu."""
    z = np.asarray(axis) / np.linalg.norm(axis)
    return np.array([0 * z, d * z, -d * z]), np.array([12.0, 16.0, 16.0])


def test_diatomic_rigid_ions_analytic():
    """+q/-q on a spring k: one mode at sqrt(k/mu) with |d mu/dQ|^2 = q^2/mu exactly."""
    q, k, masses = 0.4, 5.0, np.array([1.008, 18.998])
    pos = np.array([[0.1, -0.2, 0.3], [0.1, -0.2, 0.3]]) + np.outer([0.0, 1.0], [0.6, 0.0, 0.8]) * 0.917
    apt = np.stack([q * np.eye(3), -q * np.eye(3)])
    modes = normal_modes(spring_hessian(pos, [(0, 1)], k), pos, masses)
    mu = masses.prod() / masses.sum()
    assert modes.frequencies_cm1.shape == (1,)  # 6 - 5 rigid motions of a linear molecule
    assert modes.frequencies_cm1[0] == pytest.approx(np.sqrt(k / mu) * CM1, rel=1e-12)
    expected = q**2 / mu * sc.N_A * sc.e**2 / (12 * sc.epsilon_0 * sc.c**2 * sc.atomic_mass) / 1e3
    assert ir_intensities(apt, modes)[0] == pytest.approx(expected, rel=1e-12)
    # textbook: 1 (D/Angstrom)^2/amu = 42.2561 km/mol, 1 e Angstrom = 4.803204 D
    assert KM_MOL == pytest.approx(42.2561 * 4.803204**2, rel=1e-5)


def test_co2_rigid_ions_stretches():
    """Linear C(2q) O(-q) O(-q), springs C-O: symmetric stretch 0, antisymmetric analytic."""
    q, k = 0.7, 10.0
    pos, masses = co2(axis=(1.0, 2.0, -0.5))
    apt = np.stack([2 * q * np.eye(3), -q * np.eye(3), -q * np.eye(3)])
    h = spring_hessian(pos, [(0, 1), (0, 2)], k)
    modes = normal_modes(h, pos, masses)
    assert modes.frequencies_cm1.shape == (4,)  # bend (x2, zero: no angular spring), two stretches
    w = modes.frequencies_cm1
    mc, mo = masses[0], masses[1]
    sym, asym = np.sqrt(k / mo) * CM1, np.sqrt(k * (mc + 2 * mo) / (mc * mo)) * CM1
    assert w[-2:] == pytest.approx([sym, asym], rel=1e-10)
    inten = ir_intensities(apt, modes)
    # antisymmetric stretch: O's move by +-(x), C by -2 mo x / mc; |d mu/dQ|^2 = q^2 (2 + 4 mo/mc)^2 / (norm)
    x = np.array([-2 * mo / mc, 1.0, 1.0])  # displacement pattern along the axis, centre of mass fixed
    norm2 = masses @ x**2
    dmu = 2 * q * x[0] - q * x[1] - q * x[2]
    assert inten[-1] == pytest.approx(KM_MOL * dmu**2 / norm2, rel=1e-10)
    assert abs(inten[-2]) < 1e-20 * KM_MOL


def test_co2_symmetric_stretch_silent_for_any_symmetric_apts():
    """D_inf_h APTs (O: diag(a, a, b) on the axis frame, C: -(sum of the O)): Sigma_g+ mode has I = 0."""
    pos, masses = co2()
    z_o = np.diag([-0.55, -0.55, -1.3])
    apt = np.stack([-2 * z_o, z_o, z_o])
    h = spring_hessian(pos, [(0, 1), (0, 2)], 12.0) + 0.5 * spring_hessian(pos, [(1, 2)], 1.0)
    result = harmonic_ir(h, pos, masses, apt)
    assert result.intensities_km_mol[-2] < 1e-24
    assert result.intensities_km_mol[-1] > 10.0
    # the whole Z Z^T / m sum rule holds over vibrations + rigid motions; rotations of a
    # dipole-free molecule and translations (sum_k Z_k = 0) carry nothing, so vibrations hold all of it
    total = np.einsum("kij,kij,k->", apt, apt, 1 / masses) * KM_MOL
    assert result.intensities_km_mol.sum() == pytest.approx(total, rel=1e-10)


def test_intensities_invariant_under_rotation():
    """Rotating positions, Hessian (R per atom block) and APTs (R Z R^T) leaves w and I unchanged."""
    rng = np.random.default_rng(3)
    pos = np.array([[0.0, 0.0, 0.12], [0.76, 0.0, -0.47], [-0.76, 0.0, -0.47], [0.1, 0.9, 0.3]])
    masses = np.array([15.999, 1.008, 1.008, 12.011])
    h = spring_hessian(pos, [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)], 7.0)
    apt = rng.normal(size=(4, 3, 3))
    apt -= apt.mean(axis=0)  # translation sum rule
    ref = harmonic_ir(h, pos, masses, apt)
    r = Rotation.from_rotvec([0.3, -1.1, 0.7]).as_matrix()
    big = np.kron(np.eye(4), r)
    rot = harmonic_ir(big @ h @ big.T, pos @ r.T, masses, r @ apt @ r.T)
    assert rot.frequencies_cm1 == pytest.approx(ref.frequencies_cm1, rel=1e-10)
    assert rot.intensities_km_mol == pytest.approx(ref.intensities_km_mol, rel=1e-9)
    assert ref.intensities_km_mol.min() > 1e-3  # generic charges: every mode absorbs


def test_intensity_is_dipole_change_along_the_mode():
    """Linear dipole mu(R) = sum_k Z_k R_k: I_m = KM_MOL |mu(R0 + u_m) - mu(R0)|^2, u_m = displacement
    per unit normal coordinate; fixes the index order Z[k, i, j] = d mu_i / dR_kj."""
    rng = np.random.default_rng(7)
    pos = np.array([[0.0, 0.0, 0.12], [0.76, 0.0, -0.47], [-0.76, 0.0, -0.47], [0.1, 0.9, 0.3]])
    masses = np.array([15.999, 1.008, 1.008, 12.011])
    h = spring_hessian(pos, [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)], 7.0)
    apt = rng.normal(size=(4, 3, 3))
    modes = normal_modes(h, pos, masses)
    dmu = np.einsum("kij,mkj->mi", apt, modes.displacements)  # mu(R0 + u_m) - mu(R0)
    assert ir_intensities(apt, modes) == pytest.approx(KM_MOL * (dmu**2).sum(axis=1), rel=1e-12)
    # a stretch along z with Z[k, x, z] only: dipole along x; the transposed reading would give 0
    pos2, m2 = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), np.array([2.0, 3.0])
    z = np.zeros((2, 3, 3))
    z[0, 0, 2], z[1, 0, 2] = 0.5, -0.5
    inten = ir_intensities(z, normal_modes(spring_hessian(pos2, [(0, 1)], 4.0), pos2, m2))
    assert inten[0] == pytest.approx(KM_MOL * 0.25 / (6.0 / 5.0), rel=1e-12)


def test_shape_errors_name_the_field():
    pos, masses = co2()
    with pytest.raises(DataError, match=r"hessian has shape \(3, 3\), expected \(9, 9\)"):
        normal_modes(np.eye(3), pos, masses)
    modes = normal_modes(spring_hessian(pos, [(0, 1), (0, 2)], 1.0), pos, masses)
    with pytest.raises(DataError, match=r"apt has shape \(2, 3, 3\), expected \(3, 3, 3\)"):
        ir_intensities(np.zeros((2, 3, 3)), modes)
