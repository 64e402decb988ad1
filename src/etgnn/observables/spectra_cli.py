"""``etgnn spectrum ir`` / ``etgnn spectrum raman``: spectra of an MD trajectory from a model's tensors."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

__all__ = ["add_parser"]

_IR_HELP = """\
IR absorption of the MD trajectory TRAJ (any file ase.io reads: extxyz with velocities or
momenta, ASE .traj; etgnn:examples_data/water_trajectory.extxyz is shipped), from the tensors
the model CHECKPOINT predicts for each frame, streamed in chunks of --batch-size frames (memory
flat in atoms x frames). The time between frames is --timestep, or the frames' time_fs.

Routes:
  current  J(t) = V dP/dt = sum_k Z*_k v_k from the predicted Born charges (per-atom rank-2
           target, e) and the velocities: crystals and molecules, no polarization quantum.
  dipole   J(t) = d mu/dt by central differences of the predicted dipole (structure rank-1
           target, e*Angstrom): molecules and clusters; use a short --timestep.

Output CSV columns: freq_cm1, freq_THz, absorption (crystal: alpha(w) n(w) in cm^-1; molecule:
molar cross section N_A sigma in (km/mol)/cm^-1, whose integral over a band in cm^-1 is the band
intensity in km/mol), current_psd ((e*Angstrom/fs)^2/THz). Prefactor: alpha n = F(w) J-spectrum
/(6 c V eps0 k_B T), F = 1 for --quantum-correction harmonic (the classical formula, exact for
harmonic systems). T is --temperature, or the kinetic temperature of the velocities over the
internal degrees of freedom (3N - 3 for a crystal, 3N - 6 for a molecule, 3N - 5 if linear;
centre-of-mass motion and rotation removed); give --temperature if other constraints held.
Conventions and derivations: docs/spectra.md.
"""

_RAMAN_HELP = """\
Raman spectra of the MD trajectory TRAJ from the predicted polarizability (structure rank-2
target; eps works too): isotropic a = tr(alpha)/3 and anisotropic (traceless) parts, polarized
I_VV = S_a + (2/15) S_aniso and depolarized I_VH = S_aniso/10 (isotropic average). With
--temperature the spectra are multiplied by the quantum correction (harmonic: hbar w/kT (n(w)+1),
the Stokes line shape); the laser factor (w_L - w)^4 is not applied. Output CSV: freq_cm1,
freq_THz, isotropic, anisotropic, polarized, depolarized, in (target unit)^2/THz (the unit the
polarizability target declares, e.g. (Angstrom^3)^2/THz; the plot's axis says it).
"""


def _common(p) -> None:
    from .spectra import BROADENINGS, NORMALIZATIONS, QUANTUM_CORRECTIONS, WINDOWS
    from .timeseries import VELOCITY_UNITS

    from .._paths import input_path

    p.add_argument("checkpoint", metavar="CHECKPOINT", type=input_path,
                   help="best.ckpt / last.ckpt or a saved model")
    p.add_argument("trajectory", metavar="TRAJ", type=input_path,
                   help="MD trajectory, equally spaced frames (etgnn:PATH for a file shipped with etgnn)")
    p.add_argument("--timestep", type=float, default=None, metavar="FS",
                   help="time between frames, fs (default: from the frames' time_fs; required without it)")
    p.add_argument("-o", "--output", required=True, metavar="CSV", help="spectrum as CSV (overwritten)")
    p.add_argument("--plot", metavar="PNG", help="also plot the spectrum here")
    p.add_argument("--window", default="hann", choices=WINDOWS, help="lag window (default hann)")
    p.add_argument("--broadening", type=float, default=None, metavar="CM1", help="line FWHM in cm^-1")
    p.add_argument("--line-shape", default="gaussian", choices=BROADENINGS, help="broadening line shape")
    p.add_argument("--max-lag", type=float, default=None, metavar="FS",
                   help="longest correlation time in fs (default: half the trajectory)")
    p.add_argument("--normalization", default="unbiased", choices=NORMALIZATIONS,
                   help="autocorrelation normalisation (default unbiased)")
    p.add_argument("--quantum-correction", default="harmonic", choices=QUANTUM_CORRECTIONS,
                   help="quantum correction factor of the classical spectrum (default harmonic)")
    p.add_argument("--velocity-unit", default="ase", choices=VELOCITY_UNITS,
                   help="unit of a 'velocities' array (momenta are always ASE units)")
    p.add_argument("--index", default=":", help="frames to use, ase.io slice syntax (default ':')")
    p.add_argument("--format", default=None, metavar="F", help="trajectory format (default: from the name)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="frames per prediction chunk")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown only on a terminal)")
    p.add_argument("--uncertainty", action="store_true",
                   help="band of spectra from posterior samples of the model (needs etgnn calibrate): "
                        "<column>_p16 and <column>_p84 in the CSV, shaded in the plot (docs/uncertainty.md)")
    p.add_argument("--samples", type=int, default=32, metavar="N", help="posterior samples with --uncertainty (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior samples (default 0)")


def add_parser(subparsers) -> None:
    """Register ``spectrum ir`` and ``spectrum raman``."""
    top = subparsers.add_parser("spectrum", help="IR / Raman spectra of an MD trajectory",
                                description="IR and Raman spectra of an MD trajectory from predicted tensors.")
    sub = top.add_subparsers(dest="spectrum", metavar="KIND")
    top.set_defaults(func=lambda args: top.print_help() or 2)

    p = sub.add_parser("ir", help="IR absorption (current or dipole route)", description=_IR_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--route", default="current", choices=["current", "dipole"], help="default current")
    p.add_argument("--bec-target", default=None, metavar="NAME", help="Born-charge target (current route)")
    p.add_argument("--dipole-target", default=None, metavar="NAME", help="dipole target (dipole route)")
    p.add_argument("--temperature", type=float, default=None, metavar="K",
                   help="temperature of the prefactor (default: the trajectory's kinetic temperature)")
    p.set_defaults(func=_ir)

    p = sub.add_parser("raman", help="polarized / depolarized Raman", description=_RAMAN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--alpha-target", default=None, metavar="NAME", help="polarizability target")
    p.add_argument("--temperature", type=float, default=None, metavar="K",
                   help="apply the quantum correction at this temperature")
    p.set_defaults(func=_raman)


#: fewest frames a spectrum is computed from (a correlation up to lag 1, a central difference)
MIN_FRAMES = 3


def _check_options(args) -> None:
    """Numbers given on the command line, before anything is loaded."""
    from ..errors import ConfigError

    for flag, value in (("--timestep", args.timestep), ("--max-lag", args.max_lag),
                        ("--broadening", args.broadening), ("--temperature", args.temperature)):
        if value is not None and not (np.isfinite(value) and value > 0):
            unit = {"--broadening": "cm^-1", "--temperature": "K"}.get(flag, "fs")
            raise ConfigError(f"{flag} must be a finite number > 0 {unit}, got {value}")


def _timestep(args, series) -> float:
    """The time between frames: --timestep, checked against the frames' time_fs when they have it."""
    from ..errors import ConfigError, DataError

    if series.times is None:
        if args.timestep is None:
            raise ConfigError(f"{args.trajectory}: the frames carry no time_fs, so the time between them is "
                              "unknown: give --timestep FS")
        return args.timestep
    steps = np.diff(series.times)
    dt = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - dt) > 1e-6 * abs(dt))
    if not dt > 0 or bad.size:
        k = int(bad[0]) if bad.size else 0
        raise DataError(f"{args.trajectory}: frames {k} and {k + 1} (after --index {args.index}) are "
                        f"{steps[k]:g} fs apart by their time_fs, but a spectrum needs equally spaced frames "
                        f"in increasing time (median spacing {dt:g} fs)")
    if args.timestep is not None and abs(args.timestep - dt) > 1e-6 * dt:
        raise ConfigError(f"--timestep {args.timestep:g} fs, but the frames of {args.trajectory} are {dt:g} fs "
                          "apart by their time_fs (after --index); leave --timestep out to use the file's")
    return dt


