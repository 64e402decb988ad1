"""Accuracy on every shared DFT data set: train under a wall-clock budget, score a fixed held-out split.

One command (issue 10, item 1)::

    python benchmarks/accuracy.py                         # every set, 60 min each (the issue's budget)
    python benchmarks/accuracy.py --sets phonondb mp --minutes 3
    python benchmarks/accuracy.py --quick --out /tmp/acc  # seconds per set, small subsets (CI)

For each set the structures are read with etgnn's own readers, a held-out test split is drawn with
a fixed seed (or given by the protocol), the rest is written to a temporary extxyz file that the
example config in ``examples/`` trains on (80/20 train/validation, ``split_seed`` 0), and the best
checkpoint predicts the held-out structures, scored here with numpy next to a trivial baseline
(per-element mean tensor for per-atom targets, training-part mean for per-structure targets) and
the published anchor.  Writes ``OUT/accuracy.json`` (everything) and ``OUT/accuracy.md`` (tables).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import ase
import ase.io
import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402  (benchmarks/_bench.py: machine header, timing, results files)

from etgnn import load_model  # noqa: E402
from etgnn.data.labels import LabelSpec, acoustic_sum_violation, extract_label, labelled  # noqa: E402
from etgnn.data.readers import read_structures  # noqa: E402
from etgnn.train import train  # noqa: E402

SEED = 0
#: MP rows whose BECs sum (Frobenius norm over atoms) above this many e break the sum rule;
#: the same threshold as examples/mp_dielectric_bec_piezo.yaml (data.sum_rule_threshold).
SUM_RULE_THRESHOLD = 1.0

#: MACE-Field's published numbers (issue 10) for the Materials Project protocols
MP_ANCHORS = {("born_charges", "mae_diag"): (0.210, "MACE-Field, this validation split (~4.8k train); test split 0.213"),
              ("born_charges", "mae_offdiag"): (0.093, "MACE-Field, this validation split; test split 0.085"),
              ("polarisability", "mae_diag"): (0.058, "MACE-Field, test split"),
              ("polarisability", "mae_offdiag"): (0.0033, "MACE-Field, test split")}

#: protocol of each set: example config, data files, held-out split, targets (name: source key),
#: metrics and anchors.  ``test``: a count, a fraction, or ("file", path) for a separate file.
SETS = {
    "phonondb": dict(
        config="phonondb_bec_eps.yaml", train="phonondb_bec_eps/train.xyz", test=100,
        targets={"born_charges": "becs", "epsilon": "eps"}, metrics=("mae",),
        anchors={("born_charges", "mae"): (0.107, "e3nn-models (NequIP-style), 100-crystal validation split")}),
    "phonondb_joint": dict(
        config="phonondb_bec_eps.yaml", train="phonondb_bec_eps/train.xyz", test=100,
        targets={"born_charges": "becs", "epsilon": "eps"}, metrics=("mae",),
        joint=dict(file=("mp_dielectric/train_extra.xyz", "mp_dielectric/train.xyz"),
                   targets={"born_charges_mp": "REF_becs", "polarisability_mp": "REF_polarisability"},
                   settings={"born_charges_mp": {"level": "atom", "rank": 2, "sum_rule": True, "unit": "e"},
                             "polarisability_mp": {"level": "structure", "rank": 2, "reduce": "mean",
                                                   "symmetry": "ij=ji"}},
                   sum_rule_drop="born_charges_mp"),
        note="The phonondb protocol, trained jointly with all Materials Project DFPT crystals (PBE; "
             "both MP files) through heads of their own; scored on the phonondb test crystals only.",
        anchors={("born_charges", "mae"): (0.107, "e3nn-models (NequIP-style), 100-crystal validation split")}),
    "mp": dict(
        config="mp_dielectric_bec_piezo.yaml", train="mp_dielectric/train_extra.xyz",
        test=("file", "mp_dielectric/train.xyz"),
        targets={"born_charges": "REF_becs",
                 "polarisability": "REF_polarisability"},
        extra_targets={"polarisability": {"level": "structure", "rank": 2, "reduce": "mean",
                                          "symmetry": "ij=ji"}},  # (eps_inf - 1) / (4 pi): dimensionless
        metrics=("mae", "mae_diag", "mae_offdiag"), sum_rule_split=True,
        note="Targets: the example's BEC head plus REF_polarisability (in place of its piezo head), "
             "the two quantities with MACE-Field anchors.",
        anchors=MP_ANCHORS),
    "mp_joint": dict(
        config="mp_dielectric_bec_piezo.yaml", train="mp_dielectric/train_extra.xyz",
        test=("file", "mp_dielectric/train.xyz"),
        targets={"born_charges": "REF_becs", "polarisability": "REF_polarisability"},
        extra_targets={"polarisability": {"level": "structure", "rank": 2, "reduce": "mean", "symmetry": "ij=ji"}},
        metrics=("mae", "mae_diag", "mae_offdiag"), sum_rule_split=True,
        joint=dict(file="phonondb_bec_eps/train.xyz",
                   targets={"born_charges_pbesol": "becs", "polarisability_pbesol": "eps"},
                   settings={"born_charges_pbesol": {"level": "atom", "rank": 2, "sum_rule": True, "unit": "e"},
                             "polarisability_pbesol": {"level": "structure", "rank": 2, "reduce": "mean",
                                                       "symmetry": "ij=ji"}},
                   transform={"polarisability_pbesol": lambda eps: (eps - np.eye(3)) / (4 * np.pi)}),
        note="The mp protocol, trained jointly with the phonondb crystals (PBEsol DFPT) through heads of "
             "their own (a per-data-set head on one shared backbone); scored on the MP test split only.",
        anchors=MP_ANCHORS),
    "mlearn_si": dict(
        config="mlearn_si_forces.yaml", train="mlearn/Si_training.json", test=0.2,
        targets={"energy": "outputs.energy", "forces": "outputs.forces"}, metrics=("mae",),
        anchors={("forces", "mae"): (0.07, "GAP (Zuo et al. 2020, their test split); MTP 0.06")}),
    "mlearn_ge": dict(
        config="mlearn_si_forces.yaml", train="mlearn/Ge_training.json", test=0.2,
        targets={"energy": "outputs.energy", "forces": "outputs.forces"}, metrics=("mae",),
        anchors={("forces", "mae"): (0.05, "GAP level (Zuo et al. 2020, their test split; issue 10 goal)")}),
    "spice": dict(
        config="quickstart.yaml", train="spice_dipeptides/train.xyz", test=0.2,  # quick start's model, cosine for the hour
        targets={"apt": "bec"}, metrics=("mae", "mae_diag", "mae_offdiag"), pred_column="pred_bec",
        overrides=["training.max_epochs=100000", "training.lr_schedule=cosine", "training.min_lr=1.0e-5",
                   "training.warmup_epochs=2", "training.early_stopping_patience=1000"],
        note="The 55 structures are conformers of 6 dipeptides (6 formulas): a random split puts "
             "conformers of the same molecules in training and test, so this measures interpolation "
             "between conformers, not transfer to unseen dipeptides.",
        anchors={("apt", "mae"): (0.058, "the file's pred_bec (long-range model), all 55 structures")}),
    "water_monomer": dict(
        config="water_polarizability.yaml", train="water_monomer/train.xyz", test=0.2,
        targets={"alpha": "alpha", "beta": "beta"}, metrics=("mae", "rel_rmse"), anchors={},
        note="Issue 10 quotes no SA-GPR numbers for water: anchor left empty."),
    "water_bulk": dict(
        config="water_bulk_dielectric.yaml", train="water_bulk/train.xyz", test=0.2,
        targets={"alpha": "alpha", "epsilon": "epsilon"}, metrics=("mae", "rel_rmse"), anchors={},
        note="Issue 10 quotes no SA-GPR numbers for water: anchor left empty.",
        units={"alpha": "as published: Angstrom^3-sized (about 1.4 per molecule), see the data README"},
        quick_pool=12),  # 96-atom boxes: 40 of them leave no epoch in the quick budget
    "si_nmr": dict(
        config="si_nmr.yaml", train="si_nmr/train.json", test=0.2,
        targets={"shielding": "nmr_tensor"}, metrics=("mae", "mae_diag", "mae_offdiag"), anchors={},
        units={"shielding": "ppm"},
        note="Shielding tensors are given for the atoms flagged in atom_selector only (one Si per "
             "inequivalent site); the others are unlabelled (NaN) and left out of training, baseline and "
             "metrics, which count labelled atoms only. Baseline: the mean tensor of the labelled training "
             "atoms (all Si). Issue 10 quotes no published number: anchor left empty."),
}
#: --quick: small subsets, at most ``epochs`` epochs within ``minutes`` (the epoch cap keeps it short on
#: an idle machine, the time leaves room for an epoch on a loaded one)
QUICK = dict(minutes=1.0, epochs=2, pool=40, test=10)


def hardware() -> dict:
    """CPU model, logical cores, torch threads and versions of this machine (from :func:`_bench.machine`)."""
    m = _bench.machine()
    return {"cpu": m["cpu"], "logical_cores": m["cores"], "torch_threads": m["torch_threads"],
            "OMP_NUM_THREADS": m["OMP_NUM_THREADS"], "torch": m["torch"], "python": m["python"],
            "load_average_1min_at_start": round(m["loadavg_start"][0], 2) if m["loadavg_start"] else None}


def read_labelled(path: Path, targets: dict, tcfg: dict) -> tuple[list[ase.Atoms], dict]:
    """Structures of ``path`` and their labels ``{target: list of full Cartesian tensors}``."""
    atoms = read_structures(path)
    labels = {}
    for name, key in targets.items():
        t = tcfg[name]
        spec = LabelSpec(key, t["level"], t["rank"])
        labels[name] = [extract_label(a, spec, source=str(path), index=i) for i, a in enumerate(atoms)]
    return atoms, labels


def write_labelled(path: Path, atoms: list, labels: dict, idx, extra_frames: list = ()) -> None:
    """Bare structures ``atoms[idx]`` with each label flattened under the name ``y_<target>``
    (then ``extra_frames``, already in that form)."""
    ase.io.write(path, labelled_frames(atoms, labels, idx) + list(extra_frames), format="extxyz")


def labelled_frames(atoms: list, labels: dict, idx) -> list:
    """:func:`write_labelled`'s frames."""
    frames = []
    for i in idx:
        a = ase.Atoms(numbers=atoms[i].numbers, positions=atoms[i].positions, cell=atoms[i].cell,
                      pbc=atoms[i].pbc)
        for name, vals in labels.items():
            v = np.asarray(vals[i])
            if v.ndim and v.shape[0] == len(a) and v.shape[1:] == (3,) * (v.ndim - 1):
                a.arrays[f"y_{name}"] = v.reshape(len(a), -1)
            else:
                a.info[f"y_{name}"] = v.ravel()
        frames.append(a)
    return frames


