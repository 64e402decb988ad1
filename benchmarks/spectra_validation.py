"""Validate the spectra and field-MD layer on DFT harmonic crystals and on a molecule.

Crystals (``../shared/data/phonopy_born``: phonopy force constants + BORN, DFT):
  1. static field: eps_0 - eps_inf from the exact linear solve ``Phi u = Z^T E`` on the supercell,
     against the generalised Lyddane-Sachs-Teller relation ``prod_m w_m(q, NAC)^2 / w_m(0)^2 =
     q.eps_0.q / q.eps_inf.q`` with phonopy's own Gamma frequencies (with and without the
     non-analytic correction along q); for NaCl and MgO also by BFGS relaxation with
     ``FieldCalculator(HarmonicCalculator)`` at E = 0.01 V/Angstrom.
  2. NVE MD on the force constants (ASE VelocityVerlet), every supercell mode started with energy
     k_B T (random phases), current route ``J = sum_k Z_k v_k`` with the DFT charges: peak positions
     against phonopy's IR-active TO frequencies and band areas per polarization against the
     Gamma-point mode effective charges of phonopy's primitive-cell eigenvectors, ``int alpha n
     d(wavenumber) = sum_m |Zbar_m,i|^2 / (12 eps0 c^2 V_prim)``.
Molecule (``--checkpoint``, a quick-start model with ``apt`` and ``dipole`` targets): see
``spectra_molecule.py``.

    python benchmarks/spectra_validation.py [--data ../shared/data/phonopy_born] [--quick]

Writes benchmarks/results/spectra_validation.{json,md} and docs/img/spectra_crystals_ir.png; with
``--out DIR`` all three go to DIR instead (tracked files stay untouched).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from ase import units
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from scipy import constants as sc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from etgnn.observables import spectra as sp  # noqa: E402
from etgnn.observables.field import FieldCalculator  # noqa: E402
from etgnn.observables.harmonic import (EPS0_FACTOR, HarmonicCalculator, load_phonopy_crystal,  # noqa: E402
                                        static_dielectric_ionic)

CRYSTALS = ("NaCl", "MgO", "ZnO", "SnO2", "Al2O3", "TiO2-anatase", "SiO2-HP")
MD_CRYSTALS = ("NaCl", "MgO", "ZnO", "SnO2")
THZ_PER_SQRT_EV_A2_AMU = 15.633302  # phonopy's VaspToTHz


def load(data: Path, name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_phonopy_crystal(data / f"{name}.phonopy_disp.yaml", data / f"{name}.FORCE_SETS",
                                    data / f"{name}.BORN")


def gamma(crystal, direction=None, eigenvectors=False):
    """Gamma frequencies (THz); with NAC along the Cartesian ``direction``, without NAC if None."""
    ph = crystal.phonon
    nac = ph.nac_params
    if direction is None:
        ph.nac_params = None
    else:  # phonopy takes q in reduced coordinates of the primitive reciprocal lattice
        direction = ph.primitive.cell @ np.asarray(direction, dtype=float)
    try:
        ph.run_qpoints([[0, 0, 0]], nac_q_direction=direction, with_eigenvectors=eigenvectors)
        q = ph.qpoints
        return (q.frequencies[0], q.eigenvectors[0]) if eigenvectors else q.frequencies[0]
    finally:
        ph.nac_params = nac


def static_check(crystal, name):
    d_eps = static_dielectric_ionic(crystal.force_constants, crystal.born, crystal.atoms.get_volume())
    out = {"eps_inf": crystal.epsilon.round(4).tolist(), "d_eps": d_eps.round(4).tolist(), "lst": {}}
    w0 = gamma(crystal)[3:]
    for label, q in (("x", [1, 0, 0]), ("z", [0, 0, 1])):
        w = gamma(crystal, q)[3:]
        lst = float(np.prod((w / w0) ** 2))
        q = np.array(q, float)
        ours = float(q @ (crystal.epsilon + d_eps) @ q / (q @ crystal.epsilon @ q))
        out["lst"][label] = {"prod_w_nac2_over_w2": lst, "eps0_over_epsinf_linear_solve": ours,
                             "rel_diff": ours / lst - 1}
    return out


def relax_check(crystal, field=0.01):
    atoms = crystal.atoms.copy()
    atoms.calc = FieldCalculator(HarmonicCalculator(crystal.force_constants, crystal.atoms),
                                 [0, 0, field], crystal.born)
    opt = BFGS(atoms, logfile=None)
    opt.run(fmax=1e-5, steps=2000)
    d_eps_zz = EPS0_FACTOR * atoms.calc.get_property("polarization_change", atoms)[2] / field
    return {"field_V_per_A": field, "bfgs_steps": opt.nsteps, "d_eps_zz_relaxed": float(d_eps_zz)}


def supercell_modes(crystal):
    """Frequencies (THz) and mass-weighted eigenvectors (3n, 3n) of the supercell at Gamma."""
    n = len(crystal.atoms)
    phi = crystal.force_constants.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    m = np.repeat(crystal.atoms.get_masses() ** -0.5, 3)
    lam, vec = np.linalg.eigh(m[:, None] * 0.5 * (phi + phi.T) * m)
    return np.sign(lam) * np.sqrt(np.abs(lam)) * THZ_PER_SQRT_EV_A2_AMU, vec, m


def mode_charges(born, vec, m):
    """Zbar[:, mode] = sum_k Z_k e_mode,k / sqrt(m_k), e / sqrt(amu)."""
    z = born.transpose(1, 0, 2).reshape(3, -1)  # (i, (k, j))
    return z @ (m[:, None] * vec)


def equipartition_state(crystal, temperature, rng):
    """Displacements and velocities with energy k_B T in every non-acoustic supercell mode.

    Degenerate modes are rotated so that their mode charges are orthogonal, which removes the
    cross terms between them from <J.J>.
    """
    freq, vec, m = supercell_modes(crystal)
    zbar = mode_charges(crystal.born, vec, m)
    start = 0
    while start < len(freq):  # degenerate groups: SVD rotation within the group
        stop = start + 1
        while stop < len(freq) and abs(freq[stop] - freq[start]) < 1e-4:
            stop += 1
        if stop - start > 1:
            _, _, vt = np.linalg.svd(zbar[:, start:stop])
            vec[:, start:stop] = vec[:, start:stop] @ vt.T
        start = stop
    omega = 2 * np.pi * freq * 1e-3  # rad/fs
    amp = np.sqrt(2 * units.kB * temperature) / np.where(freq > 0.1, omega / units.fs, np.inf)  # ASE units
    phase = rng.uniform(0, 2 * np.pi, size=len(freq))
    q, qdot = amp * np.cos(phase), -amp * (omega / units.fs) * np.sin(phase)
    u = (m * (vec @ q)).reshape(-1, 3)
    v = (m * (vec @ qdot)).reshape(-1, 3)  # ASE velocity units
    return u, v


def md_check(crystal, name, temperature=300.0, duration_fs=20000.0, seed=0):
    freq, _, _ = supercell_modes(crystal)
    dt = min(5.0, 1e3 / freq.max() / 16)  # >= 16 steps per shortest period
    steps = int(duration_fs / dt)
    atoms = crystal.atoms.copy()
    u, v = equipartition_state(crystal, temperature, np.random.default_rng(seed))
    atoms.positions += u
    atoms.set_velocities(v)
    atoms.calc = HarmonicCalculator(crystal.force_constants, crystal.atoms)
    currents = []
    md = VelocityVerlet(atoms, timestep=dt * units.fs)
    md.attach(lambda: currents.append(sp.polarization_current(crystal.born, atoms.get_velocities() * units.fs)))
    t0 = time.perf_counter()
    md.run(steps - 1)
    md_s = time.perf_counter() - t0
    currents = np.array(currents)
    max_lag = len(currents) // 2
    resolution = 1e3 / (max_lag * dt)
    volume = crystal.atoms.get_volume()
    total = sp.ir_spectrum(currents, dt, temperature, volume=volume, max_lag=max_lag)

    # independent route: phonopy's primitive-cell Gamma eigenvectors -> mode effective charges
    prim = crystal.phonon.primitive
    w, ev = gamma(crystal, None, eigenvectors=True)
    mp = np.repeat(prim.masses ** -0.5, 3)
    zp = np.asarray(crystal.phonon.nac_params["born"])
    zbar = mode_charges(zp, ev, mp)  # (3, modes); eigenvectors may carry a complex phase
    strength = np.abs(zbar) ** 2  # per polarization, e^2/amu (invariant within degenerate groups)
    v_prim = prim.volume
    # int alpha n d(wavenumber) [cm^-2] = |Zbar|^2 / (12 eps0 c^2 V_prim)
    to_cm2 = (sc.e**2 / sc.atomic_mass) / (12 * sc.epsilon_0 * sc.c**2 * v_prim * 1e-30) / 1e4
    ir_active = strength.sum(axis=0) > 1e-4 * strength.sum(axis=0).max()
    bands, silent = [], []
    f, a = total.freq_thz, total.columns["absorption"]
    groups = []
    for k in np.flatnonzero(ir_active):  # merge IR-active modes closer than 1 THz into one band
        if k < 3:
            continue
        if groups and w[k] - w[groups[-1][-1]] < 1.0:
            groups[-1].append(k)
        else:
            groups.append([k])
    for g in groups:
        sel = (f > w[g[0]] - 0.6) & (f < w[g[-1]] + 0.6)
        area = float(np.sum((a[sel][1:] + a[sel][:-1]) * np.diff(total.freq_cm1[sel])) / 2)
        peak = float(f[sel][np.argmax(a[sel])])
        expected = float(strength[:, g].sum() * to_cm2)
        strongest = g[int(np.argmax(strength[:, g].sum(axis=0)))]
        bands.append({"to_thz": [round(float(w[k]), 4) for k in g], "md_peak_thz": peak,
                      "peak_minus_strongest_to_thz": peak - float(w[strongest]),
                      "md_area_cm-2": area, "oscillator_area_cm-2": expected, "ratio": area / expected})
    for k in range(3, len(w)):  # IR-inactive Gamma modes away from every IR-active one
        if not ir_active[k] and np.all(np.abs(w[k] - w[ir_active]) > 3 * resolution):
            sel = np.abs(total.freq_thz - w[k]) < resolution
            silent.append({"thz": round(float(w[k]), 4),
                           "absorption_over_max": float(total.columns["absorption"][sel].max()
                                                        / total.columns["absorption"].max())})
    return {"timestep_fs": dt, "steps": steps, "resolution_thz": resolution, "md_seconds": round(md_s, 1),
            "bands": bands, "ir_inactive_modes": silent}, total


def plot(spectra, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(spectra), 1, figsize=(6.4, 1.7 * len(spectra)), sharex=True,
                             constrained_layout=True)
    for ax, (name, (spec, tos)) in zip(np.atleast_1d(axes), spectra.items()):
        ax.plot(spec.freq_thz, spec.columns["absorption"] / 1e3, lw=1, color="C0")
        for t in tos:
            ax.axvline(t, color="C3", lw=0.6, ls="--")
        ax.text(0.01, 0.8, name, transform=ax.transAxes)
        ax.set_ylabel(r"$\alpha n$ (10$^3$ cm$^{-1}$)", fontsize=8)
    ax.set_xlim(0, 25)
    ax.set_xlabel("frequency (THz); dashed: phonopy IR-active TO")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "phonopy_born")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for every output, plot included (default: benchmarks/results, plot in docs/img)")
    ap.add_argument("--quick", action="store_true", help="NaCl only, 4 ps")
    args = ap.parse_args(argv)
    figure = ROOT / "docs" / "img" / "spectra_crystals_ir.png" if args.out is None else args.out / "spectra_crystals_ir.png"
    args.out = ROOT / "benchmarks" / "results" if args.out is None else args.out
    if not (args.data / "NaCl.FORCE_SETS").is_file():
        print(f"phonopy data not found in {args.data}", file=sys.stderr)
        return 1
    results = {"static": {}, "relaxation": {}, "md": {}}
    spectra = {}
    for name in ("NaCl",) if args.quick else CRYSTALS:
        crystal = load(args.data, name)
        results["static"][name] = static_check(crystal, name)
        print(name, "LST", json.dumps(results["static"][name]["lst"]))
        if name in ("NaCl", "MgO"):
            results["relaxation"][name] = relax_check(crystal)
            results["relaxation"][name]["d_eps_zz_linear_solve"] = results["static"][name]["d_eps"][2][2]
            print(name, "relax", results["relaxation"][name])
        if name in MD_CRYSTALS:
            res, spec = md_check(crystal, name, duration_fs=4000.0 if args.quick else 20000.0)
            results["md"][name] = res
            spectra[name] = (spec, sorted({t for b in res["bands"] for t in b["to_thz"]}))
            for b in res["bands"]:
                print(name, b)
            print(name, "IR-inactive", res["ir_inactive_modes"])
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (args.out / f"spectra_validation{suffix}.json").write_text(json.dumps(results, indent=1))
    if not args.quick:
        plot(spectra, figure)
    (args.out / f"spectra_validation{suffix}.md").write_text(report(results))
    return 0


def report(r) -> str:
    lines = ["# Spectra validation on DFT harmonic crystals (benchmarks/spectra_validation.py)", "",
             "## Static field: linear solve Phi u = Z^T E vs Lyddane-Sachs-Teller (phonopy NAC frequencies)", "",
             "| crystal | q | prod w_NAC^2/w^2 | eps0/eps_inf (solve) | rel. diff |", "|---|---|---|---|---|"]
    for name, s in r["static"].items():
        for q, v in s["lst"].items():
            lines.append(f"| {name} | {q} | {v['prod_w_nac2_over_w2']:.5f} | {v['eps0_over_epsinf_linear_solve']:.5f}"
                         f" | {v['rel_diff']:.1e} |")
    lines += ["", "## Relaxation under E_z = 0.01 V/Angstrom (BFGS, FieldCalculator + HarmonicCalculator)", "",
              "| crystal | BFGS steps | d eps_zz relaxed | d eps_zz linear solve |", "|---|---|---|---|"]
    for name, v in r["relaxation"].items():
        lines.append(f"| {name} | {v['bfgs_steps']} | {v['d_eps_zz_relaxed']:.4f} | {v['d_eps_zz_linear_solve']:.4f} |")
    lines += ["", "## NVE MD (equipartition start, 300 K), current route with DFT Born charges", "",
              "| crystal | TO (THz) | MD peak (THz) | resolution | MD area | oscillator area | ratio |",
              "|---|---|---|---|---|---|---|"]
    for name, v in r["md"].items():
        for b in v["bands"]:
            lines.append(f"| {name} | {', '.join(f'{t:.3f}' for t in b['to_thz'])} | "
                         f"{b['md_peak_thz']:.3f} | {v['resolution_thz']:.3f} | {b['md_area_cm-2']:.4g} | "
                         f"{b['oscillator_area_cm-2']:.4g} | {b['ratio']:.3f} |")
    lines += ["", "Areas in cm^-2 (integral of alpha n over wavenumber). IR-inactive Gamma modes "
              "(absorption at their frequency / maximum):", ""]
    for name, v in r["md"].items():
        silent = ", ".join(f"{s['thz']:.2f} THz: {s['absorption_over_max']:.1e}" for s in v["ir_inactive_modes"])
        lines.append(f"- {name}: {silent or 'none apart from IR-active bands'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
