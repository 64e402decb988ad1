"""Harmonic IR intensities of the 7 shipped molecules: quick-start model APTs against RHF APTs.

For each molecule of ``etgnn make-dataset`` (H2O, NH3, CH4, CH2O, HF, CO2, CH3OH), at the level of
theory of the shipped data (RHF/def2-SVP, PySCF, ``etgnn.qm.labels``):

1. geometry optimisation from etgnn's reference geometry (ASE BFGS on the RHF forces of
   ``single_point``, ``--fmax`` eV/Angstrom), then made exactly symmetric
   (``etgnn.testing.molecule_rotations``);
2. analytic RHF Hessian (PySCF), normal modes with the rigid motions removed
   (``etgnn.observables.ir.normal_modes``; cross-checked against PySCF's
   ``thermo.harmonic_analysis``), ASE's average atomic masses;
3. intensities (km/mol) from the RHF finite-field APTs (``compute_labels``, the data set's own
   route) and from the model CHECKPOINT's ``apt`` at the same geometry and modes, summed over
   each degenerate set;
4. IR-inactive sets by symmetry: those that carry no intensity for random APTs averaged over the
   point group (there both intensities are reported as absolute values, not relative errors);
5. whether the optimised geometry is far from the model's training frames (Kabsch RMSD).

    python benchmarks/ir_molecules.py runs/quickstart/best.ckpt

Writes benchmarks/results/ir_molecules.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read
from ase.optimize import BFGS
from scipy.spatial.distance import cdist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from etgnn import load_model  # noqa: E402
from etgnn.data.dataset import resolve_data_path  # noqa: E402
from etgnn.observables.ir import degenerate_sets, ir_intensities, normal_modes  # noqa: E402
from etgnn.qm.labels import BOHR_ANGSTROM, HARTREE_EV, build_mol, compute_labels, single_point  # noqa: E402
from etgnn.qm.molecules import MOLECULES, reference_geometry  # noqa: E402
from etgnn.testing import molecule_rotations  # noqa: E402

#: a set is IR-inactive by symmetry below this fraction of the symmetric random APTs' total intensity
SILENT = 1e-8


class RHFCalculator(Calculator):
    """ASE calculator: RHF/def2-SVP energy (eV) and forces (eV/Angstrom) of ``etgnn.qm.single_point``."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        sp = single_point(self.atoms.get_chemical_symbols(), self.atoms.positions)
        self.results = {"energy": sp.energy, "forces": sp.forces}


def optimise(name: str, fmax: float) -> tuple[Atoms, np.ndarray, int, float]:
    """RHF minimum from the reference geometry, symmetrised: atoms, point-group operations
    (n_ops, 3, 3), BFGS steps, max |F| (eV/Angstrom) at the symmetrised geometry."""
    symbols, pos = reference_geometry(name)
    atoms = Atoms(symbols, positions=pos)
    atoms.calc = RHFCalculator()
    opt = BFGS(atoms, logfile=None)
    opt.run(fmax=fmax, steps=200)
    sym, ops = molecule_rotations(Atoms(symbols, positions=atoms.positions))
    fmax_sym = float(np.abs(single_point(symbols, sym.positions).forces).max())
    return sym, ops, opt.get_number_of_steps(), fmax_sym


def rhf_hessian(atoms: Atoms):
    """(3n, 3n) analytic RHF/def2-SVP Hessian (eV/Angstrom^2) and the same in a.u. (PySCF layout)."""
    from pyscf import scf

    mf = scf.RHF(build_mol(atoms.get_chemical_symbols(), atoms.positions))
    mf.conv_tol = 1e-11
    mf.kernel()
    h_au = mf.Hessian().kernel()  # (n, n, 3, 3) Hartree/Bohr^2
    n = len(atoms)
    return h_au.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * HARTREE_EV / BOHR_ANGSTROM**2, mf.mol, h_au


def pyscf_frequencies(mol, h_au, masses) -> np.ndarray:
    from pyscf.hessian import thermo

    res = thermo.harmonic_analysis(mol, h_au, mass=masses, imaginary_freq=False)
    return np.sort(np.real(res["freq_wavenumber"]))