def material_key(atoms) -> tuple[str, int]:
    """(reduced formula, space-group number at symprec 0.1): the same material in two databases."""
    import spglib
    from pymatgen.core import Composition

    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    dataset = spglib.get_symmetry_dataset(cell, symprec=0.1)
    number = int(dataset.number) if dataset is not None else 0
    return Composition(atoms.get_chemical_formula()).reduced_formula, number


def joint_frames(spec: dict, data_dir: Path, test_atoms: list) -> tuple[list, dict]:
    """Frames of the second data set of a joint protocol (``spec["joint"]``), its labels written
    under its own target names; the structures of the same materials as any test structure
    (:func:`material_key`) are left out.  Returns (frames, summary)."""
    joint = spec["joint"]
    files = joint["file"] if isinstance(joint["file"], tuple) else (joint["file"],)
    atoms, labels = [], {name: [] for name in joint["targets"]}
    for f in files:
        a, lab = read_labelled(data_dir / f, joint["targets"], joint["settings"])
        atoms += a
        for name in labels:
            labels[name] += lab[name]
    for name, fn in joint.get("transform", {}).items():
        labels[name] = [fn(v) for v in labels[name]]
    test_keys = {material_key(a) for a in test_atoms}
    keep = [i for i, a in enumerate(atoms) if material_key(a) not in test_keys]
    summary = {"file": " + ".join(files), "n_structures": len(atoms), "n_used": len(keep),
               "n_excluded_test_materials": len(atoms) - len(keep), "targets": list(joint["targets"])}
    if joint.get("sum_rule_drop"):  # rows of the added set that break the sum rule, as sum_rule_split
        ok = [i for i in keep if acoustic_sum_violation(labels[joint["sum_rule_drop"]][i]) <= SUM_RULE_THRESHOLD]
        summary["n_dropped_sum_rule"] = len(keep) - len(ok)
        summary["n_used"], keep = len(ok), ok
    return labelled_frames(atoms, labels, keep), summary


