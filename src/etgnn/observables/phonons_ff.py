"""``etgnn phonons --structure X.cif --forcefield NAME``: the force-field route and the IR spectra outputs.

Options added to ``etgnn phonons`` (:func:`add_options`); the phonopy object is built by
:func:`build_phonopy` (DFT files or a force field), the spectra written by :func:`write_spectra`.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from .phonon_bands import save_figure

__all__ = ["add_options", "build_phonopy", "write_spectra", "plot_spectra", "SPECTRA_HELP"]

SPECTRA_HELP = """\
Force constants from a force field instead of DFT files (pip install 'etgnn[forcefield]'):
  --structure X.cif --forcefield NAME   NAME: sevennet-l3i5 (default), sevennet-mf-0, sevennet-0,
                                        sevennet-mf-0-r2scan, chgnet-0.3.0, chgnet-0.2.0, or an
                                        etgnn checkpoint with a forces target
  optional relaxation keeping the space group (--relax, --relax-cell, --fmax), phonopy
  displacements in a supercell with faces >= --supercell-length apart (or --supercell N N N).

IR spectra (--spectrum-csv / --spectrum-plot), from the Gamma TO modes and eps_inf:
  eps(nu) = eps_inf + sum_m Omega_m / (nu_m^2 - nu^2 - i gamma nu), nu in THz, Omega_m in THz^2
  (Omega_m = 4 pi F f^2 S_m / V); normal-incidence reflectivity and absorption coefficient for
  light polarised along x, y, z (or --polarization); IR absorption sum_m tr(S_m) L(nu - nu_m)
  broadened by --fwhm. Definitions: docs/phonons.md.
