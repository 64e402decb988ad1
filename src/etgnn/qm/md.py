"""Born-Oppenheimer MD of one molecule with PySCF, and the shipped ``water_trajectory.extxyz``.

:class:`PySCFCalculator` is an ASE calculator on etgnn's own single-point route
(:mod:`etgnn.qm.labels`: same SCF, tolerances and constants as the training labels), with the
previous step's density matrix as the SCF guess. :func:`harmonic_hessian` is PySCF's analytic
Hessian with the rigid motions projected out. :func:`run_bomd` starts every vibration with
``k_B T`` (:func:`etgnn.observables.harmonic.thermalize_modes` on that Hessian) at the minimum of
the method, so the molecule neither drifts nor rotates and the kinetic temperature over its
``3 n_atoms - 6`` internal degrees of freedom averages to ``T``, then integrates Newton's equations
with ASE's velocity Verlet and keeps every ``every``-th frame with its momenta, time, energy and
dipole.

The shipped trajectory (6000 steps of 0.25 fs, every 4th kept: 1501 frames 1 fs apart; about
8 minutes of CPU on one core)::

    OMP_NUM_THREADS=1 python -m etgnn.qm.md -o src/etgnn/examples_data/water_trajectory.extxyz

Units: positions Angstrom, momenta ASE units (``Atoms.get_velocities``), ``time_fs`` fs, energy
eV, dipole e*Angstrom (nuclear + electronic, about the origin; the molecule is neutral).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from etgnn.qm.labels import (BOHR_ANGSTROM, DEFAULT_BASIS, DEFAULT_METHOD, HARTREE_EV, _check_method,
                             _core_hamiltonian, _dipole_integrals, _point, build_mol)

__all__ = ["PySCFCalculator", "harmonic_hessian", "optimize", "run_bomd", "main"]

#: 1 THz in cm^-1
THZ_TO_CM1 = 33.35641


class PySCFCalculator(Calculator):
    """Energy, forces and dipole of a neutral closed-shell molecule (RHF or KS-DFT, PySCF).

    Args:
        method: one of :data:`etgnn.qm.labels.METHODS` (default RHF).
        basis: PySCF basis name (default def2-SVP).
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole"]

    def __init__(self, method: str = DEFAULT_METHOD, basis: str = DEFAULT_BASIS, **kwargs):
        super().__init__(**kwargs)
        self.method, self.basis = _check_method(method), basis
        self._dm = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        mol = build_mol(self.atoms.get_chemical_symbols(), self.atoms.positions, self.basis)
        if self._dm is not None and self._dm.shape != (mol.nao, mol.nao):
            self._dm = None
        energy, grad, mu, self._dm, _ = _point(mol, self.method, np.zeros(3), _core_hamiltonian(mol),
                                               _dipole_integrals(mol), self._dm)
        e = float(energy * HARTREE_EV)
        self.results = {"energy": e, "free_energy": e, "forces": -grad * (HARTREE_EV / BOHR_ANGSTROM),
                        "dipole": mu * BOHR_ANGSTROM}


def harmonic_hessian(atoms: Atoms, method: str = DEFAULT_METHOD, basis: str = DEFAULT_BASIS) -> np.ndarray:
    """(3 n_atoms, 3 n_atoms) analytic Hessian in eV/Angstrom^2, rigid translations and rotations
    projected out (about the centre of mass), symmetrised."""
    from pyscf import dft, scf

    method = _check_method(method)
    mol = build_mol(atoms.get_chemical_symbols(), atoms.positions, basis)
    mf = scf.RHF(mol) if method == "RHF" else dft.RKS(mol, xc=method)
    mf.conv_tol = 1e-11
    mf.kernel()
    n = len(atoms)
    h = mf.Hessian().kernel().transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * HARTREE_EV / BOHR_ANGSTROM**2
    r = atoms.positions - atoms.get_center_of_mass()
    rigid = np.concatenate([np.tile(np.eye(3), (n, 1)), np.cross(np.eye(3)[:, None, :], r[None]).reshape(3, -1).T],
                           axis=1)  # (3n, 6)
    q = np.linalg.qr(rigid)[0]
    p = np.eye(3 * n) - q @ q.T
    return p @ (0.5 * (h + h.T)) @ p


def optimize(atoms: Atoms, fmax: float = 1e-4, method: str = DEFAULT_METHOD, basis: str = DEFAULT_BASIS) -> Atoms:
    """A copy of ``atoms`` relaxed with ASE's BFGS on :class:`PySCFCalculator` to ``fmax`` eV/Angstrom."""
    from ase.optimize import BFGS

    out = atoms.copy()
    out.calc = PySCFCalculator(method, basis)
    BFGS(out, logfile=None).run(fmax=fmax, steps=200)
    return out


