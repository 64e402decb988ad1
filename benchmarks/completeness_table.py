"""The completeness table of docs/model.md: allowed vs spanned dimensions, before and after.

For every site of the catalogue (molecular C2v, C3v, D3h, Td, C_inf_v, D_inf_h at the central
atom; the site of atom 0 of :func:`etgnn.testing.point_group_crystal` for each of the 32
crystallographic point groups) and ranks 1-4: the dimension of the rank-M tensors the site group
allows, and the dimension spanned by a random model's per-atom head with the 0.1 expansion
(no mixed, four-body or chiral terms) and with the complete one (defaults).  Same model and
thresholds as ``tests/nn/test_completeness.py``.

    python benchmarks/completeness_table.py --out benchmarks/results/completeness.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from ase.build import molecule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "nn"))
from test_completeness import RANKS, dimensions, model  # noqa: E402

from etgnn import testing  # noqa: E402

MOLECULES = {"H2O": ("C2v", 0), "NH3": ("C3v", 0), "BF3": ("D3h", 0), "CH4": ("Td", 0), "HCN": ("C_inf_v", 1),
             "CO2": ("D_inf_h", 0)}


def rows():
    before, after = model(mixed=False, chiral=False, four_body=False), model()
    for name, (group, centre) in MOLECULES.items():
        atoms, ops = testing.molecule_rotations(molecule(name))
        yield f"{group} ({name} {atoms.get_chemical_symbols()[centre]})", atoms, ops, centre, before, after
    for pg in testing.SYMMORPHIC_GROUPS:
        atoms = testing.point_group_crystal(pg)
        yield f"{pg} (crystal site)", atoms, testing.site_rotations(atoms, 0), 0, before, after


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/completeness.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["| site group | " + " | ".join(f"rank {r}: allowed / 0.1 / now" for r in RANKS) + " |",
             "|---|" + "---|" * len(RANKS)]
    missing_before = missing_after = 0
    for label, atoms, ops, centre, before, after in rows():
        cells = []
        for rank in RANKS:
            [(allowed, old)] = dimensions(before, atoms, f"atom{rank}", [(ops, centre)])
            [(_, new)] = dimensions(after, atoms, f"atom{rank}", [(ops, centre)])
            missing_before += allowed - old
            missing_after += allowed - new
            mark = "" if old == allowed else " **"
            cells.append(f"{allowed} / {old}{mark} / {new}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"Missing dimensions summed over the table: 0.1 expansion {missing_before}, now {missing_after}.")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(lines[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
