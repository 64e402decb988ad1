"""Force-field force constants against DFT: TO/LO frequencies and eps_0 of seven crystals.

For the crystals of ``../shared/data/phonopy_born`` with DFT supercell forces (NaCl, MgO, ZnO,
SnO2, Al2O3, TiO2 anatase, SiO2 high-pressure), Gamma phonons and the static dielectric tensor from

  (a) DFT force constants + DFT BORN (the reference),
  (b) force-field force constants + DFT BORN,
  (c) force-field force constants + the Born charges and eps_inf a model predicts (``--model``;
      skipped without one),

for every force field given (default: every one installed, :data:`etgnn.observables.forcefield.FORCE_FIELDS`)
and every geometry given:

  dft        the DFT unit cell and phonopy's own DFT displacements (same supercell, same atoms moved);
  relax-pos  atoms relaxed with the force field in the DFT cell (space group kept), then displaced;
  relax-cell atoms and cell relaxed with the force field (space group kept), then displaced.

Born charges (DFT BORN or predicted) are symmetrised with the acoustic sum rule exact, in every case.
Errors: TO = IR-active Gamma modes without NAC, LO = modes the NAC shifts along x and z (q -> 0),
compared rank by rank within each set; relative errors |f - f_DFT| / f_DFT; eps_0 = diagonal.
Forces are cached (``--cache``) so that a second run (e.g. with ``--model``) costs no force calls.

    python benchmarks/forcefield_phonons.py [--forcefields sevennet-mf-0 chgnet-0.3.0] \
        [--geometries dft relax-pos relax-cell] [--model CKPT] [--data ../shared/data/phonopy_born]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from etgnn.observables import dielectric as D  # noqa: E402
from etgnn.observables import forcefield as FF  # noqa: E402
from etgnn.observables import phonons as P  # noqa: E402
from etgnn.observables.born import to_ase_atoms, to_phonopy_atoms  # noqa: E402

CRYSTALS = ["NaCl", "MgO", "ZnO", "SnO2", "Al2O3", "TiO2-anatase", "SiO2-HP"]
DIRECTIONS = {"x": (1.0, 0.0, 0.0), "z": (0.0, 0.0, 1.0)}
GEOMETRIES = ("dft", "relax-pos", "relax-cell")


class _LazyCalculator:
    """The force field's ASE calculator, loaded when first needed."""

    def __init__(self, name: str, log):
        self.name, self.log, self._calc = name, log, None

    def __getattr__(self, attr):
        if self._calc is None:
            t = time.time()
            self._calc = FF.load_force_field(self.name)
            self.log(f"{self.name} loaded in {time.time() - t:.0f} s")
        return getattr(self._calc, attr)


def load_dft(data: Path, name: str):
    import phonopy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return phonopy.load(data / f"{name}.phonopy_disp.yaml", force_sets_filename=data / f"{name}.FORCE_SETS",
                            is_nac=False, log_level=0)


def born_params(ph, data: Path, name: str, model=None):
    """Symmetrised NAC parameters: the DFT BORN file, or the model's prediction for ph.primitive."""
    if model is None:
        raw = P.read_born(data / f"{name}.BORN", ph)
        return P.nac_params(ph, raw["born"], raw["dielectric"], raw["factor"])
    from etgnn.observables.born import predict_born

    born, eps = predict_born(model, to_ase_atoms(ph.primitive))
    return P.nac_params(ph, born, eps)


def observables(ph, params) -> dict:
    """TO (IR-active, no NAC), LO along x and z, all optical frequencies, eps_0 diagonal."""
    P.set_nac(ph, params)
    out = {}
    for label, direction in DIRECTIONS.items():
        modes = P.gamma_modes(ph, direction)
        out[f"LO_{label}"] = sorted(float(f) for f, c in zip(modes.nac_frequencies, modes.nac_labels) if c == "LO")
    out["TO"] = sorted(float(f) for f, c in zip(modes.frequencies, modes.labels) if c == "IR")
    out["optical"] = sorted(float(f) for f, c in zip(modes.frequencies, modes.labels) if c != "acoustic")
    out["eps0"] = [float(x) for x in np.diag(modes.epsilon_static)]
    out["eps_inf"] = [float(x) for x in np.diag(params["dielectric"])]
    out["_modes"] = modes
    return out


