"""``etgnn spectrum ir`` / ``etgnn spectrum raman``: spectra of an MD trajectory from a model's tensors."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]

_IR_HELP = """\
IR absorption of the MD trajectory TRAJ (any file ase.io reads: extxyz with velocities or
momenta, ASE .traj), from the tensors the model CHECKPOINT predicts for each frame, streamed in
chunks of --batch-size frames (memory flat in atoms x frames).

Routes:
  current  J(t) = V dP/dt = sum_k Z*_k v_k from the predicted Born charges (per-atom rank-2
           target, e) and the velocities: crystals and molecules, no polarization quantum.
  dipole   J(t) = d mu/dt by central differences of the predicted dipole (structure rank-1
           target, e*Angstrom): molecules and clusters; use a short --timestep.

Output CSV columns: freq_cm1, freq_THz, absorption (crystal: alpha(w) n(w) in cm^-1; molecule:
molar cross section N_A sigma in (km/mol)/cm^-1, whose integral over a band in cm^-1 is the band
intensity in km/mol), current_psd ((e*Angstrom/fs)^2/THz). Prefactor: alpha n = F(w) J-spectrum
/(6 c V eps0 k_B T), F = 1 for --quantum-correction harmonic (the classical formula, exact for
harmonic systems). Conventions and derivations: docs/spectra.md.
"""

_RAMAN_HELP = """\
Raman spectra of the MD trajectory TRAJ from the predicted polarizability (structure rank-2
target; eps works too): isotropic a = tr(alpha)/3 and anisotropic (traceless) parts, polarized
I_VV = S_a + (2/15) S_aniso and depolarized I_VH = S_aniso/10 (isotropic average). With
--temperature the spectra are multiplied by the quantum correction (harmonic: hbar w/kT (n(w)+1),
the Stokes line shape); the laser factor (w_L - w)^4 is not applied. Output CSV: freq_cm1,
freq_THz, isotropic, anisotropic, polarized, depolarized, in (polarizability unit)^2/THz.
"""


def _common(p) -> None:
    from .spectra import BROADENINGS, NORMALIZATIONS, QUANTUM_CORRECTIONS, WINDOWS
    from .timeseries import VELOCITY_UNITS

    p.add_argument("checkpoint", metavar="CHECKPOINT", help="best.ckpt / last.ckpt or a saved model")
    p.add_argument("trajectory", metavar="TRAJ", help="MD trajectory, equally spaced frames")
    p.add_argument("--timestep", type=float, required=True, metavar="FS", help="time between frames, fs")
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


def _series(args, kind, target):
    from ..errors import ConfigError
    from ..model import load_model
    from ..train.ddp import resolve_device
    from .timeseries import predict_series

    if not args.timestep > 0:
        raise ConfigError(f"--timestep must be > 0 fs, got {args.timestep}")
    if not Path(args.checkpoint).is_file():
        raise ConfigError(f"checkpoint not found: {args.checkpoint}")
    model = load_model(args.checkpoint, map_location=resolve_device(args.device))
    progress = False if args.no_progress else None
    series = predict_series(model, args.trajectory, kind, target, batch_size=args.batch_size,
                            velocity_unit=args.velocity_unit, index=args.index, fmt=args.format,
                            progress=progress)
    n = len(series.values)
    max_lag = (n - 1) // 2 if args.max_lag is None else int(round(args.max_lag / args.timestep))
    if not 0 < max_lag < n:
        raise ConfigError(f"--max-lag {args.max_lag} fs is {max_lag} frames; it must be between 1 and "
                          f"{n - 1} frames ({(n - 1) * args.timestep:g} fs) for this trajectory")
    return series, max_lag


def _finish(args, spec, column: str) -> int:
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    spec.to_csv(args.output)
    k = spec.columns[column][1:].argmax() + 1
    print(f"{spec.meta['frames']} frames; strongest {column} peak at {spec.freq_cm1[k]:.1f} cm^-1 "
          f"({spec.freq_thz[k]:.3f} THz); spectrum written to {args.output}")
    if args.plot:
        _plot(spec, args.plot, Path(args.trajectory).name)
        print(f"plot written to {args.plot}")
    return 0


def _ir(args) -> int:
    from ..errors import ConfigError
    from .spectra import dipole_current, ir_spectrum

    kind, target = ("current", args.bec_target) if args.route == "current" else ("dipole", args.dipole_target)
    series, max_lag = _series(args, kind, target)
    temperature = args.temperature if args.temperature is not None else series.temperature
    if temperature is None:
        raise ConfigError(f"{args.trajectory} has no velocities to take the temperature from: give --temperature")
    current = series.values if kind == "current" else dipole_current(series.values, args.timestep)
    spec = ir_spectrum(current, args.timestep, temperature, volume=series.volume,
                       quantum=args.quantum_correction, window=args.window, broadening=args.broadening,
                       shape=args.line_shape, max_lag=max_lag, normalization=args.normalization)
    spec.meta.update(route=args.route, target=series.target)
    how = "given" if args.temperature is not None else "kinetic, from the velocities"
    print(f"{args.route} route with target {series.target!r}; T = {temperature:.1f} K ({how})")
    return _finish(args, spec, "absorption")


def _raman(args) -> int:
    from .spectra import raman_spectrum

    series, max_lag = _series(args, "polarizability", args.alpha_target)
    spec = raman_spectrum(series.values, args.timestep, temperature=args.temperature,
                          quantum=args.quantum_correction, window=args.window, broadening=args.broadening,
                          shape=args.line_shape, max_lag=max_lag, normalization=args.normalization)
    spec.meta.update(target=series.target)
    return _finish(args, spec, "polarized")


def _plot(spec, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    names = [n for n in spec.columns if n != "current_psd"]
    for name in names:
        ax.plot(spec.freq_cm1, spec.columns[name], lw=1.0, label=name)
    ax.set_xlabel("wavenumber (cm$^{-1}$)")
    ax.set_ylabel(spec.units[names[0]].split(",")[0])
    ax.set_xlim(0, spec.freq_cm1[-1])
    ax.set_title(title, fontsize=9)
    if len(names) > 1:
        ax.legend(fontsize=8)
    top = ax.secondary_xaxis("top", functions=(lambda x: x / 33.35641, lambda f: f * 33.35641))
    top.set_xlabel("THz")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