def run_bomd(atoms: Atoms, temperature: float, timestep_fs: float, steps: int, every: int = 1, seed: int = 0,
             method: str = DEFAULT_METHOD, basis: str = DEFAULT_BASIS, log=None):
    """NVE Born-Oppenheimer MD from the minimum, every vibration started with ``k_B T``.

    Args:
        atoms: the molecule (relaxed here first).
        temperature: K.  timestep_fs: integration step, fs.  steps: MD steps after the start.
        every: keep every ``every``-th frame (the start is frame 0).  seed: phases of the modes.
        log: stream for a progress line every 1000 steps (None: silent).

    Returns:
        ``(frames, info)``: list of ``Atoms`` (momenta set; ``info`` holds ``time_fs``, ``energy``
        (eV), ``dipole`` (e*Angstrom) and ``method``), and a dict with the harmonic wavenumbers
        (cm^-1) at the minimum, the minimum's energy and the CPU time.
    """
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from etgnn.observables.harmonic import thermalize_modes

    cpu = time.process_time()
    ref = optimize(atoms, method=method, basis=basis)
    hess = harmonic_hessian(ref, method, basis)
    md_atoms = Atoms(ref.numbers, positions=ref.positions)
    freq = thermalize_modes(md_atoms, hess, temperature, np.random.default_rng(seed))
    md_atoms.calc = PySCFCalculator(method, basis)
    label = f"{method.upper()}/{basis}"
    frames = []

    def keep():
        step = md.nsteps
        if step % every:
            return
        res = md_atoms.calc.results
        frame = Atoms(md_atoms.numbers, positions=md_atoms.positions, momenta=md_atoms.get_momenta())
        frame.info.update(time_fs=round(step * timestep_fs, 10), energy=res["energy"],
                          dipole=np.array(res["dipole"]), method=label)
        frames.append(frame)
        if log is not None and step % 1000 == 0:
            etot = res["energy"] + md_atoms.get_kinetic_energy()
            print(f"step {step}/{steps}: E_total {etot:.6f} eV, {time.process_time() - cpu:.0f} s CPU",
                  file=log, flush=True)

    md = VelocityVerlet(md_atoms, timestep=timestep_fs * units.fs)
    md.attach(keep, interval=1)  # also called at the start (step 0)
    md.run(steps)
    info = {"harmonic_cm1": (freq * THZ_TO_CM1).tolist(), "minimum_energy_eV": ref.get_potential_energy(),
            "cpu_s": time.process_time() - cpu, "method": label}
    return frames, info


def _write(path, frames) -> None:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    out = []
    for f in frames:
        g = f.copy()
        info = dict(g.info)
        g.info = {"time_fs": info["time_fs"], "method": info["method"]}
        g.calc = SinglePointCalculator(g, energy=info["energy"], dipole=info["dipole"])
        out.append(g)
    write(path, out, format="extxyz")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m etgnn.qm.md", description=__doc__.split("\n")[0])
    p.add_argument("-o", "--output", required=True, help="extxyz to write (overwritten)")
    p.add_argument("--molecule", default="H2O", help="one of etgnn.qm.MOLECULES (default H2O)")
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    p.add_argument("--timestep", type=float, default=0.25, help="MD step, fs (default 0.25)")
    p.add_argument("--steps", type=int, default=6000, help="MD steps (default 6000)")
    p.add_argument("--every", type=int, default=4, help="keep every N-th step (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default=DEFAULT_METHOD)
    p.add_argument("--basis", default=DEFAULT_BASIS)
    args = p.parse_args(argv)
    from etgnn.qm.molecules import reference_geometry

    symbols, positions = reference_geometry(args.molecule)
    frames, info = run_bomd(Atoms(symbols, positions=positions), args.temperature, args.timestep, args.steps,
                            args.every, args.seed, args.method, args.basis, log=sys.stdout)
    _write(args.output, frames)
    e = np.array([f.info["energy"] + f.get_kinetic_energy() for f in frames])
    print(f"{len(frames)} frames every {args.timestep * args.every:g} fs written to {args.output}")
    print(f"harmonic wavenumbers at the {info['method']} minimum: "
          + ", ".join(f"{w:.1f}" for w in info["harmonic_cm1"]) + " cm^-1")
    print(f"total energy drift {e[-1] - e[0]:+.2e} eV, std {e.std():.2e} eV; {info['cpu_s']:.0f} s CPU")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