def baseline(train_atoms: list, train_values: list, test_atoms: list, level: str) -> list:
    """Trivial predictions for ``test_atoms`` fitted on the training part.

    level ``"atom"``: each atom gets the mean (3, ...) tensor of its element over the labelled
    training atoms (the mean over all labelled training atoms for an element with none);
    ``"extensive"`` (a structure total such as an energy): the mean per atom times the atoms;
    ``"structure"``: the mean tensor of the labelled training structures.  Unlabelled entries (NaN
    rows) are left out.
    """
    if level == "extensive":  # a total (energy): the mean per atom times the number of atoms
        v = np.stack(train_values) / np.array([len(a) for a in train_atoms])
        mean = v[labelled(v)].mean(axis=0)
        return [mean * len(a) for a in test_atoms]
    if level != "atom":
        v = np.stack(train_values)
        mean = v[labelled(v)].mean(axis=0)
        return [mean for _ in test_atoms]
    z = np.concatenate([a.numbers for a in train_atoms])
    v = np.concatenate(train_values)
    keep = labelled(v)
    z, v = z[keep], v[keep]
    means = {int(e): v[z == e].mean(axis=0) for e in np.unique(z)}
    overall = v.mean(axis=0)
    return [np.stack([means.get(int(e), overall) for e in a.numbers]) for a in test_atoms]


def scores(pred: list, ref: list, metrics, level: str = "structure", n_atoms=None) -> dict:
    """Metrics of predictions against references, one array per structure: level ``"atom"``
    (n_atoms, 3, ...), ``"structure"`` (3, ...).

    mae: mean |error| over every component; mae_diag / mae_offdiag (rank >= 2): over the
    components with equal / unequal last two indices; rel_rmse: 100 * RMSE / RMS deviation of the
    references from their mean (per component, pooled), in percent (SA-GPR's "% RMSE");
    mae_per_atom (structure scalars such as a total energy, with ``n_atoms``): mean |error| / atoms.
    Unlabelled references (NaN rows: atoms without a label) are left out.
    """
    join = np.concatenate if level == "atom" else np.stack
    p, r = join(pred).astype(float), join(ref).astype(float)  # (atoms or structures, 3, ..., 3)
    keep = labelled(r)
    p, r = p[keep], r[keep]
    err = p - r
    out = {}
    for m in metrics:
        if m == "mae":
            out[m] = float(np.abs(err).mean())
        elif m in ("mae_diag", "mae_offdiag") and err.ndim >= 3:
            diag = np.eye(err.shape[-1], dtype=bool)
            out[m] = float(np.abs(err[..., diag if m == "mae_diag" else ~diag]).mean())
        elif m == "rel_rmse":
            out[m] = float(100 * np.sqrt((err ** 2).mean() / ((r - r.mean(axis=0)) ** 2).mean()))
        elif m == "mae_per_atom" and level == "structure" and err.ndim == 1 and n_atoms is not None:
            out[m] = float(np.abs(err / np.asarray(n_atoms, dtype=float)[keep]).mean())
    return out