def _series(args, kind, target):
    from ..errors import ConfigError, DataError
    from ..model import load_model
    from ..pretrained import is_model_name
    from ..train.ddp import resolve_device
    from .timeseries import predict_series

    _check_options(args)
    if not is_model_name(args.checkpoint) and not Path(args.checkpoint).is_file():
        raise ConfigError(f"checkpoint not found: {args.checkpoint}")
    model = load_model(args.checkpoint, map_location=resolve_device(args.device))
    if args.uncertainty:
        from ..uncertainty.sampling import SampledPredictor, describe_samples

        if model.uncertainty is None:
            raise ConfigError(f"--uncertainty: {args.checkpoint} has no uncertainty; add it with `etgnn calibrate`")
        if args.samples < 2:
            raise ConfigError(f"--samples must be >= 2 for a band, got {args.samples}")
        args.samples_from = describe_samples(model, args.samples)
        model = SampledPredictor(model, args.samples, args.seed)  # values get a sample axis: prediction, samples
    progress = False if args.no_progress else None
    series = predict_series(model, args.trajectory, kind, target, batch_size=args.batch_size,
                            velocity_unit=args.velocity_unit, index=args.index, fmt=args.format,
                            progress=progress)
    n = len(series.values)
    if n < MIN_FRAMES:
        raise DataError(f"{args.trajectory}: {n} frame{'s' if n > 1 else ''} (--index {args.index}); a spectrum "
                        f"needs at least {MIN_FRAMES} equally spaced frames, and resolves 1/(the time they span)")
    dt = _timestep(args, series)
    max_lag = (n - 1) // 2 if args.max_lag is None else int(round(args.max_lag / dt))
    if not 0 < max_lag < n:
        raise ConfigError(f"--max-lag {args.max_lag:g} fs is {max_lag} frames of {dt:g} fs; it must be between 1 and "
                          f"{n - 1} frames ({(n - 1) * dt:g} fs) for this trajectory")
    return series, max_lag, dt


