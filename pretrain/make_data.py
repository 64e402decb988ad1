"""Build the training, validation-pool and held-out files of the pretrained model ``dielectric-v1``.

One command, from the repository root (the shared DFT data beside it)::

    python pretrain/make_data.py --data ../shared/data --out pretrain/data

Sources (read with etgnn's own readers, labels as full Cartesian tensors in etgnn's conventions):

- phonondb_bec_eps/train.xyz (PBEsol DFPT; e3nn-models, MIT): ``becs`` -> ``born_charges`` (e),
  ``eps`` -> ``epsilon`` (eps_inf, dimensionless).  The 100 crystals of benchmarks/accuracy.py's
  phonondb test split (seed 0) are held out.
- mp_dielectric/train.xyz + train_extra.xyz (PBE DFPT; Materials Project, CC BY 4.0, as published
  with MACE-Field): ``REF_becs`` -> ``born_charges_pbe`` (e), ``REF_polarisability`` alpha ->
  ``epsilon_pbe`` = 1 + 4 pi alpha.  20 % of train.xyz (seed 0) is held out.

Training rows: every other structure, less (a) the structures that are the same material (reduced
formula and space group) as any held-out structure of either set, (b) MP rows whose Born charges
break the acoustic sum rule by more than 1 e (benchmarks/accuracy.py's threshold).  The two
functionals get heads of their own on one backbone (docs/pretrained.md says why); the default
outputs ``born_charges`` and ``epsilon`` are the PBEsol (phonondb) level.

Writes OUT/train.extxyz (training + validation pool), OUT/test_phonondb.extxyz,
OUT/test_mp.extxyz and OUT/summary.json (counts of every step).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ase.io
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from accuracy import (SEED, SETS, SUM_RULE_THRESHOLD, labelled_frames, material_key,  # noqa: E402
                      read_labelled, split_indices)
from etgnn.data.labels import acoustic_sum_violation  # noqa: E402

ATOM2 = {"level": "atom", "rank": 2}
STRUCT2 = {"level": "structure", "rank": 2}
PHONONDB = {"born_charges": "becs", "epsilon": "eps"}
MP = {"born_charges_pbe": "REF_becs", "epsilon_pbe": "REF_polarisability"}
SETTINGS = {"born_charges": ATOM2, "epsilon": STRUCT2, "born_charges_pbe": ATOM2, "epsilon_pbe": STRUCT2}
#: held-out part of mp_dielectric/train.xyz
MP_TEST_FRACTION = 0.2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "pretrain" / "data")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # phonondb: the same held-out 100 crystals as benchmarks/accuracy.py (rng seed 0, first draw)
    p_atoms, p_lab = read_labelled(args.data / SETS["phonondb"]["train"], PHONONDB, SETTINGS)
    p_pool, p_test = split_indices(len(p_atoms), SETS["phonondb"]["test"], np.random.default_rng(SEED))

    # Materials Project: 20 % of train.xyz held out; train_extra.xyz is training data only
    m_atoms, m_lab = read_labelled(args.data / "mp_dielectric/train.xyz", MP, SETTINGS)
    x_atoms, x_lab = read_labelled(args.data / "mp_dielectric/train_extra.xyz", MP, SETTINGS)
    m_pool, m_test = split_indices(len(m_atoms), MP_TEST_FRACTION, np.random.default_rng(SEED))
    for lab in (m_lab, x_lab):  # eps_inf = 1 + 4 pi alpha
        lab["epsilon_pbe"] = [np.eye(3) + 4 * np.pi * np.asarray(a) for a in lab["epsilon_pbe"]]

    held = {material_key(p_atoms[i]) for i in p_test} | {material_key(m_atoms[i]) for i in m_test}
    summary = {"phonondb": {"n": len(p_atoms), "test": len(p_test)},
               "mp_train": {"n": len(m_atoms), "test": len(m_test)}, "mp_train_extra": {"n": len(x_atoms)},
               "sum_rule_threshold_e": SUM_RULE_THRESHOLD}

    def keep(atoms, lab, idx, name, bec=None):
        same = [i for i in idx if material_key(atoms[i]) in held]
        rows = [i for i in idx if i not in set(same)]
        broken = [i for i in rows if bec and acoustic_sum_violation(lab[bec][i]) > SUM_RULE_THRESHOLD]
        rows = [i for i in rows if i not in set(broken)]
        summary.setdefault(name, {}).update(pool=len(idx), same_material_as_test=len(same),
                                            sum_rule_broken=len(broken), used=len(rows))
        return rows

    frames = (labelled_frames(p_atoms, p_lab, keep(p_atoms, p_lab, p_pool, "phonondb"))
              + labelled_frames(m_atoms, m_lab, keep(m_atoms, m_lab, m_pool, "mp_train", "born_charges_pbe"))
              + labelled_frames(x_atoms, x_lab, keep(x_atoms, x_lab, np.arange(len(x_atoms)), "mp_train_extra",
                                                     "born_charges_pbe")))
    ase.io.write(args.out / "train.extxyz", frames, format="extxyz")
    ase.io.write(args.out / "test_phonondb.extxyz", labelled_frames(p_atoms, p_lab, p_test), format="extxyz")
    ase.io.write(args.out / "test_mp.extxyz", labelled_frames(m_atoms, m_lab, m_test), format="extxyz")
    summary["n_train_file"] = len(frames)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