def split_indices(n: int, test, rng) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) indices: ``test`` a count or a fraction of ``n``, drawn with ``rng``."""
    perm = rng.permutation(n)
    n_test = int(test) if isinstance(test, int) else int(round(test * n))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def set_config(spec: dict, train_file: Path, test_file: Path, run_dir: Path, minutes: float,
               overrides: list[str] = ()) -> dict:
    """The example config with this protocol's targets, files, budget and run folder, then
    ``overrides`` (``"section.key=value"``, as on etgnn's command line) applied."""
    from etgnn.config import apply_overrides

    cfg = yaml.safe_load((ROOT / "examples" / spec["config"]).read_text())
    new = {}
    for name, t in target_settings(spec).items():
        t = dict(t, key=f"y_{name}")  # the labels are written as full Cartesian tensors
        t.pop("voigt_order", None)
        t.pop("transpose", None)
        new[name] = t
    cfg["targets"] = new
    data = cfg.setdefault("data", {})
    data.update(train=str(train_file), test=str(test_file), val=None, num_workers=1, cache_dir=None,
                split=[0.8, 0.2, 0.0], split_seed=SEED)
    tr = cfg.setdefault("training", {})
    tr.update(max_time=float(minutes), progress=False)
    for name, t in spec.get("joint", {}).get("settings", {}).items():  # a second data set's own heads
        cfg["targets"][name] = dict(t, key=f"y_{name}")
    if "joint" in spec:  # the test file lacks the second set's labels; it is scored here, not by train()
        data["test"] = None
    cfg["run_dir"] = str(run_dir)
    return apply_overrides(cfg, list(overrides))


def target_settings(spec: dict) -> dict:
    """{target: settings} of the protocol: the example config's, or ``extra_targets`` for a target
    the example does not train (MP polarisability)."""
    example = yaml.safe_load((ROOT / "examples" / spec["config"]).read_text())["targets"]
    extra = spec.get("extra_targets", {})
    return {name: example[name] if name in example else extra[name] for name in spec["targets"]}


def held_out_split(spec: dict, src: Path, test_src: Path | None, rng) -> tuple:
    """The protocol's split of a set: ``(atoms, labels, t_atoms, t_labels, pool, test, dropped)``.

    The held-out test structures are ``spec["test"]`` (a count or fraction of ``src``, drawn with
    ``rng``) or all of ``test_src``; with ``sum_rule_split`` the pool rows that break the sum rule
    are dropped (``dropped`` of them).  ``benchmarks/learning_curves.py`` splits the same way.
    """
    tcfg = target_settings(spec)
    atoms, labels = read_labelled(src, spec["targets"], tcfg)
    if test_src is not None:
        t_atoms, t_labels = read_labelled(test_src, spec["targets"], tcfg)
        pool, test = np.arange(len(atoms)), np.arange(len(t_atoms))
    else:
        pool, test = split_indices(len(atoms), spec["test"], rng)
        t_atoms, t_labels = atoms, labels
    dropped = 0
    if spec.get("sum_rule_split"):  # drop the training rows that break the sum rule, as the example
        viol = np.array([acoustic_sum_violation(labels["born_charges"][i]) for i in pool])
        dropped = int((viol > SUM_RULE_THRESHOLD).sum())
        pool = pool[viol <= SUM_RULE_THRESHOLD]
    return atoms, labels, t_atoms, t_labels, pool, test, dropped


def run_set(name: str, spec: dict, data_dir: Path, minutes: float, quick: bool, work: Path,
            overrides: list[str] = ()) -> dict:
    """Train and score one set; returns its JSON record."""
    src = data_dir / spec["train"]
    if "skip" in spec:
        return {"set": name, "skipped": spec["skip"]}
    test_src = data_dir / spec["test"][1] if isinstance(spec["test"], tuple) else None
    missing = [str(p) for p in (src, test_src) if p is not None and not p.exists()]
    if missing:
        return {"set": name, "skipped": f"data absent: {', '.join(missing)}"}
    tcfg = target_settings(spec)
    rng = np.random.default_rng(SEED)
    atoms, labels, t_atoms, t_labels, pool, test, dropped_train = held_out_split(spec, src, test_src, rng)
    if quick:
        pool = np.sort(rng.permutation(pool)[:spec.get("quick_pool", QUICK["pool"])])
        test = np.sort(rng.permutation(test)[:QUICK["test"]])
    folder = work / name
    folder.mkdir(parents=True)
    train_file, test_file = folder / "pool.extxyz", folder / "test.extxyz"
    extra, joint = ([], None) if "joint" not in spec else joint_frames(spec, data_dir, [t_atoms[i] for i in test])
    if quick:
        extra = extra[: QUICK["pool"] // 2]
    write_labelled(train_file, atoms, labels, pool, extra_frames=extra)
    write_labelled(test_file, t_atoms, t_labels, test)
    overrides = list(spec.get("overrides", [])) + list(overrides)  # the protocol's, then the command line's
    cfg = set_config(spec, train_file, test_file, folder / "run", minutes,
                     overrides + ([f"training.max_epochs={QUICK['epochs']}"] if quick else []))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(cfg)
    wall = time.perf_counter() - t0
    preds = None  # no epoch finished within the budget: baseline only
    if result.best_epoch >= 0:
        model = load_model(folder / "run" / "best.ckpt")
        with warnings.catch_warnings():  # counted below instead
            warnings.simplefilter("ignore")
            preds = model.predict([t_atoms[i] for i in test])
    seen = set(np.concatenate([atoms[i].numbers for i in pool]).tolist())
    unseen = int(sum(not set(t_atoms[i].numbers.tolist()) <= seen for i in test))
    rec = {"set": name, "config": f"examples/{spec['config']}", "data": spec["train"],
           "test_data": spec["test"][1] if test_src is not None else f"held out of {spec['train']}",
           "n_pool": int(len(pool) + len(extra)), "n_train": int(round(0.8 * (len(pool) + len(extra)))),
           "n_val": int(len(pool) + len(extra) - round(0.8 * (len(pool) + len(extra)))), "n_test": int(len(test)),
           "n_test_unseen_elements": unseen,
           "split_seed": SEED, "budget_min": minutes, "epochs": result.epochs_run,
           "best_epoch": result.best_epoch, "stopped": result.stopped, "wall_s": round(wall, 1),
           "note": spec.get("note", ""), "model": cfg["model"], "training": cfg["training"],
           "overrides": list(overrides), "targets": {}}
    if joint is not None:
        rec["joint"] = joint
    if spec.get("sum_rule_split"):
        rec["sum_rule_threshold_e"] = SUM_RULE_THRESHOLD
        rec["train_rows_dropped_sum_rule"] = dropped_train
    for tname in spec["targets"]:
        level = tcfg[tname]["level"]
        ref = [t_labels[tname][i] for i in test]
        pr = [p[tname] for p in preds] if preds is not None else None
        extensive = level == "structure" and tcfg[tname].get("reduce") == "sum" and tcfg[tname]["rank"] == 0
        base = baseline([atoms[i] for i in pool], [labels[tname][i] for i in pool],
                        [t_atoms[i] for i in test], "extensive" if extensive else level)
        n_test = [len(t_atoms[i]) for i in test]
        metrics = spec["metrics"] + (("mae_per_atom",) if extensive else ())
        entry = {"unit": spec.get("units", {}).get(tname, tcfg[tname].get("unit", "")),
                 "etgnn": scores(pr, ref, metrics, level, n_test) if pr else dict.fromkeys(metrics),
                 "baseline": scores(base, ref, metrics, level, n_test)}
        if spec.get("sum_rule_split") and level == "atom":
            ok = np.array([acoustic_sum_violation(r) <= SUM_RULE_THRESHOLD for r in ref])
            entry["n_test_sum_rule_ok"] = int(ok.sum())
            entry["etgnn_sum_rule_ok"] = (scores([x for x, k in zip(pr, ok) if k], [x for x, k in zip(ref, ok) if k],
                                                 spec["metrics"], level) if pr else dict.fromkeys(spec["metrics"]))
            entry["baseline_sum_rule_ok"] = scores([x for x, k in zip(base, ok) if k],
                                                   [x for x, k in zip(ref, ok) if k], spec["metrics"], level)
        if spec.get("pred_column"):
            col = spec["pred_column"]
            other = [extract_label(t_atoms[i], LabelSpec(col, "atom", 2)) for i in test]
            entry[f"{col}_test"] = scores(other, ref, spec["metrics"], level)
            every = [extract_label(a, LabelSpec(col, "atom", 2)) for a in t_atoms]
            entry[f"{col}_all"] = scores(every, t_labels[tname], spec["metrics"], level)
        entry["anchors"] = {m: {"value": v, "source": s} for (t, m), (v, s) in spec["anchors"].items() if t == tname}
        rec["targets"][tname] = entry
    return rec


METRIC_LABEL = {"mae": "MAE (all components)", "mae_diag": "MAE diagonal (xx, yy, zz)",
                "mae_offdiag": "MAE off-diagonal", "rel_rmse": "relative RMSE, %", "mae_per_atom": "MAE per atom"}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def set_markdown(rec: dict) -> list[str]:
    """Markdown lines of one set's record."""
    if "skipped" in rec:
        return [f"### {rec['set']}", "", f"SKIPPED: {rec['skipped']}.", ""]
    lines = [f"### {rec['set']}", "",
             f"Config `{rec['config']}` (model {json.dumps(rec['model'])}); data `{rec['data']}`, "
             f"test: {rec['test_data']}. Structures: {rec['n_train']} train / {rec['n_val']} validation "
             f"(early stopping) / {rec['n_test']} held-out test (seed {rec['split_seed']}; "
             f"{rec['n_test_unseen_elements']} of them hold elements absent from training). Budget "
             f"{rec['budget_min']:g} min, {rec['epochs']} epochs (best {rec['best_epoch']}, stopped: "
             f"{rec['stopped']}), {rec['wall_s']:.0f} s wall including graph building"
             f"{'; NO epoch finished within the budget: baseline only' if rec['best_epoch'] < 0 else ''}.", ""]
    if rec.get("source_run"):
        src = rec["source_run"]
        lines += [f"From `{src['command']}` ({src['date']}; {src['hardware'].get('cpu')}, "
                  f"{rec.get('torch_threads', src['hardware'].get('torch_threads'))} torch thread(s), load "
                  f"{rec.get('load_average_1min_at_start', src['hardware'].get('load_average_1min_at_start'))} "
                  "at the start).", ""]
    elif rec.get("torch_threads") is not None:
        lines += [f"{rec['torch_threads']} torch thread(s), 1-min load average {rec['load_average_1min_at_start']} "
                  "when the set started.", ""]
    if rec.get("joint"):
        j = rec["joint"]
        lines += [f"Joint training: {j['n_used']} structures of `{j['file']}` added to the training pool with their "
                  f"own heads ({', '.join(f'`{t}`' for t in j['targets'])}; the labels of one data set are absent "
                  f"from the other's structures); {j['n_excluded_test_materials']} of its {j['n_structures']} "
                  "structures are the same materials as test structures (reduced formula and space group) and "
                  "were left out" + (f", and {j['n_dropped_sum_rule']} more break the sum rule (> "
                                     f"{SUM_RULE_THRESHOLD:g} e)" if j.get("n_dropped_sum_rule") else "") + ".", ""]
    if rec.get("overrides"):
        lines += ["Overrides of the example config: " + ", ".join(f"`{o}`" for o in rec["overrides"]) + ".", ""]
    if rec.get("note"):
        lines += [rec["note"], ""]
    if "sum_rule_threshold_e" in rec:
        lines += [f"Sum rule: a row breaks it when the Frobenius norm of the sum of its BECs over "
                  f"atoms exceeds {rec['sum_rule_threshold_e']:g} e; {rec['train_rows_dropped_sum_rule']} "
                  f"such training rows were dropped (as `data.sum_rule_threshold` in the example).", ""]
    lines += ["| target | metric | etgnn | baseline | anchor | anchor source |", "|---|---|---|---|---|---|"]
    for t, e in rec["targets"].items():
        unit = f" ({e['unit']})" if e["unit"] else ""
        for m, v in e["etgnn"].items():
            a = e["anchors"].get(m, {})
            label = METRIC_LABEL[m] + (unit if m != "rel_rmse" else "")
            lines.append(f"| {t} | {label} | {_fmt(v)} | {_fmt(e['baseline'].get(m))} | "
                         f"{_fmt(a.get('value'))} | {a.get('source', '')} |")
        if "etgnn_sum_rule_ok" in e:
            for m, v in e["etgnn_sum_rule_ok"].items():
                lines.append(f"| {t}, {e['n_test_sum_rule_ok']} test rows obeying the sum rule | "
                             f"{METRIC_LABEL[m]}{unit} | {_fmt(v)} | {_fmt(e['baseline_sum_rule_ok'].get(m))} | | |")
        for col in [k for k in e if k.endswith("_test") or k.endswith("_all")]:
            for m, v in e[col].items():
                where = "this test split" if col.endswith("_test") else "all structures of the file"
                lines.append(f"| {t}: file's `{col.rsplit('_', 1)[0]}` column, {where} | {METRIC_LABEL[m]}{unit} | "
                             f"{_fmt(v)} | | | extra anchor row |")
    return lines + [""]


#: the headline metric of each target in the summary plot (the anchor's where there is one)
HEADLINE = {"mp": {"born_charges": "mae_diag", "polarisability": "mae_diag"},
            "mp_joint": {"born_charges": "mae_diag", "polarisability": "mae_diag"},
            "mlearn_si": {"energy": "mae_per_atom"}, "mlearn_ge": {"energy": "mae_per_atom"}}


def headline_metric(set_name: str, target: str, entry: dict) -> str:
    """The metric a set's target is summarised by: HEADLINE's, else the first anchored one, else the first."""
    return HEADLINE.get(set_name, {}).get(target) or next(iter(entry["anchors"]), None) or next(iter(entry["etgnn"]))


def summary_rows(records: list) -> list[dict]:
    """One row per (set, target): headline metric of etgnn, baseline and anchor (if any)."""
    rows = []
    for rec in records:
        for t, e in rec.get("targets", {}).items():
            m = headline_metric(rec["set"], t, e)
            rows.append({"set": rec["set"], "target": t, "metric": m, "etgnn": e["etgnn"].get(m),
                         "baseline": e["baseline"].get(m), "anchor": e["anchors"].get(m, {}).get("value")})
    return rows


#: issue 10's goals (2-core CPU, at most 60 min per set): set -> {(target, metric): value}.  The
#: joint protocols are scored on the same test structures; mp_joint trains on more than the goal's
#: 948 MP structures, so its rows are compared with the goal but marked as such.
GOALS = {"phonondb": {("born_charges", "mae"): 0.08, ("epsilon", "mae"): 0.40},
         "mp": {("born_charges", "mae_diag"): 0.21, ("born_charges", "mae_offdiag"): 0.09},
         "mlearn_si": {("forces", "mae"): 0.07}, "mlearn_ge": {("forces", "mae"): 0.05},
         "spice": {("apt", "mae"): 0.058}}
GOALS["phonondb_joint"], GOALS["mp_joint"] = GOALS["phonondb"], GOALS["mp"]


def summary_markdown(records: list) -> list[str]:
    """A table of every set's headline and goal metrics: etgnn, baseline, anchor, goal, met or not."""
    lines = ["## Summary", "",
             "Headline metric of each target (the anchor's where there is one) and every metric with a goal "
             "in issue 10; the sections below have all metrics and each set's protocol.", "",
             "| set | target | metric | etgnn | baseline | anchor | goal | met | budget (min) | epochs |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for rec in records:
        if "skipped" in rec:
            lines.append(f"| {rec['set']} | skipped: {rec['skipped']} | | | | | | | | |")
            continue
        goals = GOALS.get(rec["set"], {})
        for t, e in rec["targets"].items():
            head = headline_metric(rec["set"], t, e)
            metrics = [head] + [m for m in e["anchors"] if m != head]
            metrics += [m for (gt, m) in goals if gt == t and m not in metrics]
            for m in metrics:
                v, goal = e["etgnn"].get(m), goals.get((t, m))
                met = "" if goal is None or v is None else ("yes" if v <= goal else "no")
                if met and rec["set"] == "mp_joint":
                    met += " (more data than the goal's)"
                unit = f" ({e['unit']})" if e["unit"] and m != "rel_rmse" else ""
                lines.append(f"| {rec['set']} | {t} | {METRIC_LABEL[m]}{unit} | {_fmt(v)} | "
                             f"{_fmt(e['baseline'].get(m))} | {_fmt(e['anchors'].get(m, {}).get('value'))} | "
                             f"{_fmt(goal)} | {met} | {rec['budget_min']:g} | {rec['epochs']} |")
    return lines + [""]


def summary_plot(records: list, path: Path) -> None:
    """Bars of etgnn's and the anchor's headline error, as a fraction of the trivial baseline's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary_rows(records) if r["etgnn"] is not None and r["baseline"]]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(rows) + 2), 4.0))
    x = np.arange(len(rows))
    ours = [r["etgnn"] / r["baseline"] for r in rows]
    anchor = [r["anchor"] / r["baseline"] if r["anchor"] is not None else np.nan for r in rows]
    ax.bar(x - 0.2, ours, 0.4, label="etgnn", color="tab:blue")
    ax.bar(x + 0.2, anchor, 0.4, label="published anchor", color="tab:orange")
    for k, r in enumerate(rows):
        ax.text(k - 0.2, ours[k], f"{r['etgnn']:.3g}", ha="center", va="bottom", fontsize=7)
        if r["anchor"] is not None:
            ax.text(k + 0.2, anchor[k], f"{r['anchor']:.3g}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [f"{r['set']}\n{r['target']}\n{r['metric']}" for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("error / error of the trivial baseline")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    ax.set_title("held-out error relative to the per-element / mean-tensor baseline (lower is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, records: list, meta: dict) -> None:
    """``out/accuracy.json``, ``out/accuracy.md`` and the summary plot ``out/accuracy.png``."""
    out.mkdir(parents=True, exist_ok=True)
    summary_plot(records, out / "accuracy.png")
    (out / "accuracy.json").write_text(json.dumps({"meta": meta, "sets": records}, indent=1) + "\n")
    hw = meta["hardware"]
    if meta.get("combined_from"):
        budget = (f"Budget {meta['minutes']:g} min of training per set" if meta["minutes"] == meta["minutes"]
                  else "Budgets differ per set (below)")
        head = (f"Combined by `{meta['command']}` ({meta['date']}) from the runs in "
                f"{', '.join(f'`{d}`' for d in meta['combined_from'])}; each set names the command, date, threads "
                f"and load of the run it comes from. Hardware: {hw['cpu']}, {hw['logical_cores']} logical cores, "
                f"torch {hw['torch']} (a shared machine: other jobs slow the wall-clock budget down). {budget}.")
    else:
        jobs = f", {meta['jobs']} sets at a time" if meta.get("jobs", 1) > 1 else ""
        head = (f"Command: `{meta['command']}` ({meta['date']}). Hardware: {hw['cpu']}, {hw['logical_cores']} "
                f"logical cores, {hw['torch_threads']} torch thread(s) (OMP_NUM_THREADS={hw['OMP_NUM_THREADS']}){jobs}, "
                f"torch {hw['torch']}, 1-min load average {hw['load_average_1min_at_start']} at the start "
                f"(a shared machine: other jobs slow the wall-clock budget down). Budget {meta['minutes']:g} min of "
                f"training per set{' (--quick: small subsets, fields only, numbers meaningless)' if meta['quick'] else ''}.")
    lines = ["# Accuracy on the shared data sets", "", head, "",
             meta.get("note", ""), "",
             "Protocol: the example config trains on the non-test structures (80 % train, 20 % validation "
             "for early stopping and learning-rate decay); the best checkpoint predicts the held-out test "
             "structures. Baseline: per-atom targets get the mean tensor of their element, per-structure "
             "targets the mean tensor, both over the training + validation structures. MAE is the mean "
             "absolute error over tensor components (BEC: all 9 components of every atom; diagonal: xx, yy, "
             "zz of every atom; off-diagonal: the other 6). Relative RMSE (SA-GPR's % RMSE) = 100 * "
             "sqrt(mean squared error over all components of the test structures) / sqrt(mean squared "
             "deviation of the test references from their per-component mean). Anchors are the published "
             "numbers quoted in issue 10; most come from other splits (see each source).", ""]
    lines += summary_markdown(records)
    for rec in records:
        lines += set_markdown(rec)
    (out / "accuracy.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    ap.add_argument("--minutes", type=float, default=60.0, help="training budget per set (minutes)")
    ap.add_argument("--quick", action="store_true",
                    help=f"at most {QUICK['epochs']} epochs in {QUICK['minutes']} min, {QUICK['pool']} training + "
                         f"{QUICK['test']} test structures per set")
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default benchmarks/results; with --quick benchmarks/results/quick, "
                         "so a smoke run never overwrites the committed results)")
    ap.add_argument("--note", default="", help="a line for the top of the md (e.g. 'preliminary short run')")
    ap.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for every set, e.g. training.lr_schedule=cosine (recorded in the results)")
    ap.add_argument("--keep-runs", type=Path, default=None,
                    help="copy each set's run folder (checkpoints, log.csv, metrics) here")
    ap.add_argument("--jobs", type=int, default=1,
                    help="sets trained at once, each in its own process with cores/jobs torch threads "
                         "(2 on a 2-core machine: every set on one core, half the wall time)")
    ap.add_argument("--combine", nargs="+", type=Path, default=None, metavar="DIR",
                    help="no training: merge the accuracy.json of earlier runs (a later DIR's record of a set "
                         "replaces an earlier one's) into OUT/accuracy.md and .json")
    args = ap.parse_args(argv)
    minutes = QUICK["minutes"] if args.quick else args.minutes
    if args.out is None:
        args.out = ROOT / "benchmarks" / "results" / ("quick" if args.quick else "")
    command = shlex.join(["python", "benchmarks/accuracy.py", *(argv if argv is not None else sys.argv[1:])])
    if args.combine:
        return combine(args.combine, args.out, command, args.note)
    meta = {"command": command, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "minutes": minutes, "quick": args.quick, "hardware": hardware(), "note": args.note, "jobs": args.jobs}
    records: dict = {}
    with tempfile.TemporaryDirectory(prefix="etgnn_accuracy_") as tmp:
        jobs = [(name, args.data_dir, minutes, args.quick, Path(tmp), args.override, args.keep_runs)
                for name in args.sets]
        if args.jobs > 1:
            import concurrent.futures as cf
            import multiprocessing as mp

            threads = max(1, (os.cpu_count() or 1) // args.jobs)
            here = str(Path(__file__).resolve().parent)  # workers import this module by name (spawn)
            if here not in sys.path:
                sys.path.insert(0, here)
            with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"),
                                        initializer=_worker_init, initargs=(threads,)) as pool:
                futures = {pool.submit(_run_one, *job): job[0] for job in jobs}
                for future in cf.as_completed(futures):
                    _report_set(future.result(), records, args, meta)
        else:
            for job in jobs:
                _report_set(_run_one(*job), records, args, meta)
    print(f"[accuracy] wrote {args.out / 'accuracy.md'} and {args.out / 'accuracy.json'}")
    return 0


def _worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _run_one(name, data_dir, minutes, quick, work, overrides, keep_runs) -> dict:
    """One set (in this process or a worker): its record, with the threads and load it ran with."""
    print(f"[accuracy] {name} ...", flush=True)
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    rec = run_set(name, SETS[name], data_dir, minutes, quick, work, overrides)
    rec["torch_threads"], rec["load_average_1min_at_start"] = torch.get_num_threads(), load
    if keep_runs is not None and (work / name / "run").is_dir():
        import shutil

        shutil.copytree(work / name / "run", keep_runs / name, dirs_exist_ok=True)
    return rec


def _report_set(rec: dict, records: dict, args, meta: dict) -> None:
    """Add a finished set and rewrite the report (a killed run keeps what it has), in --sets order."""
    records[rec["set"]] = rec
    write_report(args.out, [records[n] for n in args.sets if n in records], meta)
    print(f"[accuracy] {rec['set']}: " + (rec.get("skipped") or json.dumps(
        {t: e["etgnn"] for t, e in rec["targets"].items()})), flush=True)


def combine(dirs: list, out: Path, command: str, note: str = "") -> int:
    """Merge the records of earlier runs (``DIR/accuracy.json``) into ``out``; each set keeps the
    command, date and hardware of the run that produced it."""
    records: dict = {}
    quick = False
    for d in dirs:
        doc = json.loads((Path(d) / "accuracy.json").read_text())
        quick = quick or bool(doc["meta"].get("quick"))
        for rec in doc["sets"]:
            rec = dict(rec)
            rec["source_run"] = {k: doc["meta"].get(k) for k in ("command", "date", "hardware", "minutes", "note")}
            records[rec["set"]] = rec
    order = [n for n in SETS if n in records]
    minutes = sorted({records[n].get("budget_min") for n in order if records[n].get("budget_min") is not None})
    meta = {"command": command, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "minutes": minutes[0] if len(minutes) == 1 else float("nan"), "quick": quick,
            "hardware": hardware(), "note": note, "combined_from": [str(d) for d in dirs]}
    write_report(out, [records[n] for n in order], meta)
    print(f"[accuracy] combined {len(order)} sets into {out / 'accuracy.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