def rel_errors(test: dict, ref: dict) -> dict:
    """Rank-by-rank relative errors of each set (None when the counts differ)."""
    out = {}
    for key in ("TO", "LO_x", "LO_z", "optical", "eps0"):
        a, b = np.asarray(test[key]), np.asarray(ref[key])
        out[key] = None if a.shape != b.shape or not len(b) else [float(x) for x in (a - b) / np.abs(b)]
    return out


def mare(errors: dict, keys) -> float | None:
    vals = [abs(x) for k in keys if errors.get(k) for x in errors[k]]
    return float(np.mean(vals)) if vals else None


def ff_phonopy(ref_ph, atoms, calc, cache: Path, key: str, log):
    """Phonopy on ``atoms`` with the DFT supercell/primitive matrices; forces cached in ``cache/key.npz``."""
    from phonopy import Phonopy

    same = np.allclose(atoms.cell, ref_ph.unitcell.cell) and np.allclose(atoms.get_scaled_positions(),
                                                                         ref_ph.unitcell.scaled_positions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph = Phonopy(to_phonopy_atoms(atoms), supercell_matrix=ref_ph.supercell_matrix,
                     primitive_matrix=ref_ph.primitive_matrix, symprec=1e-5)
    if same:
        ph.dataset = ref_ph.dataset  # phonopy's own DFT displacements
    else:
        ph.generate_displacements(distance=0.01)
    path = cache / f"{key}.npz"
    if path.is_file():
        forces = np.load(path)["forces"]
    else:
        t = time.time()

        def f(cell):
            sc = to_ase_atoms(cell)
            sc.calc = calc
            return np.asarray(sc.get_forces(), dtype=float)

        residual = f(ph.supercell)
        forces = np.stack([f(c) - residual for c in ph.supercells_with_displacements])
        np.savez(path, forces=forces)
        log(f"    {key}: {len(forces) + 1} force calls on {len(ph.supercell)} atoms, {time.time() - t:.0f} s")
    ph.forces = forces
    ph.produce_force_constants()
    return ph


def relaxed(atoms, calc, cell: bool, cache: Path, key: str, log):
    from ase.io import read, write

    path = cache / f"{key}.vasp"
    if path.is_file():
        return read(path, format="vasp"), json.loads((cache / f"{key}.json").read_text())
    r = FF.relax(atoms, calc, fmax=1e-3, cell=cell)
    info = {"steps": r.steps, "fmax": r.fmax, "converged": r.converged, "spacegroup": [r.spacegroup_before, r.spacegroup_after],
            "volume_change": float(r.atoms.get_volume() / atoms.get_volume() - 1)}
    write(path, r.atoms, format="vasp", direct=True)
    (cache / f"{key}.json").write_text(json.dumps(info))
    log(f"    {key}: relaxed in {r.steps} steps, volume {100 * info['volume_change']:+.2f} %, {r.spacegroup_after}")
    return r.atoms, info


def spectrum(result: dict, volume: float, grid) -> dict:
    modes = result["_modes"]
    nu_m, omega, inten = D.mode_oscillators(modes, volume, D.NAC_FACTOR)
    eps_inf = np.diag(result["eps_inf"])
    return D.spectra(grid, eps_inf, nu_m, omega, inten, DIRECTIONS, 0.1, 0.3)


def plot(figdata: dict, path: Path, ff_name: str, geometry: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(figdata)
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 2.0 * len(names)), dpi=100)
    axes = np.atleast_2d(axes)
    styles = {"a": dict(color="k", lw=1.2, label="(a) DFT FC + DFT BORN"),
              "b": dict(color="tab:red", lw=1.0, ls="--", label=f"(b) {ff_name} FC + DFT BORN"),
              "c": dict(color="tab:blue", lw=1.0, ls=":", label=f"(c) {ff_name} FC + model")}
    for row, name in enumerate(names):
        for case, spec in figdata[name].items():
            axes[row, 0].plot(spec["freq_THz"], spec["reflectivity_x"], **styles[case])
            axes[row, 1].plot(spec["freq_THz"], spec["ir_absorption"], **styles[case])
        axes[row, 0].set_ylabel(f"{name}\nR (E || x)", fontsize=8)
        axes[row, 1].set_ylabel("IR abs.", fontsize=8)
        axes[row, 0].set_ylim(0, 1.02)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("frequency (THz)")
    axes[-1, 1].set_xlabel("frequency (THz)")
    fig.suptitle(f"Reflectivity and IR absorption, force field {ff_name}, geometry {geometry}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "phonopy_born"))
    ap.add_argument("--forcefields", nargs="+", help="default: every packaged force field installed")
    ap.add_argument("--geometries", nargs="+", default=["dft"], choices=GEOMETRIES)
    ap.add_argument("--relax-forcefields", nargs="+", metavar="NAME",
                    help="run the relaxed geometries only for these force fields (default: every one)")
    ap.add_argument("--crystals", nargs="+", default=CRYSTALS)
    ap.add_argument("--model", help="etgnn checkpoint predicting Born charges and eps_inf, for (c)")
    ap.add_argument("--cache", default="/tmp/etgnn_forcefield_cache")
    ap.add_argument("--note", action="append", default=[], help="a paragraph for the report (repeatable)")
    ap.add_argument("--plot-forcefield", help="force field of the spectra figure (default: the first)")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results" / "forcefield_phonons"))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared CPU more threads were 10x slower, not faster)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    data, cache = Path(args.data), Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    names = args.forcefields or FF.available_force_fields()
    model = None
    if args.model:
        from etgnn import load_model

        model = load_model(args.model)

    def log(msg):
        print(msg, flush=True)

    t0 = time.time()
    refs = {}
    for name in args.crystals:
        ph = load_dft(data, name)
        refs[name] = (ph, observables(ph, born_params(ph, data, name)))
    results = []
    figdata = {}
    plot_ff = args.plot_forcefield or names[0]
    for ff_name in names:
        calc = _LazyCalculator(ff_name, log)  # loaded at the first force call (none when all are cached)
        for geometry in args.geometries:
            if geometry != "dft" and args.relax_forcefields and ff_name not in args.relax_forcefields:
                continue
            for name in args.crystals:
                ref_ph, ref = refs[name]
                atoms = to_ase_atoms(ref_ph.unitcell)
                info = None
                if geometry != "dft":
                    atoms, info = relaxed(atoms, calc, geometry == "relax-cell", cache, f"{name}_{ff_name}_{geometry}", log)
                ph = ff_phonopy(ref_ph, atoms, calc, cache, f"{name}_{ff_name}_{geometry}", log)
                row = {"crystal": name, "forcefield": ff_name, "geometry": geometry, "relax": info,
                       "reference": {k: v for k, v in ref.items() if not k.startswith("_")}}
                cases = {"b": born_params(ph, data, name)}
                if model is not None:
                    cases["c"] = born_params(ph, data, name, model)
                for case, params in cases.items():
                    obs = observables(ph, params)
                    err = rel_errors(obs, ref)
                    row[case] = {**{k: v for k, v in obs.items() if not k.startswith("_")}, "rel_errors": err,
                                 "mare_TO_LO": mare(err, ("TO", "LO_x", "LO_z")), "mare_optical": mare(err, ("optical",)),
                                 "max_eps0_error": max(abs(x) for x in err["eps0"]) if err["eps0"] else None,
                                 "imaginary_optical": int(sum(f < -0.05 for f in obs["optical"]))}
                    if ff_name == plot_ff and geometry == args.geometries[0]:
                        grid = np.linspace(0, 1.25 * max(ref["LO_x"] + ref["LO_z"] + ref["optical"]), 1500)
                        figdata.setdefault(name, {"a": spectrum(ref, ref_ph.primitive.volume, grid)})
                        figdata[name][case] = spectrum(obs, ph.primitive.volume, grid)
                results.append(row)
                b = row["b"]
                log(f"  {ff_name:22s} {geometry:10s} {name:13s} (b) MARE TO+LO {100 * b['mare_TO_LO']:5.1f} %  "
                    f"optical {100 * b['mare_optical']:5.1f} %  eps0 {100 * b['max_eps0_error']:5.1f} %"
                    + (f"  (c) TO+LO {100 * row['c']['mare_TO_LO']:5.1f} % eps0 {100 * row['c']['max_eps0_error']:5.1f} %"
                       if "c" in row else ""))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/forcefield_phonons.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()} {platform.processor() or ''} "
            f"{_cpu_model()}, {os.cpu_count()} CPUs (shared), torch threads {args.threads}".strip(),
            "python": platform.python_version(), "packages": _versions(), "model": args.model,
            "seconds": round(time.time() - t0), "notes": args.note}
    json.dump({"meta": meta, "results": results}, open(out.with_suffix(".json"), "w"), indent=1)
    if figdata:
        plot(figdata, out.with_suffix(".png"), plot_ff, args.geometries[0])
    out.with_suffix(".md").write_text(report(meta, results))
    log(f"written {out.with_suffix('.md')}, .json{', .png' if figdata else ''} in {time.time() - t0:.0f} s")
    return 0


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("etgnn", "phonopy", "torch", "sevenn", "chgnet", "ase"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _freqs(values) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "-"


def report(meta: dict, results: list) -> str:
    lines = ["# Force-field force constants against DFT: Gamma TO/LO frequencies and eps_0", "",
             f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}; {meta['seconds']} s). "
             f"Packages: {', '.join(f'{k} {v}' for k, v in meta['packages'].items())}."
             + (f" Model for (c): `{meta['model']}`." if meta["model"] else " No model given: case (c) not run."), "",
             *[line for note in meta.get("notes", []) for line in (note, "")],
             "Cases: (a) DFT force constants + DFT BORN (reference), (b) force-field force constants + DFT BORN, "
             "(c) force-field force constants + predicted Born charges and eps_inf. Geometry `dft`: the DFT unit cell "
             "and phonopy's own DFT displacements; `relax-pos`: atoms relaxed with the force field in the DFT cell; "
             "`relax-cell`: atoms and cell relaxed (space group kept). Born charges symmetrised, acoustic sum rule exact. "
             "TO = IR-active Gamma modes without NAC; LO = modes shifted by the NAC for q -> 0 along x and z; "
             "MARE = mean absolute relative error over TO, LO_x and LO_z (rank by rank); `optical` = every optical "
             "Gamma mode without NAC (IR-inactive ones too); eps_0 = largest relative error of the diagonal.", ""]
    cases = [c for c in ("b", "c") if any(c in r for r in results)]
    keys = sorted({(r["forcefield"], r["geometry"]) for r in results}, key=lambda k: (GEOMETRIES.index(k[1]), k[0]))
    lines += ["## Summary (mean over the crystals)", "",
              "| force field | geometry | case | MARE TO+LO % | MARE optical % | max eps_0 error % (mean) | crystals with imaginary optical modes |",
              "|---|---|---|---|---|---|---|"]
    for ff_name, geometry in keys:
        rows = [r for r in results if r["forcefield"] == ff_name and r["geometry"] == geometry]
        for c in cases:
            vals = [r[c] for r in rows if c in r]
            m = [v["mare_TO_LO"] for v in vals if v["mare_TO_LO"] is not None]
            o = [v["mare_optical"] for v in vals if v["mare_optical"] is not None]
            e = [v["max_eps0_error"] for v in vals if v["max_eps0_error"] is not None]
            img = sum(v["imaginary_optical"] > 0 for v in vals)
            lines.append(f"| {ff_name} | {geometry} | ({c}) | {_pct(np.mean(m) if m else None)} | "
                         f"{_pct(np.mean(o) if o else None)} | {_pct(np.mean(e) if e else None)} | {img} of {len(vals)} |")
    lines += ["", "## Per crystal", "",
              "| crystal | force field | geometry | case | TO (THz) | LO x | LO z | eps_0 diag | MARE TO+LO % | eps_0 err % |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["crystal"] for r in results):
        ref = next(r["reference"] for r in results if r["crystal"] == name)
        lines.append(f"| {name} | DFT | - | (a) | {_freqs(ref['TO'])} | {_freqs(ref['LO_x'])} | {_freqs(ref['LO_z'])} | "
                     f"{_freqs(ref['eps0'])} | - | - |")
        for r in results:
            if r["crystal"] != name:
                continue
            for c in cases:
                if c in r:
                    v = r[c]
                    lines.append(f"| {name} | {r['forcefield']} | {r['geometry']} | ({c}) | {_freqs(v['TO'])} | "
                                 f"{_freqs(v['LO_x'])} | {_freqs(v['LO_z'])} | {_freqs(v['eps0'])} | "
                                 f"{_pct(v['mare_TO_LO'])} | {_pct(v['max_eps0_error'])} |")
    lines += ["", "Per-mode relative errors are in the JSON file beside this one (`rel_errors`)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
