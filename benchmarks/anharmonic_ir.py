"""Anharmonic check (issue 27, item 4): NaCl's IR spectrum at 300 K from force-field MD beside the
harmonic one of the same force field and the same Born-charge model (docs/spectra.md, "Anharmonic
check: NaCl at 300 K").

1. Harmonic: ``--forcefield`` (default ``sevennet-0``) force constants in the 2x2x2 conventional
   supercell (64 atoms) of the DFT unit cell, not relaxed, and the NAC of ``--model``'s Born charges
   and eps_inf (default the shipped ``dielectric-v1``): Gamma TO and LO, as ``etgnn phonons MODEL
   --structure POSCAR --forcefield FF --supercell 2 2 2`` prints them. Then NVE MD of the 64-atom
   cell on those force constants (every mode started with k_B T): the harmonic spectrum, whose
   width is the resolution of the processing alone.
2. MD on the force field itself, same cell: Langevin NVT (``--nvt-ps``), then NVE velocity Verlet
   (``--nve-ps``, ``--timestep`` fs), every step written to ``OUT/nve.extxyz`` with momenta and
   ``time_fs``; a complete trajectory with the same settings is reused. NVE energy drift reported.
3. Both trajectories through the current route with the model's Born charges predicted for every
   frame and ``etgnn spectrum ir``'s defaults (the numbers of ``etgnn spectrum ir MODEL
   OUT/nve.extxyz --bec-target born_charges -o ir.csv``). A periodic cell has no macroscopic
   field, so its IR peak is the TO mode.
4. Peak position and FWHM: half-maximum crossings and a Lorentzian fit; the lifetime FWHM with the
   resolution removed (:func:`lifetime_width`); a damped cosine fitted to the current's
   autocorrelation as a cross-check; the same for each half of the runs.

    OMP_NUM_THREADS=1 python benchmarks/anharmonic_ir.py [--out /tmp/anharmonic_ir_nacl] [--results DIR]

Writes benchmarks/results/anharmonic_ir_nacl.{md,json} and docs/img/anharmonic_ir_nacl.png (with
``--results DIR`` all three there). About 25 minutes on one core (2250 force calls of 0.64 s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402
from _peaks import THZ_TO_CM1, correlation_fit, lifetime_width, lorentzian, measure_peak  # noqa: E402

POSCAR = ROOT.parent / "shared" / "data" / "phonopy_born" / "NaCl.POSCAR-unitcell"
NAME = "anharmonic_ir_nacl"
#: the TO peak is searched for in this window (cm^-1)
PEAK_WINDOW = (80.0, 260.0)


# ----------------------------------------------------------------------------- harmonic reference
def harmonic_phonons(unitcell, calc, model, log=print) -> dict:
    """Force-field force constants in the 2x2x2 supercell and Gamma TO/LO with the model's NAC
    (the Python route of ``etgnn phonons MODEL --structure ... --forcefield ... --supercell 2 2 2``)."""
    from etgnn.observables import forcefield as FF
    from etgnn.observables import phonons as P
    from etgnn.observables.born import predict_born, select_born_targets, to_ase_atoms

    t = time.time()
    ph = FF.forcefield_phonopy(unitcell, calc, supercell_matrix=np.diag([2, 2, 2]))
    bec, eps = select_born_targets(model.config.targets)
    born, epsilon = predict_born(model, to_ase_atoms(ph.primitive), bec, eps)
    params = P.nac_params(ph, born, epsilon)
    P.set_nac(ph, params)
    modes = P.gamma_modes(ph, (1.0, 0.0, 0.0))
    to = sorted(float(f) for f, c in zip(modes.frequencies, modes.labels) if c == "IR")
    lo = sorted(float(f) for f, c in zip(modes.nac_frequencies, modes.nac_labels) if c == "LO")
    prim = ph.primitive
    supercell_born = params["born"][[prim.p2p_map[i] for i in prim.s2p_map]]
    log(f"harmonic ({len(ph.supercells_with_displacements)} displacements, {time.time() - t:.0f} s): TO "
        f"{to[0]:.4f} THz = {to[0] * THZ_TO_CM1:.2f} cm^-1, LO {lo[0]:.4f} THz = {lo[0] * THZ_TO_CM1:.2f} cm^-1; "
        f"Z*({prim.symbols[0]}) = {params['born'][0][0, 0]:.3f}, eps_inf = {params['dielectric'][0, 0]:.3f}, "
        f"eps_0 = {modes.epsilon_static[0, 0]:.3f} (targets {bec}, {eps})")
    return {"phonopy": ph, "supercell": to_ase_atoms(ph.supercell), "supercell_born": supercell_born,
            "bec_target": bec, "eps_target": eps, "TO_THz": to, "LO_THz": lo,
            "Z": float(params["born"][0][0, 0]), "eps_inf": float(params["dielectric"][0, 0]),
            "eps_0": float(modes.epsilon_static[0, 0])}


# ----------------------------------------------------------------------------- MD
def _observer(atoms, label: str, dt: float, log, handle=None, every: int = 100):
    """Called at the start and after every MD step: appends the frame (positions, momenta, time_fs,
    potential and total energy) to ``handle`` if given, and logs every ``every`` steps."""
    from ase import Atoms
    from ase.io import write

    state = {"step": 0, "start": time.time()}

    def observe():
        n = state["step"]
        if handle is not None:
            epot = float(atoms.get_potential_energy())
            frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc, momenta=atoms.get_momenta())
            frame.info.update(time_fs=n * dt, epot_eV=epot, etot_eV=epot + float(atoms.get_kinetic_energy()))
            write(handle, frame, format="extxyz")
        if n % every == 0:
            log(f"  {label} step {n}  t = {n * dt:.0f} fs  T = {atoms.get_temperature():.0f} K  "
                f"{time.time() - state['start']:.0f} s")
        state["step"] += 1

    return observe


def run_md(atoms, calc, path: Path, settings: dict, log=print, nvt: bool = True, label: str = "NVE") -> dict:
    """Langevin NVT (``nvt``) then NVE velocity Verlet, the NVE part written to ``path``; reused
    when ``path`` and its ``.json`` record of the same ``settings`` exist (written on completion)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    record = path.with_suffix(".json")
    if path.is_file() and record.is_file() and json.loads(record.read_text()).get("settings") == settings:
        log(f"reusing {path} (complete, same settings)")
        return {**json.loads(record.read_text()), "reused": True}
    dt, temperature = settings["timestep_fs"], settings["temperature_K"]
    rng = np.random.default_rng(settings["seed"])
    atoms = atoms.copy()
    atoms.calc = calc
    info = {"settings": settings, "nvt_s": 0.0, "force_calls": 0}
    if nvt:
        t = time.time()
        thermalize_momenta(atoms, temperature, rng=rng)
        steps = int(round(settings["nvt_ps"] * 1000 / dt))
        dyn = Langevin(atoms, dt * units.fs, temperature_K=temperature, friction=settings["friction_per_fs"] / units.fs,
                       fixcm=False, rng=rng)
        dyn.attach(_observer(atoms, "NVT", dt, log), interval=1)
        dyn.run(steps)
        info.update(nvt_s=time.time() - t, force_calls=steps + 1)
    Stationary(atoms)  # no centre-of-mass drift in the NVE part
    steps = int(round(settings["nve_ps"] * 1000 / dt))
    partial = path.with_suffix(".extxyz.part")
    path.parent.mkdir(parents=True, exist_ok=True)
    t = time.time()
    with open(partial, "w") as fh:
        dyn = VelocityVerlet(atoms, dt * units.fs)
        dyn.attach(_observer(atoms, label, dt, log, fh, every=100 if nvt else 500), interval=1)
        dyn.run(steps)
    partial.replace(path)
    info.update(nve_s=time.time() - t, force_calls=info["force_calls"] + steps + 1)
    record.write_text(json.dumps(info, indent=1) + "\n")
    return info