def symmetric_random_apts(atoms: Atoms, ops: np.ndarray, n: int = 3, seed: int = 0) -> np.ndarray:
    """(n, n_atoms, 3, 3) random APTs averaged over the point group: Z[p_g(k)] = R_g Z[k] R_g^T."""
    pos = atoms.positions
    perms = [np.argmin(cdist(pos @ op.T, pos), axis=1) for op in ops]
    z = np.random.default_rng(seed).normal(size=(n, len(atoms), 3, 3))
    out = np.zeros_like(z)
    for op, perm in zip(ops, perms):
        out[:, perm] += np.einsum("ia,skab,jb->skij", op, z, op)
    return out / len(ops)


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD (Angstrom) of two (n, 3) geometries after centring and the best proper rotation."""
    from scipy.spatial.transform import Rotation

    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    rot, _ = Rotation.align_vectors(a, b)
    return float(np.sqrt(np.mean(np.sum((a - rot.apply(b)) ** 2, axis=1))))


def training_frames(model) -> tuple[list[Atoms], set[int]]:
    """Frames of the model's training file and the indices of its training split (seeded split)."""
    d = model.config.data
    frames = read(resolve_data_path(d.train), index=":")
    if d.val or d.test:
        return frames, set(range(len(frames)))
    perm = np.random.default_rng(d.split_seed).permutation(len(frames))
    return frames, set(perm[: int(round(d.split[0] * len(frames)))].tolist())


def analyse(name: str, model, frames, train_idx, fmax: float) -> dict:
    t0 = time.perf_counter()
    atoms, ops, steps, fmax_sym = optimise(name, fmax)
    masses = atoms.get_masses()
    hess, mol, h_au = rhf_hessian(atoms)
    modes = normal_modes(hess, atoms.positions, masses)
    pyscf_cm1 = pyscf_frequencies(mol, h_au, masses)
    apt_ref = np.asarray(compute_labels(atoms.get_chemical_symbols(), atoms.positions).apt)
    apt_model = model.predict(atoms)[0]["apt"]
    i_ref, i_model = ir_intensities(apt_ref, modes), ir_intensities(apt_model, modes)
    i_generic = np.array([ir_intensities(z, modes) for z in symmetric_random_apts(atoms, ops)])
    sets = []
    for idx in degenerate_sets(modes.frequencies_cm1, tol=1.0):
        generic = i_generic[:, idx].sum(axis=1) / i_generic.sum(axis=1)
        ref, mod = float(i_ref[idx].sum()), float(i_model[idx].sum())
        active = bool(generic.max() > SILENT)
        sets.append({"cm1": float(modes.frequencies_cm1[idx].mean()), "degeneracy": len(idx),
                     "ir_active": active, "rhf_apt_km_mol": ref, "model_apt_km_mol": mod,
                     "rel_error": (mod - ref) / ref if active else None})
    act = [s for s in sets if s["ir_active"]]
    ref_geo = reference_geometry(name)[1]
    mine = [k for k, f in enumerate(frames) if f.info.get("molecule") == name]
    rmsd = {k: kabsch_rmsd(atoms.positions, frames[k].positions) for k in mine}
    return {
        "molecule": name, "symbols": atoms.get_chemical_symbols(), "positions": atoms.positions.tolist(),
        "point_group_order": len(ops), "bfgs_steps": steps, "max_force_eV_A": fmax_sym,
        "rmsd_to_reference_geometry_A": kabsch_rmsd(atoms.positions, ref_geo),
        "nearest_training_frame_rmsd_A": min(v for k, v in rmsd.items() if k in train_idx),
        "nearest_frame_rmsd_A": min(rmsd.values()),
        "median_frame_rmsd_A": float(np.median(list(rmsd.values()))),
        "n_training_frames": sum(k in train_idx for k in mine),
        "max_abs_diff_vs_pyscf_cm1": float(np.abs(pyscf_cm1 - modes.frequencies_cm1).max()),
        "apt_model_vs_rhf_rel": float(np.linalg.norm(apt_model - apt_ref) / np.linalg.norm(apt_ref)),
        "sets": sets,
        "weighted_mean_abs_rel_error": sum(abs(s["model_apt_km_mol"] - s["rhf_apt_km_mol"]) for s in act)
        / sum(s["rhf_apt_km_mol"] for s in act),
        "seconds": time.perf_counter() - t0,
    }


