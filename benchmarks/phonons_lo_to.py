"""LO-TO splitting from a model's Born charges and eps_inf next to the DFT BORN files.

For the seven crystals of ``../shared/data/phonopy_born`` with DFT force constants (NaCl, MgO,
ZnO, SnO2, Al2O3, TiO2 anatase, SiO2 high-pressure), the harmonic force constants are phonopy's
DFT ones and only the non-analytical correction changes: Gamma frequencies along a direction are
computed once with the DFT BORN file and once with the Born charges and eps_inf that CHECKPOINT
predicts for phonopy's primitive cell (symmetrised, sum rule exact).  The script also looks up
each composition in the model's training file (``data.train`` of its config) and says whether a
matching structure (pymatgen StructureMatcher) was in the training or the validation part of the
checkpoint's split.

    python benchmarks/phonons_lo_to.py runs/phonondb_bec_eps/best.ckpt \
        [--data ../shared/data/phonopy_born] [-o benchmarks/results/phonons_lo_to.md] [--note TEXT]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import etgnn  # noqa: E402
from etgnn.data.readers import read_structures  # noqa: E402
from etgnn.observables import phonons as P  # noqa: E402
from etgnn.observables.born import predict_born, select_born_targets, to_ase_atoms  # noqa: E402

CRYSTALS = ["NaCl", "MgO", "ZnO", "SnO2", "Al2O3", "TiO2-anatase", "SiO2-HP"]
DIRECTIONS = {"x": (1.0, 0.0, 0.0), "z": (0.0, 0.0, 1.0)}


def _spacegroup(atoms) -> str:
    import spglib

    cell = (np.asarray(atoms.cell), atoms.get_scaled_positions(), atoms.numbers)
    return spglib.get_spacegroup(cell, symprec=1e-3) or "?"


def training_membership(model, crystals: dict, checkpoint: str) -> dict:
    """For each crystal: entries of the training file with its reduced formula, and where they went."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    data = model.config.data
    if not data.train:
        return {name: "the checkpoint names no training file" for name in crystals}
    train_path = Path(data.train) if Path(data.train).is_file() else ROOT / data.train
    if not train_path.is_file():
        return {name: f"training file {data.train} not found" for name in crystals}
    structures = read_structures(train_path)
    perm = np.random.default_rng(data.split_seed).permutation(len(structures))
    f_train, f_val, _ = data.split
    n_train = int(round(f_train * len(structures)))
    part = np.empty(len(structures), dtype=object)
    part[perm[:n_train]] = "train"
    part[perm[n_train:]] = "val" if data.val is None else "train"
    formulas = [a.get_chemical_formula(empirical=True) for a in structures]
    matcher = StructureMatcher()
    out = {}
    for name, atoms in crystals.items():
        formula = atoms.get_chemical_formula(empirical=True)
        hits = [i for i, f in enumerate(formulas) if f == formula]
        ref = AseAtomsAdaptor.get_structure(atoms)
        same = [i for i in hits if matcher.fit(ref, AseAtomsAdaptor.get_structure(structures[i]))]
        if not hits:
            out[name] = f"no {formula} in the training file"
        else:
            where = ", ".join(f"#{i} ({part[i]})" for i in same) or "none"
            groups = ", ".join(f"#{i} {_spacegroup(structures[i])}" for i in hits)
            out[name] = f"{len(hits)} {formula} ({groups}); same structure: {where}"
    return out


def run(checkpoint: str, data: Path, directions: list[str]):
    model = etgnn.load_model(checkpoint)
    bec, eps = select_born_targets(model.config.targets, source=checkpoint)
    results, cells = {}, {}
    for name in CRYSTALS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ph = P.load_phonopy(data / f"{name}.phonopy_disp.yaml", force_sets=data / f"{name}.FORCE_SETS")
            dft = P.read_born(data / f"{name}.BORN", ph)
            prim = to_ase_atoms(ph.primitive)
            z, e = predict_born(model, prim, bec, eps, checkpoint)
            pred = P.nac_params(ph, z, e)
            row = {"dft": dft, "pred": pred}
            for label in directions:
                for key, params in (("dft", dft), ("pred", pred)):
                    P.set_nac(ph, params)
                    row[key, label] = P.gamma_modes(ph, DIRECTIONS[label])
        results[name], cells[name] = row, prim
    return model, results, cells