def energy_drift(path: Path, n_atoms: int) -> dict:
    """Total-energy drift of the NVE frames: linear-fit slope, end minus start, rms about the fit."""
    from ase import units
    from ase.io import iread

    t, e = np.array([[f.info["time_fs"], f.info["etot_eV"]] for f in iread(path, index=":")]).T
    slope, icept = np.polyfit(t / 1000, e, 1)  # eV/ps
    change = slope * (t[-1] - t[0]) / 1000
    return {"slope_meV_per_atom_ps": 1000 * slope / n_atoms, "change_meV_per_atom": 1000 * change / n_atoms,
            "rms_meV_per_atom": 1000 * float(np.std(e - (slope * t / 1000 + icept))) / n_atoms,
            # the same change as a temperature (E = (3N - 3) k_B T for a harmonic crystal)
            "change_as_K": float(change / ((3 * n_atoms - 3) * units.kB)), "duration_ps": float((t[-1] - t[0]) / 1000)}


def harmonic_md(ref: dict, path: Path, settings: dict, log=print) -> None:
    """NVE MD on the force-field force constants, every mode started with k_B T (no NVT needed)."""
    from etgnn.observables.harmonic import HarmonicCalculator, thermalize_modes

    atoms = ref["supercell"].copy()
    fc = ref["phonopy"].force_constants
    thermalize_modes(atoms, fc, settings["temperature_K"], rng=np.random.default_rng(settings["seed"]),
                     born=ref["supercell_born"])
    run_md(atoms, HarmonicCalculator(fc, ref["supercell"]), path, settings, log, nvt=False, label="harmonic NVE")