def peaks(spec, column: str, prominence: float = 0.05, most: int = 8) -> np.ndarray:
    """Indices of the peaks of ``spec.columns[column]`` with a prominence above ``prominence`` x its
    maximum, strongest first (at most ``most``; the zero-frequency point is never one)."""
    from scipy.signal import find_peaks

    y = np.asarray(spec.columns[column], dtype=float)
    k, props = find_peaks(y, prominence=prominence * max(y[1:].max(), 0.0) if len(y) > 1 else 0.0)
    order = np.argsort(props["prominences"])[::-1]
    return k[order][:most]


def _finish(args, spec, column: str, dt: float) -> int:
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    spec.to_csv(args.output)
    k = spec.columns[column][1:].argmax() + 1
    found = sorted(peaks(spec, column), key=lambda i: spec.freq_thz[i])
    listing = ", ".join(f"{spec.freq_cm1[i]:.0f}" for i in found)
    print(f"{spec.meta['frames']} frames {dt:g} fs apart; strongest {column} peak at {spec.freq_cm1[k]:.1f} cm^-1 "
          f"({spec.freq_thz[k]:.3f} THz); peaks above 5 % of it at {listing} cm^-1; spectrum written to {args.output}")
    if args.plot:
        _plot(spec, args.plot, Path(args.trajectory).name)
        print(f"plot written to {args.plot}")
    return 0


