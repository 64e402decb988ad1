"""First-principles labels of one molecule with PySCF: energy, forces, dipole, alpha, APT.

Default method: restricted Hartree-Fock, basis def2-SVP (``"RHF/def2-SVP"``); Kohn-Sham DFT
(:data:`METHODS`) is available too. Constants are CODATA 2018 (:data:`HARTREE_EV`,
:data:`BOHR_ANGSTROM`); PySCF is fed Bohr coordinates so its own constants never enter.

Finite-field route (7 SCF + gradient runs per structure). A uniform electric field ``F``
(atomic units, 1 a.u. = 51.42 V/Angstrom) enters the energy as ``W(F) = W0 - mu . F``, i.e.

* electrons (charge -1):  ``h1 -> h1 + F . r``  (dipole integrals, origin at 0),
* nuclei    (charge Z_A): ``E_nuc -> E_nuc - Z_A F . R_A``.

Then ``mu = -dW/dF``, ``alpha_ij = d mu_i / d F_j`` (positive definite) and, with the forces
``f_A = -dW/dR_A``, the atomic polar tensor
``Z[A, i, j] = d mu_i / d R_{A,j} = d f_{A,j} / d F_i`` (first index: field/dipole direction,
second: displacement direction). PySCF's analytic nuclear gradient differentiates the
field-free core Hamiltonian only, so :func:`field_gradient` adds the missing terms: the
nuclear ``-Z_A F`` and the electronic ``-2 sum_{mu in A, nu} D_{mu nu} <d_x mu| F . r |nu>``
(atom-centred basis functions move with the nuclei). The tests check the result against
finite differences of the dipole with respect to the positions and of the energy under a field.
Central differences use ``+-F`` with ``F = 1e-3`` a.u. along x, y, z. The polarizability is
symmetrised (its antisymmetric part is finite-difference noise, about 1e-5 a.u.).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from etgnn.errors import ConfigError, EtgnnError

__all__ = [
    "HARTREE_EV",
    "BOHR_ANGSTROM",
    "METHODS",
    "DEFAULT_METHOD",
    "DEFAULT_BASIS",
    "DEFAULT_FIELD_AU",
    "SinglePoint",
    "Labels",
    "require_pyscf",
    "build_mol",
    "field_gradient",
    "single_point",
    "compute_labels",
]

#: Hartree in eV (CODATA 2018)
HARTREE_EV = 27.211386245988
#: Bohr radius in Angstrom (CODATA 2018)
BOHR_ANGSTROM = 0.529177210903
#: supported methods: "RHF", or the exchange-correlation functional of a restricted KS run
METHODS = ("RHF", "B3LYP", "PBE0", "PBE")
DEFAULT_METHOD = "RHF"
DEFAULT_BASIS = "def2-SVP"
#: finite-field step, atomic units (Hartree / (e Bohr))
DEFAULT_FIELD_AU = 1e-3
#: SCF energy tolerance (Hartree) and orbital-gradient tolerance, tight for clean differences
CONV_TOL = 1e-11
CONV_TOL_GRAD = 1e-8


@dataclass(frozen=True)
class SinglePoint:
    """Energy, forces and dipole of one structure under a uniform field (output units).

    Attributes:
        energy: total energy including the nuclear-field term ``-F . sum_A Z_A R_A``, eV.
        forces: (n_atoms, 3) ``-dE/dR`` including the field terms, eV/Angstrom.
        dipole: (3,) nuclear + electronic dipole about the origin, e*Angstrom.
    """

    energy: float
    forces: np.ndarray
    dipole: np.ndarray


@dataclass(frozen=True)
class Labels:
    """Field-free labels of one structure.

    Attributes:
        energy: total energy, eV.
        forces: (n_atoms, 3) float64, eV/Angstrom.
        dipole: (3,) float64, e*Angstrom (origin-independent for a neutral molecule).
        polarizability: (3, 3) float64 ``alpha_ij = d mu_i / d F_j``, Angstrom^3
            (Gaussian convention: atomic units Bohr^3 times ``BOHR_ANGSTROM**3``), symmetric.
        apt: (n_atoms, 3, 3) float64 atomic polar tensors, e;
            ``apt[A, i, j] = d mu_i / d R_{A,j}`` (first index field, second displacement).
        method: ``"METHOD/basis"``, e.g. ``"RHF/def2-SVP"``.
    """

    energy: float
    forces: np.ndarray
    dipole: np.ndarray
    polarizability: np.ndarray
    apt: np.ndarray
    method: str


def require_pyscf():
    """Import and return :mod:`pyscf`, or explain how to install it.

    Raises:
        EtgnnError: PySCF is not installed.
    """
    try:
        import pyscf  # noqa: F401
        from pyscf import dft, gto, scf  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise EtgnnError(
            "computing quantum-chemistry labels needs PySCF, which is not installed; "
            "install it with: pip install 'etgnn[qm]'"
        ) from exc
    return pyscf


def _check_method(method: str) -> str:
    """Upper-cased ``method`` if it is in :data:`METHODS`, else :class:`ConfigError`."""
    if method.upper() not in METHODS:
        raise ConfigError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    return method.upper()


def build_mol(symbols: list[str], positions: np.ndarray, basis: str = DEFAULT_BASIS):
    """Neutral closed-shell PySCF molecule.

    Args:
        symbols: ``n_atoms`` chemical symbols.
        positions: (n_atoms, 3) Cartesian positions, Angstrom.
        basis: basis-set name known to PySCF, e.g. ``"def2-SVP"``.

    Returns:
        ``pyscf.gto.Mole`` built in Bohr (converted with :data:`BOHR_ANGSTROM`), silent.

    Raises:
        ConfigError: shape mismatch, unknown basis, or an odd number of electrons.
    """
    require_pyscf()
    from pyscf import gto

    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (len(symbols), 3):
        raise ConfigError(f"positions have shape {pos.shape}, expected ({len(symbols)}, 3)")
    atom = [(s, tuple(p)) for s, p in zip(symbols, pos / BOHR_ANGSTROM)]
    try:
        return gto.M(atom=atom, basis=basis, unit="Bohr", charge=0, spin=0, verbose=0)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"PySCF cannot build {''.join(symbols)} with basis {basis!r}: {exc}") from exc


def _dipole_integrals(mol) -> np.ndarray:
    """(3, nao, nao) ``<mu| r |nu>`` about the origin, Bohr."""
    with mol.with_common_orig((0.0, 0.0, 0.0)):
        return mol.intor_symmetric("int1e_r", comp=3)


def _dipole_au(mol, dm: np.ndarray, r_ints: np.ndarray) -> np.ndarray:
    """(3,) nuclear + electronic dipole about the origin, e*Bohr."""
    return mol.atom_charges() @ mol.atom_coords() - np.einsum("kab,ab->k", r_ints, dm)


def field_gradient(mol, dm: np.ndarray, field_au: np.ndarray) -> np.ndarray:
    """Nuclear gradient of the field energy ``F . (<r>_el - sum_A Z_A R_A)`` at fixed density.

    Args:
        mol: ``pyscf.gto.Mole``.
        dm: (nao, nao) symmetric total (alpha + beta) AO density matrix.
        field_au: (3,) uniform field, atomic units.

    Returns:
        (n_atoms, 3) gradient contribution, Hartree/Bohr, to add to PySCF's field-free
        analytic gradient of the SCF run performed under the field.
    """
    nao = mol.nao
    with mol.with_common_orig((0.0, 0.0, 0.0)):
        # irp[k, x, a, b] = <a| r_k d_x |b>, hence <d_x b| r_k |a> = irp[k, x, a, b]
        irp = mol.intor("int1e_irp", comp=9, hermi=0).reshape(3, 3, nao, nao)
    # m[x, b, a] = <d_x b| F . r |a>; per-AO sums c[x, b] = sum_a m[x, b, a] D[b, a]
    c = np.einsum("k,kxab,ba->xb", field_au, irp, dm)
    ao_atom = np.zeros((mol.natm, nao))
    for atom, (_, _, p0, p1) in enumerate(mol.aoslice_by_atom()):
        ao_atom[atom, p0:p1] = 1.0
    electronic = -2.0 * ao_atom @ c.T
    nuclear = -mol.atom_charges()[:, None] * np.asarray(field_au)[None, :]
    return electronic + nuclear


def _scf(mol, method: str, field_au: np.ndarray, h0, r_ints, dm0=None, eri=None):
    """Converged SCF object with ``F . r`` added to the core Hamiltonian."""
    from pyscf import dft, scf

    mf = scf.RHF(mol) if method == "RHF" else dft.RKS(mol, xc=method)
    mf.conv_tol, mf.conv_tol_grad = CONV_TOL, CONV_TOL_GRAD
    hcore = h0 + np.einsum("k,kab->ab", field_au, r_ints)
    mf.get_hcore = lambda *args, **kwargs: hcore
    if eri is not None:
        mf._eri = eri
    mf.kernel(dm0=dm0)
    if not mf.converged:
        mf = mf.newton()
        mf.kernel(dm0=dm0)
    if not mf.converged:
        raise EtgnnError(
            f"SCF did not converge for {mol.atom_symbol(0)}... ({mol.natm} atoms, "
            f"{method}/{mol.basis}, field {list(field_au)} a.u.); the geometry may be too "
            "distorted: try a smaller sigma"
        )
    return mf


def _point(mol, method, field_au, h0, r_ints, dm0=None, eri=None):
    """(energy Ha, gradient (n_atoms, 3) Ha/Bohr, dipole (3,) e*Bohr, dm, eri) under a field."""
    mf = _scf(mol, method, field_au, h0, r_ints, dm0, eri)
    dm = mf.make_rdm1()
    grad = mf.nuc_grad_method()
    if method != "RHF":
        grad.grid_response = True  # forces consistent with the grid-integrated energy
    g = grad.kernel() + field_gradient(mol, dm, field_au)
    mu = _dipole_au(mol, dm, r_ints)
    energy = mf.e_tot - field_au @ (mol.atom_charges() @ mol.atom_coords())
    return energy, g, mu, dm, getattr(mf, "_eri", None)


def _core_hamiltonian(mol) -> np.ndarray:
    """(nao, nao) field-free core Hamiltonian T + V_nuc, Hartree."""
    return mol.intor_symmetric("int1e_kin") + mol.intor_symmetric("int1e_nuc")


def single_point(
    symbols: list[str],
    positions: np.ndarray,
    method: str = DEFAULT_METHOD,
    basis: str = DEFAULT_BASIS,
    field_au=(0.0, 0.0, 0.0),
) -> SinglePoint:
    """Energy, forces and dipole of one structure in a uniform electric field.

    Args:
        symbols: ``n_atoms`` chemical symbols.
        positions: (n_atoms, 3) positions, Angstrom.
        method: one of :data:`METHODS`.
        basis: PySCF basis name.
        field_au: (3,) uniform field, atomic units (Hartree / (e Bohr)).

    Returns:
        :class:`SinglePoint` in eV, eV/Angstrom and e*Angstrom.

    Raises:
        ConfigError: unknown method or basis. EtgnnError: SCF not converged / no PySCF.
    """
    method = _check_method(method)
    mol = build_mol(symbols, positions, basis)
    r_ints = _dipole_integrals(mol)
    field = np.asarray(field_au, dtype=np.float64)
    e, g, mu, _, _ = _point(mol, method, field, _core_hamiltonian(mol), r_ints)
    return SinglePoint(e * HARTREE_EV, -g * (HARTREE_EV / BOHR_ANGSTROM), mu * BOHR_ANGSTROM)


def compute_labels(
    symbols: list[str],
    positions: np.ndarray,
    method: str = DEFAULT_METHOD,
    basis: str = DEFAULT_BASIS,
    field_au: float = DEFAULT_FIELD_AU,
    symmetrize: bool = True,
) -> Labels:
    """All labels of one neutral molecule by the finite-field route (7 SCF + gradient runs).

    Args:
        symbols: ``n_atoms`` chemical symbols.
        positions: (n_atoms, 3) positions, Angstrom.
        method: one of :data:`METHODS`.
        basis: PySCF basis name.
        field_au: finite-field step ``F`` in atomic units (central differences at ``+-F``).
        symmetrize: return ``(alpha + alpha.T) / 2`` (the exact alpha is symmetric).

    Returns:
        :class:`Labels` (eV, eV/Angstrom, e*Angstrom, Angstrom^3, e).

    Raises:
        ConfigError: unknown method or basis, non-positive ``field_au``.
        EtgnnError: SCF not converged, or PySCF missing.
    """
    method = _check_method(method)
    if not field_au > 0:
        raise ConfigError(f"field_au must be > 0 (atomic units), got {field_au}")
    mol = build_mol(symbols, positions, basis)
    h0, r_ints = _core_hamiltonian(mol), _dipole_integrals(mol)
    e0, g0, mu0, dm0, eri = _point(mol, method, np.zeros(3), h0, r_ints)
    apt = np.empty((mol.natm, 3, 3))
    alpha = np.empty((3, 3))
    for i in range(3):
        step = np.zeros(3)
        step[i] = field_au
        _, gp, mup, _, _ = _point(mol, method, step, h0, r_ints, dm0, eri)
        _, gm, mum, _, _ = _point(mol, method, -step, h0, r_ints, dm0, eri)
        apt[:, i, :] = -(gp - gm) / (2 * field_au)  # d f_{A,j} / d F_i, forces f = -g
        alpha[:, i] = (mup - mum) / (2 * field_au)  # d mu_. / d F_i
    if symmetrize:
        alpha = 0.5 * (alpha + alpha.T)
    return Labels(
        energy=float(e0 * HARTREE_EV),
        forces=-g0 * (HARTREE_EV / BOHR_ANGSTROM),
        dipole=mu0 * BOHR_ANGSTROM,
        polarizability=alpha * BOHR_ANGSTROM**3,
        apt=apt,
        method=f"{method}/{basis}",
    )