# ----------------------------------------------------------------------------- spectra
def spectrum(series, broadening: float | None = None):
    """``etgnn spectrum ir``'s spectrum of a current series (its defaults; ``broadening``: a
    Lorentzian FWHM in cm^-1 on top, for :func:`lifetime_width`)."""
    from etgnn.observables.spectra import ir_spectrum

    dt = float(np.median(np.diff(series.times)))
    return ir_spectrum(series.values, dt, series.temperature, volume=series.volume, max_lag=(len(series.values) - 1) // 2,
                       broadening=broadening or None, shape="lorentzian")


def compare(harmonic, md) -> dict:
    """Spectra of a harmonic and an MD current series (same processing), their peaks, the MD's
    lifetime FWHM (:func:`lifetime_width`, the harmonic run as the resolution) and :func:`correlation_fit`."""
    sh, sm = spectrum(harmonic), spectrum(md)
    peak_h = measure_peak(sh.freq_cm1, sh.columns["absorption"], *PEAK_WINDOW)
    peak_m = measure_peak(sm.freq_cm1, sm.columns["absorption"], *PEAK_WINDOW)
    life = lifetime_width(lambda g: (sh.freq_cm1, spectrum(harmonic, g).columns["absorption"]), peak_m["fwhm"],
                          *PEAK_WINDOW)
    return {"harmonic": sh, "md": sm, "harmonic_peak": peak_h, "md_peak": peak_m, "lifetime_fwhm_cm1": life,
            "correlation_fit": correlation_fit(md, peak_m["fit_center"])}


def band_area(spec, lo: float = 0.0, hi: float = 400.0) -> float:
    """Integral of the absorption over [lo, hi] cm^-1, cm^-2."""
    sel = (spec.freq_cm1 >= lo) & (spec.freq_cm1 <= hi)
    return float(np.trapezoid(spec.columns["absorption"][sel], spec.freq_cm1[sel]))


