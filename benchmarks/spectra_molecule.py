"""Molecule walk-through: IR of H2O from a quick-start model, harmonic and from MD, both routes.

Forces: harmonic RHF/def2-SVP (PySCF Hessian at etgnn's H2O reference geometry, rigid motions
projected out) through ``HarmonicCalculator``. Dipoles and APTs: the model CHECKPOINT (targets
``dipole`` and ``apt``, e.g. ``etgnn train examples/quickstart.yaml``).

1. ``ase.vibrations.Infrared`` on ``combine(HarmonicCalculator, ETGNNCalculator)``: harmonic
   intensities (km/mol) from the model's dipole derivatives; next to them the intensities from
   the model's APTs and from the RHF reference APTs (``etgnn.qm.compute_labels``).
2. The model's own consistency: ``|APT - d mu/dR| / |APT|`` at the reference geometry.
3. NVE MD (each vibration started with k_B T, 300 K), written as extxyz with momenta, then
   ``etgnn spectrum ir`` by the dipole and the current route: band areas (km/mol) against 1.

    python benchmarks/spectra_molecule.py runs/quickstart/best.ckpt

Writes benchmarks/results/spectra_molecule.{json,md} and docs/img/spectra_h2o_ir.png; with
``--out DIR`` all three go to DIR instead (tracked files stay untouched).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import write
from ase.md.verlet import VelocityVerlet
from ase.vibrations import Infrared
from scipy import constants as sc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from etgnn import load_model  # noqa: E402
from etgnn.calculator import ETGNNCalculator  # noqa: E402
from etgnn.cli import main as etgnn_main  # noqa: E402
from etgnn.observables.combined import combine  # noqa: E402
from etgnn.observables.harmonic import HarmonicCalculator  # noqa: E402
from etgnn.qm.labels import BOHR_ANGSTROM, HARTREE_EV, build_mol, compute_labels  # noqa: E402
from etgnn.qm.molecules import reference_geometry  # noqa: E402

KM_MOL = sc.N_A * (sc.e**2 / sc.atomic_mass) / (12 * sc.epsilon_0 * sc.c**2) / 1e3  # per (e/sqrt(amu))^2


def rhf_hessian(atoms: Atoms) -> np.ndarray:
    """(3n, 3n) RHF/def2-SVP Hessian in eV/Angstrom^2 with translations and rotations projected out."""
    from pyscf import scf

    mf = scf.RHF(build_mol(atoms.get_chemical_symbols(), atoms.positions))
    mf.conv_tol = 1e-11
    mf.kernel()
    n = len(atoms)
    h = mf.Hessian().kernel().transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * HARTREE_EV / BOHR_ANGSTROM**2
    r = atoms.positions - atoms.get_center_of_mass()
    rigid = [np.tile(np.eye(3)[a], n) for a in range(3)] + [np.cross(np.eye(3)[a], r).reshape(-1) for a in range(3)]
    q, _ = np.linalg.qr(np.array(rigid).T)
    p = np.eye(3 * n) - q @ q.T
    return p @ (0.5 * (h + h.T)) @ p


def modes(hess, masses):
    m = np.repeat(masses**-0.5, 3)
    lam, vec = np.linalg.eigh(m[:, None] * hess * m)
    keep = lam > 1e-3
    cm1 = np.sqrt(lam[keep]) * 15.633302 * 33.35641
    return cm1, vec[:, keep], m


def intensities(apt, vec, m):
    """km/mol per mode from (n, 3, 3) APTs Z[k, i, j] = d mu_i / dR_kj."""
    zbar = apt.transpose(1, 0, 2).reshape(3, -1) @ (m[:, None] * vec)
    return (zbar**2).sum(axis=0) * KM_MOL


def band_areas(csv, centres, half_width=60.0):
    data = np.loadtxt(csv, delimiter=",")
    out = []
    for c in centres:
        sel = np.abs(data[:, 0] - c) < half_width
        out.append(float(np.sum((data[sel, 2][1:] + data[sel, 2][:-1]) * np.diff(data[sel, 0])) / 2))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for every output, plot included (default: benchmarks/results, plot in docs/img)")
    ap.add_argument("--steps", type=int, default=16000)
    ap.add_argument("--timestep", type=float, default=0.25, help="fs")
    args = ap.parse_args(argv)
    figure = ROOT / "docs" / "img" / "spectra_h2o_ir.png" if args.out is None else args.out / "spectra_h2o_ir.png"
    args.out = ROOT / "benchmarks" / "results" if args.out is None else args.out
    model = load_model(args.checkpoint)
    symbols, pos = reference_geometry("H2O")
    atoms = Atoms(symbols, positions=pos)
    hess = rhf_hessian(atoms)
    cm1, vec, m = modes(hess, atoms.get_masses())

    # 1. harmonic intensities
    ir_atoms = atoms.copy()
    ir_atoms.calc = combine(HarmonicCalculator(hess, atoms), ETGNNCalculator(model))
    with tempfile.TemporaryDirectory() as tmp:
        ir = Infrared(ir_atoms, name=f"{tmp}/ir", delta=0.005)
        ir.run()
        ir.read()
        ase_cm1 = np.real(ir.get_frequencies())[-3:]
        ase_km = ir.intensities[-3:] * 42.255
    apt_model = model.predict(atoms)[0]["apt"]
    ref = compute_labels(symbols, pos)
    i_apt, i_ref = intensities(apt_model, vec, m), intensities(np.asarray(ref.apt).reshape(-1, 3, 3), vec, m)
    # 2. consistency of the model's APT with its own dipole
    h, dmu = 1e-3, np.zeros((len(atoms), 3, 3))
    for k in range(len(atoms)):
        for j in range(3):
            d = []
            for s in (h, -h):
                probe = atoms.copy()
                probe.positions[k, j] += s
                d.append(model.predict(probe)[0]["dipole"])
            dmu[k, :, j] = (d[0] - d[1]) / (2 * h)
    consistency = float(np.linalg.norm(apt_model - dmu) / np.linalg.norm(apt_model))

    # 3. MD with k_B T per vibration, then the CLI on the written trajectory
    rng = np.random.default_rng(0)
    omega = 2 * np.pi * cm1 * sc.c * 100 * 1e-15 / units.fs  # rad per ASE time unit
    amp = np.sqrt(2 * units.kB * 300.0) / omega
    phase = rng.uniform(0, 2 * np.pi, size=len(cm1))
    md_atoms = atoms.copy()
    md_atoms.positions += (m * (vec @ (amp * np.cos(phase)))).reshape(-1, 3)
    md_atoms.set_velocities((m * (vec @ (-amp * omega * np.sin(phase)))).reshape(-1, 3))
    md_atoms.calc = HarmonicCalculator(hess, atoms)
    frames = []
    md = VelocityVerlet(md_atoms, timestep=args.timestep * units.fs)
    md.attach(lambda: frames.append(Atoms(numbers=md_atoms.numbers, positions=md_atoms.positions,
                                          momenta=md_atoms.get_momenta())))
    md.run(args.steps - 1)
    routes = {}
    with tempfile.TemporaryDirectory() as tmp:
        traj = f"{tmp}/h2o_md.extxyz"
        write(traj, frames)
        for route in ("dipole", "current"):
            csv = f"{tmp}/{route}.csv"
            etgnn_main(["spectrum", "ir", str(args.checkpoint), traj, "--timestep", str(args.timestep),
                        "--route", route, "--temperature", "300", "-o", csv, "--batch-size", "256",
                        "--no-progress"])
            routes[route] = {"areas_km_mol": band_areas(csv, cm1)}
            etgnn_main(["spectrum", "ir", str(args.checkpoint), traj, "--timestep", str(args.timestep),
                        "--route", route, "--temperature", "300", "-o", csv, "--batch-size", "256",
                        "--no-progress", "--broadening", "20"])
            routes[route]["csv"] = np.loadtxt(csv, delimiter=",")  # broadened, for the plot
    result = {"modes_cm1": cm1.round(1).tolist(), "ase_infrared_cm1": ase_cm1.round(1).tolist(),
              "harmonic_km_mol": {"model_dipole (ASE Infrared)": ase_km.round(3).tolist(),
                                  "model_apt": i_apt.round(3).tolist(),
                                  "rhf_reference_apt": i_ref.round(3).tolist()},
              "apt_vs_dipole_derivative_rel": consistency,
              "md": {"timestep_fs": args.timestep, "steps": args.steps,
                     **{f"{r}_route_km_mol": v["areas_km_mol"] for r, v in routes.items()}}}
    print(json.dumps(result, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "spectra_molecule.json").write_text(json.dumps(result, indent=1))
    (args.out / "spectra_molecule.md").write_text(report(result))
    plot(routes, cm1, ase_km, i_apt, figure)
    return 0


def report(r) -> str:
    h = r["harmonic_km_mol"]
    md = r["md"]
    lines = ["# H2O IR: quick-start model, harmonic RHF/def2-SVP forces (benchmarks/spectra_molecule.py)", "",
             "| mode (cm^-1) | ASE Infrared, model dipole | model APT | RHF APT | MD dipole route | MD current route |",
             "|---|---|---|---|---|---|"]
    for k, w in enumerate(r["modes_cm1"]):
        lines.append(f"| {w:.1f} | {h['model_dipole (ASE Infrared)'][k]:.2f} | {h['model_apt'][k]:.2f} | "
                     f"{h['rhf_reference_apt'][k]:.2f} | {md['dipole_route_km_mol'][k]:.2f} | "
                     f"{md['current_route_km_mol'][k]:.2f} |")
    lines += ["", "Intensities in km/mol; MD columns: band areas (+-60 cm^-1) of the `etgnn spectrum ir` output, "
              f"{md['steps']} steps of {md['timestep_fs']} fs, every vibration started with k_B T at 300 K.",
              f"Model consistency |APT - d mu/dR| / |APT| at the reference geometry: "
              f"{r['apt_vs_dipole_derivative_rel']:.3f}."]
    return "\n".join(lines) + "\n"


def plot(routes, cm1, ase_km, apt_km, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6.4, 4.2), sharex=True, constrained_layout=True)
    for route, style in (("dipole", "-"), ("current", "--")):
        d = routes[route]["csv"]
        ax.plot(d[:, 0], d[:, 2], style, lw=1.2, label=f"MD (300 K), {route} route")
    ax.set_ylabel(r"$N_A\sigma$ ((km/mol)/cm$^{-1}$)")
    ax.legend(fontsize=8)
    ax.set_title("H2O, harmonic RHF forces, quick-start model; 20 cm$^{-1}$ Gaussian broadening", fontsize=9)
    ax2.vlines(cm1 - 6, 0, ase_km, color="C0", lw=3, label="harmonic, model dipole (ASE Infrared)")
    ax2.vlines(cm1 + 6, 0, apt_km, color="C1", lw=3, label="harmonic, model APT")
    ax2.set_ylabel("intensity (km/mol)")
    ax2.set_xlim(1000, 4800)
    ax2.set_ylim(0, None)
    ax2.set_xlabel("wavenumber (cm$^{-1}$)")
    ax2.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