def _ir(args) -> int:
    from ..errors import ConfigError, DataError
    from .spectra import dipole_current, ir_spectrum

    kind, target = ("current", args.bec_target) if args.route == "current" else ("dipole", args.dipole_target)
    series, max_lag, dt = _series(args, kind, target)
    if args.temperature is not None:
        temperature, how = args.temperature, "given"
    elif series.dof is None:
        raise ConfigError(f"{args.trajectory} has no velocities to take the temperature from: give --temperature")
    elif series.dof == 0:
        raise ConfigError(f"{args.trajectory}: {series.n_atoms} atom(s) have no internal degrees of freedom "
                          f"({series.dof_note}) to take the temperature from: give --temperature")
    elif not series.temperature > 0:
        raise DataError(f"{args.trajectory}: the kinetic temperature of its velocities is {series.temperature:g} K "
                        f"({series.dof_note}): the atoms do not move relative to each other; give --temperature "
                        "if the spectrum should be computed anyway")
    else:
        temperature = series.temperature
        how = f"kinetic, from the velocities over {series.dof_note}"

    def make(values):
        current = values if kind == "current" else dipole_current(values, dt)
        return ir_spectrum(current, dt, temperature, volume=series.volume,
                           quantum=args.quantum_correction, window=args.window, broadening=args.broadening,
                           shape=args.line_shape, max_lag=max_lag, normalization=args.normalization)

    spec = _with_band(args, series.values, make)
    spec.meta.update(route=args.route, target=series.target, temperature_source=how)
    print(f"{args.route} route with target {series.target!r}; T = {temperature:.1f} K ({how})")
    if kind == "dipole":
        k = spec.columns["absorption"][1:].argmax() + 1
        x = 2 * np.pi * spec.freq_thz[k] * 1e-3 * dt
        loss = 1 - (np.sin(x) / x) ** 2
        if loss > 0.05:
            warnings.warn(f"the central difference of the dipole route scales a band by (sin(w dt)/(w dt))^2: "
                          f"{loss:.0%} lower at the strongest peak ({spec.freq_cm1[k]:.0f} cm^-1) with frames "
                          f"{dt:g} fs apart; use a shorter timestep or the current route", stacklevel=2)
    return _finish(args, spec, "absorption", dt)


def _raman(args) -> int:
    from .spectra import raman_spectrum

    series, max_lag, dt = _series(args, "polarizability", args.alpha_target)
    spec = _with_band(args, series.values, lambda values: raman_spectrum(
        values, dt, temperature=args.temperature, quantum=args.quantum_correction, window=args.window,
        broadening=args.broadening, shape=args.line_shape, max_lag=max_lag, normalization=args.normalization))
    spec.meta.update(target=series.target)
    unit = f"({series.unit})^2/THz" if series.unit else "(polarizability unit)^2/THz"  # the target's declared unit
    spec.units = {k: unit for k in spec.columns}
    return _finish(args, spec, "polarized", dt)


#: percentiles of the band over posterior samples (--uncertainty): one sigma of a Gaussian
BAND = (16, 84)


def _with_band(args, values, make):
    """``make(values)``; with --uncertainty (``values`` (n_frames, 1 + S, ...): the prediction, then
    S posterior samples) the prediction's spectrum plus ``<column>_p16`` / ``_p84`` over the samples."""
    if not args.uncertainty:
        return make(values)
    specs = [make(values[:, s]) for s in range(values.shape[1])]
    spec = specs[0]
    for name in list(spec.columns):
        lo, hi = np.percentile(np.stack([sp.columns[name] for sp in specs[1:]]), BAND, axis=0)
        for suffix, band in ((f"_p{BAND[0]}", lo), (f"_p{BAND[1]}", hi)):
            spec.columns[name + suffix] = band
            if name in spec.units:
                spec.units[name + suffix] = spec.units[name]
    source = getattr(args, "samples_from", f"{len(specs) - 1} posterior samples of the model (LLPR)")
    spec.meta["uncertainty"] = f"{source}, band = {BAND[0]}th-{BAND[1]}th percentile over them"
    print(f"uncertainty: {source}, band {BAND[0]}th-{BAND[1]}th percentile")
    return spec


def _plot(spec, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    band = tuple(f"_p{b}" for b in BAND)
    names = [n for n in spec.columns if n != "current_psd" and not n.endswith(band)]
    for name in names:
        line, = ax.plot(spec.freq_cm1, spec.columns[name], lw=1.0, label=name)
        if name + band[0] in spec.columns:
            ax.fill_between(spec.freq_cm1, spec.columns[name + band[0]], spec.columns[name + band[1]],
                            color=line.get_color(), alpha=0.3, lw=0, label=f"{name} {BAND[0]}-{BAND[1]} %")
    ax.set_xlabel("wavenumber (cm$^{-1}$)")
    ax.set_ylabel(spec.units[names[0]].split(",")[0])
    ax.set_xlim(0, spec.freq_cm1[-1])
    ax.set_title(title, fontsize=9)
    if len(ax.get_legend_handles_labels()[0]) > 1:
        ax.legend(fontsize=8)
    top = ax.secondary_xaxis("top", functions=(lambda x: x / 33.35641, lambda f: f * 33.35641))
    top.set_xlabel("THz")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