def plot(md, harm, res: dict, path: Path, ff: str, model: str) -> Path:
    """Both spectra on a log scale (left) and normalised around the TO peak (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from etgnn.observables.phonon_bands import save_figure

    to, lo, p = res["harmonic"]["TO_cm1"], res["harmonic"]["LO_cm1"], res["md"]["peak"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for ax, absolute in zip(axes, (True, False)):
        for spec, key, style in ((harm, "harmonic", dict(color="0.35", ls="--", lw=1.1)), (md, "md", dict(color="tab:red", lw=1.3))):
            scale = 1.0 if absolute else 1.0 / res[key]["peak"]["height"]
            ax.plot(spec.freq_cm1, spec.columns["absorption"] * scale, label=res[key]["label"], **style)
        ax.axvline(to, color="tab:blue", ls=":", lw=1.0, label=f"harmonic TO {to:.1f} cm$^{{-1}}$")
        ax.axvline(lo, color="tab:green", ls=":", lw=1.0, label=f"harmonic LO {lo:.1f} cm$^{{-1}}$ (not in MD)")
        ax.set_xlabel("wavenumber (cm$^{-1}$)")
    x = np.linspace(p["fit_center"] - 3 * p["fit_fwhm"], p["fit_center"] + 3 * p["fit_fwhm"], 300)
    axes[1].plot(x, lorentzian(x, p["fit_height"], p["fit_center"], p["fit_fwhm"]) / p["height"], color="k", lw=0.7)
    axes[1].plot(p["halfmax"], [0.5, 0.5], "o-", color="tab:red", ms=3, lw=0.8)
    axes[0].set(yscale="log", xlim=(0, 400), ylim=(p["height"] * 1e-4, res["harmonic"]["peak"]["height"] * 3),
                ylabel=r"absorption $\alpha n$ (cm$^{-1}$)")
    axes[1].set(xlim=(to - 50, to + 50), ylim=(0, 1.1), ylabel="absorption / its peak",
                title=f"MD: FWHM {p['fwhm']:.1f} (dots), Lorentzian fit {p['fit_fwhm']:.1f} cm$^{{-1}}$ (thin)")
    axes[0].legend(fontsize=7, loc="upper right")
    axes[1].title.set_fontsize(8)
    fig.suptitle(f"NaCl, 64-atom cell, 300 K: {ff} forces, {model} Born charges, current route", fontsize=10)
    return save_figure(fig, path)


def markdown(res: dict, meta: dict) -> str:
    h, m, d, st, tm = res["harmonic"], res["md"], res["drift"], res["settings"], res["timing"]
    shift, c = m["peak"]["fit_center"] - h["TO_cm1"], m["correlation_fit"]
    half = {k: " and ".join(f"{x[k]:.2f}" for x in m["halves"]) for k in m["halves"][0]}
    rows = [("TO peak, Lorentzian fit", f"{h['peak']['fit_center']:.2f}", f"{m['peak']['fit_center']:.2f}",
             f"{shift:+.2f} ({100 * shift / h['TO_cm1']:+.2f} %)"),
            ("TO, dynamical matrix / damped-cosine fit to C(t)", f"{h['TO_cm1']:.2f}", f"{c['center']:.2f}", ""),
            ("highest grid point", f"{h['peak']['max_at']:.2f}", f"{m['peak']['max_at']:.2f}", ""),
            ("FWHM, half-maximum crossings", f"{h['peak']['fwhm']:.2f} (resolution)", f"{m['peak']['fwhm']:.2f}", ""),
            ("FWHM, Lorentzian fit", f"{h['peak']['fit_fwhm']:.2f}", f"{m['peak']['fit_fwhm']:.2f}", ""),
            ("lifetime FWHM, resolution removed", "0", f"{m['lifetime_fwhm_cm1']:.2f}", ""),
            ("lifetime FWHM, damped-cosine fit to C(t)", "0", f"{c['fwhm']:.2f}", ""),
            ("LO with NAC", f"{h['LO_cm1']:.2f}", "none (no macroscopic field)", ""),
            ("absorption area 0-400 cm^-1 (cm^-2)", f"{h['area_cm2']:.4g}", f"{m['area_cm2']:.4g}",
             f"ratio {m['area_cm2'] / h['area_cm2']:.3f}")]
    reused = " (trajectory reused; the time of the run that made it)" if tm["md_reused"] else ""
    lines = [f"# Anharmonic check: NaCl IR at {st['temperature_K']:.0f} K", "", _bench.header_line(meta),
             f"- command: `{res['command']}`",
             f"- force field `{res['forcefield']}`; Born charges and eps_inf from `{res['model']}` (file sha256 "
             f"{res['model_sha256']}..., targets `{h['bec_target']}`, `{h['eps_target']}`); DFT unit cell "
             f"{res['poscar']} (not relaxed), 64-atom supercell",
             f"- MD: Langevin NVT {st['nvt_ps']} ps (friction {st['friction_per_fs']}/fs), then NVE {st['nve_ps']} ps, "
             f"timestep {st['timestep_fs']} fs, every step a frame; kinetic T of the NVE part {m['temperature_K']:.1f} K "
             f"(harmonic run {h['temperature_K']:.1f} K); MD {tm['md_s'] / 60:.1f} min for {tm['force_calls']} force "
             f"calls ({tm['per_force_call_s']:.2f} s each){reused}; spectra of both runs {tm['spectra_s']:.0f} s", "",
             "| cm^-1 | harmonic (same force constants) | MD on the force field | MD - harmonic |", "|---|---|---|---|",
             *[f"| {' | '.join(r)} |" for r in rows], "",
             f"Halves of the runs ({st['nve_ps'] / 2:g} ps each): MD peak {half['fit_center']} cm^-1 (C(t) fit "
             f"{half['corr_center']}), half-maximum FWHM {half['fwhm']} (resolution {half['harmonic_fwhm']}), lifetime "
             f"FWHM {half['lifetime_fwhm_cm1']} (C(t) fit {half['corr_fwhm']}) cm^-1.", "",
             f"NVE energy drift: {d['slope_meV_per_atom_ps']:+.4f} meV/atom/ps, {d['change_meV_per_atom']:+.4f} meV/atom "
             f"over {d['duration_ps']:.1f} ps (as a temperature {d['change_as_K']:+.2f} K); rms about the linear fit "
             f"{d['rms_meV_per_atom']:.4f} meV/atom.", "",
             f"Grid {res['grid_cm1']:.2f} cm^-1, longest lag {res['max_lag_ps']:.2f} ps, Hann window. Harmonic: Z*(Na) = "
             f"{h['Z']:.3f} e, eps_inf = {h['eps_inf']:.3f}, eps_0 = {h['eps_0']:.3f}. Peak searched in "
             f"{PEAK_WINDOW[0]:.0f}-{PEAK_WINDOW[1]:.0f} cm^-1, Lorentzian fitted to the points above 25 % of the maximum; "
             "lifetime FWHM = the Lorentzian broadening that gives the harmonic run's peak the MD's half-maximum width. "
             "docs/spectra.md, 'Anharmonic check: NaCl at 300 K'."]
    return "\n".join(lines) + "\n"


def analyse(series: dict, ref: dict, drift: dict) -> dict:
    """Peaks, widths and areas of the harmonic and MD spectra, whole runs and halves."""
    full = compare(series["harmonic"], series["nve"])
    n = len(series["nve"].values)

    def part(x, a, b):  # frames a:b, the whole run's temperature and volume
        return SimpleNamespace(values=x.values[a:b], times=x.times[a:b], temperature=x.temperature, volume=x.volume)

    halves = [compare(part(series["harmonic"], a, b), part(series["nve"], a, b)) for a, b in ((0, n // 2 + 1), (n // 2, n))]
    harmonic = {k: ref[k] for k in ("bec_target", "eps_target", "Z", "eps_inf", "eps_0", "TO_THz", "LO_THz")}
    harmonic.update(TO_cm1=ref["TO_THz"][0] * THZ_TO_CM1, LO_cm1=ref["LO_THz"][0] * THZ_TO_CM1,
                    temperature_K=series["harmonic"].temperature, peak=full["harmonic_peak"],
                    area_cm2=band_area(full["harmonic"]), label="harmonic: same force constants, NVE")
    md = {"temperature_K": series["nve"].temperature, "peak": full["md_peak"], "area_cm2": band_area(full["md"]),
          "lifetime_fwhm_cm1": full["lifetime_fwhm_cm1"], "correlation_fit": full["correlation_fit"],
          "label": "MD on the force field, NVE after NVT",
          "halves": [{"fit_center": x["md_peak"]["fit_center"], "fwhm": x["md_peak"]["fwhm"],
                      "harmonic_fwhm": x["harmonic_peak"]["fwhm"], "lifetime_fwhm_cm1": x["lifetime_fwhm_cm1"],
                      "corr_center": x["correlation_fit"]["center"], "corr_fwhm": x["correlation_fit"]["fwhm"]}
                     for x in halves]}
    return {"grid_cm1": float(full["md"].freq_cm1[1]),
            "max_lag_ps": (n - 1) // 2 * float(np.median(np.diff(series["nve"].times))) / 1000,
            "harmonic": harmonic, "md": md, "drift": drift, "_spectra": (full["md"], full["harmonic"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/anharmonic_ir_nacl"), help="trajectories (not committed)")
    ap.add_argument("--results", type=Path, help="md, json and png here (default: benchmarks/results, docs/img)")
    ap.add_argument("--poscar", type=Path, default=POSCAR)
    ap.add_argument("--forcefield", default="sevennet-0")
    ap.add_argument("--model", default="dielectric-v1")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--timestep", type=float, default=4.0, help="fs")
    ap.add_argument("--nvt-ps", type=float, default=1.0)
    ap.add_argument("--nve-ps", type=float, default=8.0)
    ap.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.poscar.is_file():
        print(f"skipped: {args.poscar} not found (the shared phonopy_born data, see ../shared/data/README)")
        return 0
    import torch
    from ase.io import read

    import etgnn
    from etgnn.observables.forcefield import load_force_field
    from etgnn.observables.timeseries import predict_series
    from etgnn.pretrained import is_model_name, model_path

    torch.set_num_threads(1)
    meta = _bench.machine(threads=1)
    calc = load_force_field(args.forcefield)
    model = etgnn.load_model(args.model)
    model_file = model_path(args.model) if is_model_name(args.model) else Path(args.model)
    ref = harmonic_phonons(read(args.poscar, format="vasp"), calc, model)
    settings = {"forcefield": args.forcefield, "poscar": str(args.poscar.resolve()), "temperature_K": args.temperature,
                "timestep_fs": args.timestep, "nvt_ps": args.nvt_ps, "nve_ps": args.nve_ps,
                "friction_per_fs": args.friction, "seed": args.seed}
    harmonic_md(ref, args.out / "harmonic.extxyz", {**settings, "nvt_ps": 0.0, "forcefield": f"harmonic {args.forcefield}"})
    info = run_md(ref["supercell"], calc, args.out / "nve.extxyz", settings)
    drift = energy_drift(args.out / "nve.extxyz", len(ref["supercell"]))
    print(f"NVE energy drift {drift['change_meV_per_atom']:+.4f} meV/atom over {drift['duration_ps']:.1f} ps "
          f"({drift['change_as_K']:+.2f} K), rms {drift['rms_meV_per_atom']:.4f} meV/atom")
    t = time.time()
    series = {k: predict_series(model, args.out / f"{k}.extxyz", "current", ref["bec_target"], progress=False)
              for k in ("harmonic", "nve")}
    res = analyse(series, ref, drift)
    md_spec, harmonic_spec = res.pop("_spectra")
    md_s = info["nvt_s"] + info["nve_s"]
    res.update(command=" ".join(["OMP_NUM_THREADS=1 python benchmarks/anharmonic_ir.py", *(sys.argv[1:] if argv is None else argv)]),
               poscar=args.poscar.name, forcefield=args.forcefield, model=args.model, settings=settings,
               model_sha256=hashlib.sha256(model_file.read_bytes()).hexdigest()[:16],
               timing={"md_s": md_s, "force_calls": info["force_calls"], "per_force_call_s": md_s / info["force_calls"],
                       "md_reused": info.get("reused", False), "spectra_s": time.time() - t})
    meta["loadavg_end"] = _bench.load_average()
    res["machine"] = meta
    h, m = res["harmonic"], res["md"]
    print(f"TO {h['TO_cm1']:.2f} cm^-1, LO {h['LO_cm1']:.2f} cm^-1 (harmonic run: peak {h['peak']['fit_center']:.2f}, "
          f"FWHM {h['peak']['fwhm']:.2f}); MD: peak {m['peak']['fit_center']:.2f} cm^-1 "
          f"({m['peak']['fit_center'] - h['TO_cm1']:+.2f}), FWHM {m['peak']['fwhm']:.2f} (Lorentzian fit "
          f"{m['peak']['fit_fwhm']:.2f}, lifetime {m['lifetime_fwhm_cm1']:.2f}) cm^-1")
    figure = (args.results or ROOT / "docs" / "img") / f"{NAME}.png"
    print(f"figure {plot(md_spec, harmonic_spec, res, figure, args.forcefield, args.model)}")
    for f in _bench.write_results(args.results or _bench.RESULTS, NAME, res, markdown(res, meta)):
        print(f"written {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