def _diag(t) -> str:
    return " ".join(f"{x:.2f}" for x in np.diag(t))


def report(checkpoint, model, results, cells, membership, directions, note: str) -> str:
    lines = ["# LO-TO splitting: predicted vs DFT Born charges and eps_inf", "",
             f"Checkpoint: `{checkpoint}`. {note}".rstrip(), "",
             "Force constants: phonopy's DFT supercell forces (`../shared/data/phonopy_born`), the same in both "
             "columns; only the non-analytical correction differs: the DFT BORN file (as phonopy reads it) vs "
             "the model's Born charges and eps_inf predicted for phonopy's primitive cell (symmetrised, "
             "acoustic sum rule exact). Frequencies in THz at Gamma, q -> 0 along the Cartesian axis given.",
             "Generated by `benchmarks/phonons_lo_to.py`.", "",
             "| crystal | in the training file (phonondb train.xyz) | eps_inf diag DFT | eps_inf diag model "
             "| Z*_xx DFT | Z*_xx model |", "|---|---|---|---|---|---|"]
    for name, row in results.items():
        zd, zp = row["dft"]["born"], row["pred"]["born"]
        lines.append(f"| {name} | {membership[name]} | {_diag(row['dft']['dielectric'])} | "
                     f"{_diag(row['pred']['dielectric'])} | {' '.join(f'{x:.2f}' for x in zd[:, 0, 0])} | "
                     f"{' '.join(f'{x:.2f}' for x in zp[:, 0, 0])} |")
    lines += ["", "## LO modes (modes shifted by the non-analytical correction)", "",
              "| crystal | q | TO (THz, no NAC) | LO DFT BORN | LO model | LO error (THz) |", "|---|---|---|---|---|---|"]
    summary = []
    for name, row in results.items():
        for label in directions:
            d, p = row["dft", label], row["pred", label]
            lo = [i for i, c in enumerate(d.nac_labels) if c == "LO"]
            to = sorted({round(f, 3) for f, c in zip(d.frequencies, d.labels) if c == "IR"})
            err = p.nac_frequencies[lo] - d.nac_frequencies[lo]
            summary.append((name, label, np.abs(err).max() if lo else 0.0))
            lines.append(f"| {name} | {label} | {' '.join(f'{f:.2f}' for f in to)} | "
                         f"{' '.join(f'{d.nac_frequencies[i]:.2f}' for i in lo)} | "
                         f"{' '.join(f'{p.nac_frequencies[i]:.2f}' for i in lo)} | "
                         f"{' '.join(f'{x:+.2f}' for x in err)} |")
    lines += ["", "Mode indices follow the DFT-BORN ordering (ascending frequency); a model whose charges "
              "change the ordering of close modes shows it as a large error on both.", ""]
    worst = max(summary, key=lambda s: s[2])
    lines.append(f"Largest LO error: {worst[2]:.2f} THz ({worst[0]}, q along {worst[1]}).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "phonopy_born")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "phonons_lo_to.md")
    parser.add_argument("--directions", nargs="+", default=["x", "z"], choices=sorted(DIRECTIONS))
    parser.add_argument("--note", default="", help="sentence about the checkpoint (how it was trained)")
    args = parser.parse_args(argv)
    model, results, cells = run(args.checkpoint, args.data, args.directions)
    membership = training_membership(model, cells, args.checkpoint)
    text = report(args.checkpoint, model, results, cells, membership, args.directions, args.note)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