def report(res: dict) -> str:
    lines = ["# Harmonic IR intensities: quick-start model APTs vs RHF/def2-SVP APTs "
             "(benchmarks/ir_molecules.py)", "",
             f"Checkpoint `{res['checkpoint']}`; RHF/def2-SVP minima (BFGS to {res['fmax']} eV/Angstrom, "
             "symmetrised), analytic RHF Hessian, ASE average masses. Intensities in km/mol, summed over "
             "each degenerate set (d = degeneracy); relative error = (model - RHF) / RHF. IR-inactive "
             "by symmetry: both values are shown as absolute numbers.", "",
             "| molecule | cm^-1 | d | RHF APT | model APT | rel. error |", "|---|---|---|---|---|---|"]
    for m in res["molecules"]:
        for s in m["sets"]:
            err = f"{100 * s['rel_error']:+.1f} %" if s["ir_active"] else "inactive"
            fmt = (lambda v: f"{v:.2f}") if s["ir_active"] else (lambda v: f"{abs(v):.1e}")
            lines.append(f"| {m['molecule']} | {s['cm1']:.1f} | {s['degeneracy']} | {fmt(s['rhf_apt_km_mol'])} | "
                         f"{fmt(s['model_apt_km_mol'])} | {err} |")
    lines += ["", "| molecule | weighted mean abs rel. error | APT rel. error | max abs rel. error | "
              "RMSD eq-reference (A) | nearest training frame (A) | median frame (A) | training frames |",
              "|---|---|---|---|---|---|---|---|"]
    for m in res["molecules"]:
        errs = [abs(s["rel_error"]) for s in m["sets"] if s["ir_active"]]
        lines.append(f"| {m['molecule']} | {100 * m['weighted_mean_abs_rel_error']:.1f} % | "
                     f"{100 * m['apt_model_vs_rhf_rel']:.1f} % | {100 * max(errs):.1f} % | "
                     f"{m['rmsd_to_reference_geometry_A']:.4f} | {m['nearest_training_frame_rmsd_A']:.3f} | "
                     f"{m['median_frame_rmsd_A']:.3f} | {m['n_training_frames']} |")
    o = res["overall"]
    lines += ["", f"All {o['n_active_sets']} IR-active sets: intensity-weighted mean abs rel. error "
              f"{100 * o['weighted_mean_abs_rel_error']:.1f} %, median {100 * o['median_abs_rel_error']:.1f} %; "
              f"{o['n_inactive_sets']} inactive sets, largest |I| {o['max_inactive_km_mol']:.1e} km/mol (both APTs)."]
    lines += ["", "Weighted mean = sum |I_model - I_RHF| / sum I_RHF over the IR-active sets; APT rel. error = "
              "|Z_model - Z_RHF| / |Z_RHF| (Frobenius, all atoms). RMSDs (Kabsch) from the RHF minimum to "
              "etgnn's reference geometry, to the nearest frame of the checkpoint's training split and "
              "the median over all shipped frames of the molecule. Frequencies agree with PySCF's "
              f"`thermo.harmonic_analysis` to {res['max_abs_diff_vs_pyscf_cm1']:.1e} cm^-1; max residual "
              f"force at the symmetrised minima {res['max_force_eV_A']:.1e} eV/Angstrom."]
    return "\n".join(lines) + "\n"


def overall(mols: list[dict]) -> dict:
    """Summary over every set of every molecule."""
    sets = [s for m in mols for s in m["sets"]]
    act = [s for s in sets if s["ir_active"]]
    off = [s for s in sets if not s["ir_active"]]
    return {"n_active_sets": len(act), "n_inactive_sets": len(off),
            "weighted_mean_abs_rel_error": sum(abs(s["model_apt_km_mol"] - s["rhf_apt_km_mol"]) for s in act)
            / sum(s["rhf_apt_km_mol"] for s in act),
            "median_abs_rel_error": float(np.median([abs(s["rel_error"]) for s in act])),
            "max_inactive_km_mol": max((max(abs(s["rhf_apt_km_mol"]), abs(s["model_apt_km_mol"])) for s in off),
                                       default=0.0)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path, nargs="?", default=Path("runs/quickstart/best.ckpt"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--molecules", default=",".join(MOLECULES))
    ap.add_argument("--fmax", type=float, default=2e-4, help="BFGS force threshold, eV/Angstrom")
    args = ap.parse_args(argv)
    if not args.checkpoint.is_file():
        ap.error(f"no checkpoint {args.checkpoint}: train one with `etgnn train examples/quickstart.yaml`")
    model = load_model(args.checkpoint)
    frames, train_idx = training_frames(model)
    mols = []
    for name in args.molecules.split(","):
        mols.append(analyse(name, model, frames, train_idx, args.fmax))
        print(json.dumps({k: v for k, v in mols[-1].items() if k not in ("positions", "symbols")}, indent=1),
              flush=True)
    res = {"checkpoint": str(args.checkpoint), "fmax": args.fmax, "molecules": mols,
           "max_abs_diff_vs_pyscf_cm1": max(m["max_abs_diff_vs_pyscf_cm1"] for m in mols),
           "max_force_eV_A": max(m["max_force_eV_A"] for m in mols), "overall": overall(mols)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ir_molecules.json").write_text(json.dumps(res, indent=1))
    (args.out / "ir_molecules.md").write_text(report(res))
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