"""


def add_options(p) -> None:
    """Register the force-field and spectra options on the ``phonons`` parser."""
    g = p.add_argument_group("force constants from a force field (instead of --phonopy)")
    from .._paths import input_path

    g.add_argument("--structure", metavar="FILE", type=input_path, help="unit cell: CIF, POSCAR, extxyz, ... (ASE-readable)")
    g.add_argument("--forcefield", metavar="NAME", help="packaged force field or etgnn checkpoint with forces "
                   "(default with --structure: the measured best, see docs/phonons.md)")
    g.add_argument("--supercell", nargs="+", type=int, metavar="N", help="supercell: 3 integers (diagonal) or 9")
    g.add_argument("--supercell-length", type=float, default=10.0, metavar="A",
                   help="without --supercell: smallest diagonal supercell with opposite faces >= A apart (default 10)")
    g.add_argument("--primitive-matrix", nargs="+", default=["auto"], metavar="M",
                   help="phonopy primitive matrix: auto (default), P, F, I, A, C, R or 9 numbers")
    g.add_argument("--relax", action=argparse.BooleanOptionalAction, default=False,
                   help="relax the atoms with the force field first, space group kept (default: no)")
    g.add_argument("--relax-cell", action="store_true", help="with --relax: relax the cell too (default: fixed cell)")
    g.add_argument("--fmax", type=float, default=1e-3, metavar="EV_A", help="force tolerance of --relax, eV/A (default 1e-3)")
    g.add_argument("--displacement", type=float, default=0.01, metavar="A", help="displacement amplitude, A (default 0.01)")
    g.add_argument("--save-phonopy", metavar="YAML",
                   help="write the force-field phonopy calculation (phonopy_params.yaml with forces) here; "
                        "reuse it with --phonopy YAML --force-sets YAML")
    g.add_argument("--save-structure", metavar="FILE", help="write the (relaxed) unit cell here (POSCAR)")
    s = p.add_argument_group("IR spectra: eps(omega), reflectivity, absorption")
    s.add_argument("--spectrum-csv", metavar="CSV", help="write eps(nu), reflectivity, absorption on a grid here")
    s.add_argument("--spectrum-plot", metavar="PNG", help="plot eps(nu), reflectivity and IR absorption here")
    s.add_argument("--damping", type=float, default=None, metavar="THZ",
                   help="damping gamma of every mode, THz (default 0.1 THz = 3.3 cm-1)")
    s.add_argument("--fwhm", type=float, default=0.3, metavar="THZ", help="line width of the IR absorption, THz (default 0.3)")
    s.add_argument("--line-shape", choices=["lorentzian", "gaussian"], default="lorentzian")
    s.add_argument("--polarization", nargs=3, type=float, action="append", metavar=("EX", "EY", "EZ"),
                   help="polarisation (electric field) direction, Cartesian; repeat for several (default x, y, z)")
    s.add_argument("--freq-max", type=float, metavar="THZ", help="upper end of the grid, THz (default 1.3 x the highest LO)")


def _matrix(values, what: str, integer: bool):
    from ..errors import ConfigError

    if values is None:
        return None
    if len(values) == 1 and isinstance(values[0], str) and not values[0].lstrip("-").replace(".", "").isdigit():
        return values[0]
    try:
        nums = [int(v) if integer else float(v) for v in values]
    except ValueError:
        raise ConfigError(f"{what}: expected 3 or 9 numbers, got {' '.join(map(str, values))}") from None
    if len(nums) == 3:
        return np.diag(nums)
    if len(nums) == 9:
        return np.reshape(nums, (3, 3))
    raise ConfigError(f"{what}: expected 3 or 9 numbers, got {len(nums)}")


def build_phonopy(args, log=print):
    """``Phonopy`` with force constants: from the DFT files (``--phonopy``) or from a force field.

    Returns:
        ``(phonopy, description)``.
    """
    from ..errors import ConfigError
    from .phonons import load_phonopy

    if args.structure is None:
        if args.forcefield:
            raise ConfigError("--forcefield needs --structure (the crystal to compute)")
        if not args.phonopy or not (args.force_sets or args.force_constants):
            raise ConfigError("give --phonopy YAML with --force-sets / --force-constants (DFT forces), "
                              "or --structure FILE (with --forcefield NAME) for force-field force constants")
        return load_phonopy(args.phonopy, args.force_sets, args.force_constants, args.symprec), f"phonopy files {args.phonopy}"
    if args.phonopy or args.force_sets or args.force_constants:
        raise ConfigError("give either --structure (force-field force constants) or --phonopy with force sets, not both")
    from ..data.readers import _read_structure_file
    from ..errors import DataError
    from .forcefield import DEFAULT_FORCE_FIELD, forcefield_phonopy, load_force_field, relax, supercell_for_length

    if not Path(args.structure).is_file():
        raise DataError(f"structure file {args.structure}: no such file")
    atoms = _read_structure_file(Path(args.structure))
    name = args.forcefield or DEFAULT_FORCE_FIELD
    calc = load_force_field(name, args.device)
    if args.relax:
        r = relax(atoms, calc, fmax=args.fmax, cell=args.relax_cell, symprec=args.symprec)
        log(f"relaxed with {name} ({'positions and cell' if args.relax_cell else 'positions'}, space group "
            f"{r.spacegroup_before} -> {r.spacegroup_after}): {r.steps} steps, max force {r.fmax:.2e} eV/A"
            + ("" if r.converged else f" (NOT converged to {args.fmax})")
            + (f", cell lengths {' '.join(f'{x:.4f}' for x in atoms.cell.lengths())} -> "
               f"{' '.join(f'{x:.4f}' for x in r.atoms.cell.lengths())} A" if args.relax_cell else ""))
        atoms = r.atoms
    if args.save_structure:
        from ase.io import write

        write(args.save_structure, atoms, format="vasp", direct=True)
        log(f"structure written to {args.save_structure}")
    smat = _matrix(args.supercell, "--supercell", True)
    if smat is None:
        smat = supercell_for_length(atoms, args.supercell_length)
    pmat = _matrix(args.primitive_matrix, "--primitive-matrix", False)
    ph = forcefield_phonopy(atoms, calc, smat, primitive_matrix=pmat, distance=args.displacement, symprec=args.symprec)
    desc = (f"force field {name} on {args.structure}, supercell {' '.join(str(int(x)) for x in np.ravel(smat))}"
            f" ({len(ph.supercell)} atoms, {len(ph.supercells_with_displacements)} displacements)")
    if args.save_phonopy:
        Path(args.save_phonopy).parent.mkdir(parents=True, exist_ok=True)
        ph.save(args.save_phonopy, settings={"force_constants": False, "force_sets": True, "born_effective_charge": False,
                                             "dielectric_constant": False})
        log(f"phonopy calculation written to {args.save_phonopy}")
    return ph, desc


def _directions(args, eps_inf, eps0) -> dict:
    if args.polarization:
        return {f"e{i + 1}": np.asarray(d, dtype=float) for i, d in enumerate(args.polarization)}
    axes = {a: np.eye(3)[i] for i, a in enumerate("xyz")}
    # drop axes equivalent to an earlier one (same eps_inf and eps_0 component): x only for a cubic crystal
    out = {}
    for a, e in axes.items():
        if not any(np.allclose([e @ eps_inf @ e, e @ eps0 @ e], [f @ eps_inf @ f, f @ eps0 @ f], rtol=1e-6)
                   for f in out.values()):
            out[a] = e
    return out


def compute_spectra(modes, params, volume: float, args, log=print) -> dict:
    """The ``--spectrum-*`` arrays for :class:`GammaModes` ``modes`` with NAC parameters ``params``."""
    from . import dielectric as D

    nu_m, omega, intensities = D.mode_oscillators(modes, volume, params["factor"], warn=log)
    eps_inf = np.asarray(params["dielectric"], dtype=float)
    top = max([*np.asarray(modes.nac_frequencies)[np.asarray(modes.nac_frequencies) > 0], *nu_m, 1.0])
    fmax = args.freq_max or 1.3 * top
    grid = np.linspace(0.0, fmax, 2001)
    gamma = D.DEFAULT_GAMMA_THZ if args.damping is None else args.damping
    directions = _directions(args, eps_inf, modes.epsilon_static)
    out = D.spectra(grid, eps_inf, nu_m, omega, intensities, directions, gamma, args.fwhm, args.line_shape)
    out["_directions"] = directions
    out["_gamma"] = gamma
    return out


def write_spectra_csv(spec: dict, path) -> Path:
    keys = [k for k in spec if not k.startswith("_")]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys)
        for row in zip(*(spec[k] for k in keys)):
            w.writerow([f"{x:.8g}" for x in row])
    return path


def plot_spectra(curves, path, title: str = "", unit: str = "THz") -> Path:
    """Three panels: Re/Im eps, reflectivity, IR absorption; ``curves`` = [(label, spectra dict)]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "freq_cm-1" if unit == "cm-1" else "freq_THz"
    fig, axes = plt.subplots(3, 1, figsize=(6.0, 7.5), dpi=110, sharex=True)
    colors = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange"]
    styles = ["-", "--", ":"]
    for c, (label, spec) in enumerate(curves):
        x = spec[key]
        ls = styles[c % len(styles)]
        for i, d in enumerate(spec["_directions"]):
            name = f"{label} {d}" if label else d
            color = colors[i % len(colors)]
            axes[0].plot(x, spec[f"eps_re_{d}"], color=color, ls=ls, lw=1.0, label=f"Re, {name}")
            axes[0].plot(x, spec[f"eps_im_{d}"], color=color, ls=ls, lw=0.8, alpha=0.5)
            axes[1].plot(x, spec[f"reflectivity_{d}"], color=color, ls=ls, lw=1.0, label=name)
        axes[2].plot(x, spec["ir_absorption"], color="k" if c == 0 else colors[(c + 2) % len(colors)], ls=ls, lw=1.0,
                     label=label or None)
    re = np.concatenate([spec[f"eps_re_{d}"] for _, spec in curves for d in spec["_directions"]])
    lim = np.percentile(np.abs(re), 97) * 1.2
    axes[0].set_ylim(-lim, lim)
    axes[0].axhline(0, color="0.7", lw=0.6)
    axes[0].set_ylabel(r"$\varepsilon(\nu)$ (Re solid, Im faint)")
    axes[1].set_ylabel("reflectivity (normal incidence)")
    axes[1].set_ylim(0, 1.02)
    axes[2].set_ylabel(r"IR absorption (e$^2$/amu per THz)")
    axes[2].set_xlabel("frequency (cm$^{-1}$)" if unit == "cm-1" else "frequency (THz)")
    for ax in axes[:2]:
        ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    if len(curves) > 1:
        axes[2].legend(fontsize=7, loc="upper right")
    axes[0].set_title(title, fontsize=10)
    return save_figure(fig, path)


def write_spectra(args, modes, params, volume: float, title: str, reference=None, label: str = "",
                  log=print) -> None:
    """``--spectrum-csv`` / ``--spectrum-plot`` for the modes (and a reference ``(label, modes, params)``)."""
    if not (args.spectrum_csv or args.spectrum_plot):
        return
    spec = compute_spectra(modes, params, volume, args, log)
    if args.spectrum_csv:
        log(f"spectra written to {write_spectra_csv(spec, args.spectrum_csv)} (gamma {spec['_gamma']} THz)")
    if args.spectrum_plot:
        curves = [("", spec)]
        if reference is not None:
            ref_label, ref_modes, ref_params = reference
            if args.freq_max is None:
                args = argparse.Namespace(**{**vars(args), "freq_max": spec["freq_THz"][-1]})
            curves = [(label, spec), (ref_label, compute_spectra(ref_modes, ref_params, volume, args, log))]
        log(f"spectra plotted in {plot_spectra(curves, args.spectrum_plot, title, args.unit)}")
