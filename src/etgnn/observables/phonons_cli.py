"""``etgnn phonons`` and ``etgnn export-born``: LO-TO phonons and BORN files from a model."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from .phonons_ff import SPECTRA_HELP
from .phonons_ff import add_options as _add_forcefield_options

from .._paths import input_path

__all__ = ["add_parser", "write_modes_csv", "format_modes"]

_PHONONS_HELP = """\
Harmonic phonons with phonopy, the non-analytical correction (LO-TO splitting) taken from the Born
charges and eps_inf that CHECKPOINT predicts for phonopy's primitive cell (symmetrised to the site
symmetry, acoustic sum rule exact), or from a BORN file (--born-file, read as phonopy reads it).
Force constants come from phonopy's files: --phonopy X.phonopy_disp.yaml with --force-sets
X.FORCE_SETS or --force-constants FORCE_CONSTANTS.

Printed and written (-o CSV, one row per mode; set 'gamma' = no NAC, set 'gamma_nac' = q -> 0 along
--q-direction):
  frequency     THz and cm^-1 (phonopy's frequencies)
  character     acoustic | TO | LO (shifted by the NAC: q.p != 0) | IR (active, no NAC) | inactive
  p_m           mode effective charge p_m,a = sum_k,b Z_k,ab e_m,kb / sqrt(M_k), e/sqrt(amu)
  S_m           oscillator strength S_m,ab = p_m,a p_m,b, e^2/amu; IR intensity tr S_m
  eps_0         eps_inf + (4 pi F / Omega) sum_m S_m / w_m^2 over the optical modes
With a model that carries uncertainty (etgnn calibrate), TO/LO frequencies, eps_inf, eps_0 and IR
intensities are also printed +- one sigma over --samples posterior samples of the Born charges and
eps_inf (correlations kept, each sample symmetrised); the CSV gets <column>_mean and <column>_std
for frequency_THz, frequency_cm-1 and ir_intensity_e2_per_amu (docs/uncertainty.md).
Definitions and a worked example: docs/phonons.md.

examples:
  etgnn phonons runs/phonondb/best.ckpt --phonopy NaCl.phonopy_disp.yaml --force-sets NaCl.FORCE_SETS \\
      --q-direction 1 0 0 --band-plot bands.png -o modes.csv
  etgnn phonons --born-file NaCl.BORN --phonopy NaCl.phonopy_disp.yaml --force-sets NaCl.FORCE_SETS
"""

_EXPORT_HELP = """\
Write a phonopy BORN file from the Born charges and eps_inf that CHECKPOINT predicts for STRUCTURE
(a POSCAR, CIF, any ASE-readable file, or a phonopy_disp.yaml / phonopy.yaml whose unit cell and
primitive matrix are used). The tensors are symmetrised with phonopy (Born charges averaged over
the space group, acoustic sum rule imposed exactly; eps averaged over the point group) and the
file lists the symmetry-inequivalent atoms of the primitive cell, as phonopy expects. Index
convention: Z[atom][i][j], i = field / polarization direction, j = displacement direction, 9
numbers per line row-major (etgnn's and phonopy's convention, docs/conventions.md).
"""


def _add_target_options(p) -> None:
    p.add_argument("--bec-target", metavar="NAME",
                   help="per-atom rank-2 target holding Born charges (default: the one with sum_rule)")
    p.add_argument("--eps-target", metavar="NAME", help="structure rank-2 target holding eps_inf (default: the only one)")
    p.add_argument("--symprec", type=float, default=1e-5, metavar="A", help="symmetry tolerance, Angstrom (default 1e-5)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="device of the model (default cpu)")


def add_parser(subparsers) -> None:
    """Register the ``phonons`` and ``export-born`` subcommands."""
    p = subparsers.add_parser("phonons", help="Gamma phonons with LO-TO splitting, IR strengths, NAC bands (phonopy)",
                              description=_PHONONS_HELP + "\n" + SPECTRA_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", type=input_path,
                   help="model predicting Born charges and eps_inf (omit with --born-file)")
    p.add_argument("--phonopy", metavar="YAML", type=input_path, help="phonopy_disp.yaml / phonopy.yaml of the calculation (or --structure with a force field)")
    fc = p.add_mutually_exclusive_group()
    fc.add_argument("--force-sets", metavar="FILE", type=input_path, help="phonopy FORCE_SETS")
    fc.add_argument("--force-constants", metavar="FILE", type=input_path, help="phonopy FORCE_CONSTANTS or force_constants.hdf5")
    p.add_argument("--born-file", metavar="BORN", type=input_path, help="take Born charges and eps_inf from this BORN file instead of a model")
    p.add_argument("--reference-born", metavar="BORN", type=input_path,
                   help="also compute with this BORN file (e.g. the DFT one): printed beside, dashed in the plot")
    p.add_argument("--q-direction", nargs=3, type=float, default=[1.0, 0.0, 0.0], metavar=("QX", "QY", "QZ"),
                   help="Cartesian direction of q -> 0 for the LO-TO splitting (default 1 0 0)")
    p.add_argument("-o", "--output", metavar="CSV", help="write the modes as CSV here")
    p.add_argument("--band-plot", metavar="PNG", help="plot the band structure with the NAC here")
    p.add_argument("--band-path", metavar="PATH", help="ASE path string, e.g. GXWKGLUWLK,UX (default: the lattice's)")
    p.add_argument("--unit", choices=["THz", "cm-1"], default="THz", help="frequency unit of the plot (default THz)")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="posterior samples for +- one sigma when the model carries uncertainty (default 32; 0: off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior samples (default 0)")
    _add_target_options(p)
    _add_forcefield_options(p)
    p.set_defaults(func=_phonons)

    p = subparsers.add_parser("export-born", help="phonopy BORN file from a model's Born charges and eps_inf",
                              description=_EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=input_path, help="model predicting Born charges and eps_inf")
    p.add_argument("structure", metavar="STRUCTURE", type=input_path, help="unit cell: POSCAR, CIF, extxyz, ... or a phonopy yaml")
    p.add_argument("-o", "--output", required=True, metavar="BORN", help="BORN file to write (overwritten)")
    p.add_argument("--primitive-matrix", nargs="+", metavar="M",
                   help="primitive cell phonopy will use: auto, P, F, I, A, C, R or 9 numbers "
                        "(default: from a phonopy yaml, else STRUCTURE itself)")
    p.add_argument("--factor", type=float, metavar="F",
                   help="NAC unit factor written in the header (default: none, phonopy uses its calculator's)")
    _add_target_options(p)
    p.set_defaults(func=_export_born)


def _load_model(path: str, device: str):
    from ..model import load_model
    from ..train.ddp import resolve_device

    return load_model(path, map_location=resolve_device(device))


def _source_born(args, ph):
    """NAC parameters and a one-line description of where they came from."""
    from ..errors import ConfigError
    from .born import predict_born, to_ase_atoms
    from .phonons import nac_params, read_born

    if args.born_file and args.checkpoint:
        raise ConfigError("give either CHECKPOINT or --born-file, not both")
    if args.born_file:
        return read_born(args.born_file, ph, args.symprec), f"BORN file {args.born_file}", None
    if not args.checkpoint:
        raise ConfigError("give CHECKPOINT (a model predicting Born charges and eps_inf) or --born-file BORN")
    model = _load_model(args.checkpoint, args.device)
    from .born import select_born_targets

    bec, eps = select_born_targets(model.config.targets, args.bec_target, args.eps_target, args.checkpoint)
    born, epsilon = predict_born(model, to_ase_atoms(ph.primitive), bec, eps, args.checkpoint)
    return nac_params(ph, born, epsilon, symprec=args.symprec), f"{args.checkpoint} (targets {bec}, {eps})", model


def _rows(modes, samples=None):
    from phonopy.physical_units import get_physical_units

    cm = get_physical_units().THzToCm
    sets = [("gamma", modes.frequencies, modes.labels, modes.p, "frequencies", "intensities"),
            ("gamma_nac", modes.nac_frequencies, modes.nac_labels, modes.nac_p, "nac_frequencies", "nac_intensities")]
    for name, freqs, labels, p, f_key, i_key in sets:
        if samples is not None:
            f_mean, f_std = samples.mean(f_key), samples.std(f_key)
            i_mean, i_std = samples.mean(i_key), samples.std(i_key)
        for m, (f, label, pm) in enumerate(zip(freqs, labels, p)):
            s = np.outer(pm, pm)
            row = {"set": name, "mode": m + 1, "frequency_THz": f, "frequency_cm-1": f * cm, "character": label,
                   "ir_intensity_e2_per_amu": float(np.trace(s)),
                   **{f"S_{a}{b}": s[i, j] for i, a in enumerate("xyz") for j, b in enumerate("xyz")},
                   **{f"p_{a}": pm[i] for i, a in enumerate("xyz")}}
            if samples is not None:  # over the posterior samples (phonons_uq)
                row.update({"frequency_THz_mean": float(f_mean[m]), "frequency_THz_std": float(f_std[m]),
                            "frequency_cm-1_mean": float(f_mean[m] * cm), "frequency_cm-1_std": float(f_std[m] * cm),
                            "ir_intensity_e2_per_amu_mean": float(i_mean[m]),
                            "ir_intensity_e2_per_amu_std": float(i_std[m])})
            yield row


def write_modes_csv(modes, path, samples=None) -> Path:
    """Write :class:`~etgnn.observables.phonons.GammaModes` as CSV (columns: see ``etgnn phonons --help``);
    ``samples`` (:class:`~etgnn.observables.phonons_uq.GammaSamples`) adds ``_mean`` / ``_std`` columns."""
    rows = list(_rows(modes, samples))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.12g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def _tensor(t) -> str:
    return "[" + ", ".join("[" + " ".join(f"{x:8.3f}" for x in row) + "]" for row in np.asarray(t)) + "]"


def format_modes(modes, epsilon, reference=None) -> str:
    """The table ``etgnn phonons`` prints: NAC modes with characters, then the TO modes' strengths.

    ``reference``: optional ``(GammaModes, eps_inf)`` of a reference BORN file, printed beside.
    """
    rows = list(_rows(modes))
    q = " ".join(f"{x:.3g}" for x in modes.direction)
    lines = [f"eps_inf = {_tensor(epsilon)}", f"eps_0   = {_tensor(modes.epsilon_static)}  (from the oscillator strengths)"]
    if reference is not None:
        lines += [f"reference eps_inf = {_tensor(reference[1])}",
                  f"reference eps_0   = {_tensor(reference[0].epsilon_static)}"]
    extra = f"  {'ref THz':>9}  ref character" if reference is not None else ""
    lines += ["", f"Gamma, q -> 0 along [{q}] (Cartesian), with the non-analytical correction:",
              f"{'mode':>4}  {'THz':>9}  {'cm-1':>9}  {'character':<9}{extra}"]
    nac = [r for r in rows if r["set"] == "gamma_nac"]
    for i, r in enumerate(nac):
        line = f"{r['mode']:4d}  {r['frequency_THz']:9.4f}  {r['frequency_cm-1']:9.2f}  {r['character']:<9}"
        if reference is not None:
            line += f"  {reference[0].nac_frequencies[i]:9.4f}  {reference[0].nac_labels[i]}"
        lines.append(line.rstrip())
    lines += ["", "Gamma without NAC (TO modes, what IR absorption sees); IR intensity tr S_m and S_m in e^2/amu:",
              f"{'mode':>4}  {'THz':>9}  {'cm-1':>9}  {'character':>9}  {'intensity':>10}  "
              f"{'S_xx':>9} {'S_yy':>9} {'S_zz':>9} {'S_xy':>9} {'S_yz':>9} {'S_zx':>9}"]
    lines += [f"{r['mode']:4d}  {r['frequency_THz']:9.4f}  {r['frequency_cm-1']:9.2f}  {r['character']:>9}  "
              f"{r['ir_intensity_e2_per_amu']:10.5f}  " + " ".join(f"{r[k]:9.5f}" for k in
                                                                  ("S_xx", "S_yy", "S_zz", "S_xy", "S_yz", "S_zx"))
              for r in rows if r["set"] == "gamma"]
    return "\n".join(lines)


def _phonons(args) -> int:
    from .born import to_ase_atoms
    from .phonons import band_structure, gamma_modes, plot_band_structure, read_born, set_nac
    from .phonons_ff import build_phonopy, write_spectra

    ph, fc_source = build_phonopy(args)
    params, source, model = _source_born(args, ph)
    reference = read_born(args.reference_born, ph, args.symprec) if args.reference_born else None
    set_nac(ph, params)
    modes = gamma_modes(ph, args.q_direction)
    bands = band_structure(ph, args.band_path) if args.band_plot else None
    prim = to_ase_atoms(ph.primitive)
    print(f"{prim.get_chemical_formula(mode='metal')} primitive cell, {len(prim)} atoms, {prim.get_volume():.4f} Angstrom^3; "
          f"force constants from {fc_source}; Born charges and eps_inf from {source}"
          + (f"; reference: BORN file {args.reference_born}" if reference else ""))
    ref_modes = ref_bands = None
    if reference is not None:
        set_nac(ph, reference)
        ref_modes = gamma_modes(ph, args.q_direction)
        ref_bands = band_structure(ph, args.band_path) if args.band_plot else None
        set_nac(ph, params)
    print(format_modes(modes, params["dielectric"], (ref_modes, reference["dielectric"]) if reference else None))
    samples = _sample_modes(args, ph, model)
    if samples is not None:
        from .phonons_uq import format_uncertainty

        print()
        print(format_uncertainty(samples, modes, params["dielectric"]))
    if args.output:
        print(f"modes written to {write_modes_csv(modes, args.output, samples)}")
    stem = Path(args.phonopy or args.structure).name.split(".")[0]
    stem = prim.get_chemical_formula(mode="metal") if stem.startswith("phonopy") else stem
    write_spectra(args, modes, params, prim.get_volume(), f"{stem}: TO modes, eps_inf and Born charges from "
                  f"{Path(args.born_file or args.checkpoint).name}",
                  (Path(args.reference_born).name, ref_modes, reference) if reference else None,
                  label=Path(args.born_file or args.checkpoint).name)
    if args.band_plot:
        name = Path(args.born_file or args.checkpoint).name
        curves = [(name, bands)] + ([(Path(args.reference_born).name, ref_bands)] if reference else [])
        title = f"{stem}: non-analytical correction from {name}"
        print(f"band structure written to {plot_band_structure(curves, args.band_plot, title, args.unit)}")
    return 0


def _sample_modes(args, ph, model):
    """Posterior samples of the Gamma modes when the model carries uncertainty (else None)."""
    from ..errors import ConfigError
    from ..uncertainty.sampling import DEFAULT_SAMPLES

    n = DEFAULT_SAMPLES if args.samples is None else args.samples
    if n < 0:
        raise ConfigError(f"--samples must be >= 0, got {n}")
    if model is None or n == 0:
        return None
    if getattr(model, "uncertainty", None) is None:
        if args.samples:
            raise ConfigError(f"--samples {n}: {args.checkpoint} has no uncertainty; add it with `etgnn calibrate`")
        return None
    from .phonons_uq import sample_gamma_modes

    return sample_gamma_modes(ph, model, n, args.q_direction, seed=args.seed, bec_target=args.bec_target,
                              eps_target=args.eps_target, symprec=args.symprec, source=str(args.checkpoint))


def _read_unitcell(path: str, symprec: float):
    """Unit cell and (primitive, supercell) matrices of STRUCTURE (from a phonopy yaml when it is one)."""
    from ..data.readers import _read_structure_file
    from ..errors import DataError
    from .born import require_crystal, require_phonopy, to_ase_atoms

    p = Path(path)
    if not p.is_file():
        raise DataError(f"structure file {p}: no such file")
    if p.suffix.lower() in (".yaml", ".yml"):
        require_phonopy()
        from phonopy.interface.phonopy_yaml import PhonopyYaml

        ph_yaml = PhonopyYaml()
        try:
            ph_yaml.read(str(p))
        except Exception as exc:
            raise DataError(f"{p}: not a phonopy yaml ({type(exc).__name__}: {exc})") from exc
        if ph_yaml.unitcell is None:
            raise DataError(f"{p}: no unit cell in this phonopy yaml")
        return to_ase_atoms(ph_yaml.unitcell), ph_yaml.primitive_matrix, ph_yaml.supercell_matrix
    atoms = _read_structure_file(p)
    require_crystal(atoms, str(p))  # before the model and spglib see a molecule or a slab
    return atoms, None, None


def _parse_primitive_matrix(values: list[str]):
    from ..errors import ConfigError

    if len(values) == 1:
        return values[0]
    try:
        return [float(v) for v in values]
    except ValueError:
        raise ConfigError(f"--primitive-matrix: expected auto, P, F, I, A, C, R or 9 numbers, got {' '.join(values)}") from None


def _export_born(args) -> int:
    from .born import predict_born, symmetrize_born, write_born

    atoms, pmat, smat = _read_unitcell(args.structure, args.symprec)
    if args.primitive_matrix:
        pmat = _parse_primitive_matrix(args.primitive_matrix)
    model = _load_model(args.checkpoint, args.device)
    born, eps = predict_born(model, atoms, args.bec_target, args.eps_target, args.checkpoint)
    z_sym, eps_sym = symmetrize_born(atoms, born, eps, args.symprec)
    path = write_born(args.output, atoms, born, eps, primitive_matrix=pmat, supercell_matrix=smat,
                      factor=args.factor, symprec=args.symprec, where=str(args.structure))
    print(f"{atoms.get_chemical_formula(mode='metal')} ({len(atoms)} atoms): predicted Born charges sum to "
          f"{np.abs(born.sum(axis=0)).max():.2e} e (largest component), symmetrisation moved them by at most "
          f"{np.abs(born - z_sym).max():.2e} e and eps by {np.abs(eps - eps_sym).max():.2e}")
    print(f"BORN file written to {path}")
    return 0
