"""Score the pretraining run on its held-out crystals and ship it as package data with its card.

    python pretrain/export.py                       # pretrain/run/best.ckpt -> src/etgnn/pretrained/
    python pretrain/export.py --checkpoint pretrain/run/best.ckpt --name dielectric-v1

Reads the held-out files written by pretrain/make_data.py (the 100 phonondb test crystals of
benchmarks/accuracy.py and 20 % of mp_dielectric/train.xyz), scores

- ``born_charges`` (PBEsol head) and ``epsilon`` on the phonondb crystals,
- ``born_charges_pbe`` and ``epsilon_pbe`` (PBE heads) on the MP crystals, all of them and the
  ones whose DFT charges obey the acoustic sum rule within 1 e,

overall, by element group and by the size of the anomalous part of Z (how far the isotropic
charge lies from the element's most common oxidation state), and writes

- ``src/etgnn/pretrained/NAME.pt``: the model (weights, config, statistics; no optimiser state),
- ``src/etgnn/pretrained/NAME.json``: the card (targets, elements, data sources and licences,
  held-out errors, epochs trained),
- ``benchmarks/results/pretrained_NAME.md|json``: the same errors as tables, with the command.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "pretrain"))

from accuracy import SUM_RULE_THRESHOLD, scores  # noqa: E402
from ase.data import chemical_symbols  # noqa: E402
from etgnn.data.labels import LabelSpec, acoustic_sum_violation, extract_label  # noqa: E402
from etgnn.data.readers import read_structures  # noqa: E402
from etgnn.model import load_model  # noqa: E402

GOALS = {("phonondb", "born_charges", "mae"): 0.085, ("phonondb", "epsilon", "mae"): 0.30,
         ("mp", "born_charges_pbe", "mae_diag"): 0.21, ("mp", "born_charges_pbe", "mae_offdiag"): 0.085}

#: element groups of the card's breakdown (by the atom whose charge is scored)
GROUPS = {
    "alkali / alkaline earth": {3, 4, 11, 12, 19, 20, 37, 38, 55, 56},
    "transition metals": set(range(21, 31)) | set(range(39, 49)) | set(range(72, 81)),
    "lanthanides": set(range(57, 72)),
    "p-block metals and metalloids": {5, 13, 14, 31, 32, 33, 49, 50, 51, 52, 81, 82, 83},
    "chalcogens (O, S, Se, Te)": {8, 16, 34, 52},
    "halogens": {9, 17, 35, 53},
    "C, N, P, H": {1, 6, 7, 15},
}
#: bins of |Z_iso - nominal oxidation state| (e): the anomalous part of the Born charge
ANOMALY_BINS = (0.0, 0.25, 0.5, 1.0, np.inf)

SOURCES = [
    {"set": "phonondb_bec_eps", "what": "Born charges and eps_inf of 1,216 crystals, DFPT (PBEsol, ABINIT-type)",
     "source": "phonondb, as distributed by the e3nn-models repository", "licence": "MIT"},
    {"set": "mp_dielectric (train.xyz + train_extra.xyz)",
     "what": "Born charges and eps_inf (from the polarisability) of 1,562 crystals, DFPT (PBE, VASP)",
     "source": "Materials Project, as published with the MACE-Field paper", "licence": "CC BY 4.0 (attribution: "
     "the Materials Project, A. Jain et al., APL Mater. 1, 011002 (2013); Petousis et al., Sci. Data 4, 160134 (2017))"},
]


def nominal_charge(z: int) -> float:
    """The most common oxidation state of element ``z`` (pymatgen), 0 where none is listed."""
    from pymatgen.core import Element

    states = Element.from_Z(int(z)).common_oxidation_states
    return float(states[0]) if states else 0.0


def labels_of(frames, name, level):
    spec = LabelSpec(f"y_{name}", level, 2)
    return [extract_label(a, spec, source="held-out", index=i) for i, a in enumerate(frames)]


def breakdown(frames, pred, ref) -> dict:
    """MAE of per-atom charges by element group and by the size of the anomalous part of Z."""
    z = np.concatenate([a.numbers for a in frames])
    p, r = np.concatenate(pred), np.concatenate(ref)
    err = np.abs(p - r).reshape(len(z), -1).mean(axis=1)
    ok = np.isfinite(err)
    out = {"by_group": {}, "by_anomaly": {}}
    for group, members in GROUPS.items():
        mask = ok & np.isin(z, list(members))
        if mask.any():
            out["by_group"][group] = {"mae": float(err[mask].mean()), "n_atoms": int(mask.sum())}
    nominal = np.array([nominal_charge(v) for v in z])
    anomaly = np.abs(np.trace(r, axis1=1, axis2=2) / 3 - nominal)
    for lo, hi in zip(ANOMALY_BINS[:-1], ANOMALY_BINS[1:]):
        mask = ok & (anomaly >= lo) & (anomaly < hi)
        if mask.any():
            out["by_anomaly"][f"{lo:g}-{hi:g} e"] = {"mae": float(err[mask].mean()), "n_atoms": int(mask.sum())}
    return out


def score(model, data: Path) -> dict:
    out = {}
    sets = {"phonondb": ("test_phonondb.extxyz", "born_charges", "epsilon"),
            "mp": ("test_mp.extxyz", "born_charges_pbe", "epsilon_pbe")}
    for set_name, (file, bec, eps) in sets.items():
        frames = read_structures(data / file)
        preds = model.predict(frames)
        rec = {"n_structures": len(frames)}
        ref_b = labels_of(frames, bec, "atom")
        pred_b = [p[bec] for p in preds]
        rec[bec] = scores(pred_b, ref_b, ("mae", "mae_diag", "mae_offdiag"), level="atom")
        rec[bec].update(breakdown(frames, pred_b, ref_b))
        ok = [acoustic_sum_violation(r) <= SUM_RULE_THRESHOLD for r in ref_b]
        if not all(ok):
            keep = [i for i, k in enumerate(ok) if k]
            rec[f"{bec}_sum_rule_ok"] = scores([pred_b[i] for i in keep], [ref_b[i] for i in keep],
                                               ("mae", "mae_diag", "mae_offdiag"), level="atom")
            rec[f"{bec}_sum_rule_ok"]["n_structures"] = len(keep)
        ref_e = labels_of(frames, eps, "structure")
        rec[eps] = scores([p[eps] for p in preds], ref_e, ("mae", "mae_diag", "mae_offdiag"))
        out[set_name] = rec
    return out


def epochs_trained(run: Path) -> tuple[int, float]:
    with open(run / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return (int(rows[-1]["epoch"]) + 1, float(rows[-1]["time_s"]) / 3600) if rows else (0, 0.0)


def plot_learning_curve(run: Path, path: Path) -> None:
    """Validation MAE of each target against epoch, from the run's log.csv (every segment)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(run / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    for ax, names, unit in ((axes[0], ("born_charges", "born_charges_pbe"), "e"),
                            (axes[1], ("epsilon", "epsilon_pbe"), "-")):
        for name in names:
            ax.plot(epochs, [float(r[f"val_{name}_mae"]) for r in rows], marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation MAE ({unit})")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(f"dielectric-v1 pretraining: {len(rows)} epochs ({float(rows[-1]['time_s']) / 3600:.1f} h)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "pretrain" / "run" / "best.ckpt")
    ap.add_argument("--data", type=Path, default=ROOT / "pretrain" / "data")
    ap.add_argument("--name", default="dielectric-v1")
    ap.add_argument("--no-uncertainty", action="store_true", help="ship without the calibrated LLPR uncertainty")
    ap.add_argument("--llpr-train", type=int, default=None, metavar="N",
                    help="fit LLPR's F^T F on N random training structures (default: all)")
    args = ap.parse_args(argv)

    import torch

    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model = load_model(args.checkpoint)
    run = args.checkpoint.parent
    epochs, hours = epochs_trained(run)
    best_epoch = int(ckpt["epoch"])
    max_epochs = model.config.training.max_epochs
    results = score(model, args.data)
    uq = None
    if not args.no_uncertainty:
        import uncertainty as uq_lib  # pretrain/uncertainty.py

        uq = {"fit": uq_lib.calibrate(model, args.data, args.llpr_train)}
        uq["held_out"], arrays = uq_lib.score(model, args.data)
        uq_lib.plot(arrays, ROOT / "docs" / "img" / f"pretrained_{args.name}_uncertainty.png", args.name)

    # the shipped file: no optimiser, no paths of this machine
    data = dataclasses.replace(model.config.data, train="pretrain/data/train.extxyz (python pretrain/make_data.py)",
                               cache_dir=None)
    model.config = dataclasses.replace(model.config, data=data, run_dir="pretrain/run")
    out = ROOT / "src" / "etgnn" / "pretrained"
    model.save(out / f"{args.name}.pt")
    elements = [chemical_symbols[z] for z in np.flatnonzero(model.elements_seen.numpy())]
    status = ("" if epochs >= max_epochs else
              f"interim: best of {epochs} of {max_epochs} epochs of the cosine schedule; training continues")
    card = {
        "name": args.name,
        "etgnn_version": ckpt.get("etgnn_version"),
        "status": status,
        "targets": {name: {"level": t.level, "rank": t.rank, "unit": t.unit or "dimensionless",
                           "level_of_theory": "PBE (Materials Project)" if name.endswith("_pbe")
                           else "PBEsol (phonondb)"} for name, t in model.config.targets.items()},
        "default_targets": {"born_charges": "born_charges", "epsilon": "epsilon"},
        "elements": elements,
        "training_data": SOURCES,
        "held_out": results,
        "goals": {" / ".join(k): v for k, v in GOALS.items()},
        "epochs_trained": epochs, "best_epoch": best_epoch, "hours": round(hours, 2),
        "architecture": {k: getattr(model.config.model, k) for k in ("cutoff", "triplet_cutoff", "hidden_channels",
                                                                      "triplet_channels", "num_blocks")},
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "uncertainty": uq,
    }
    (out / f"{args.name}.json").write_text(json.dumps(card, indent=1) + "\n")
    write_results(args, card)
    plot_learning_curve(run, ROOT / "docs" / "img" / f"pretrained_{args.name}_learning_curve.png")
    print(json.dumps(results, indent=1))
    return 0


def write_results(args, card: dict) -> None:
    res = ROOT / "benchmarks" / "results"
    meta = {"command": "python pretrain/export.py " + " ".join(sys.argv[1:]), "date": dt.date.today().isoformat(),
            "machine": f"{platform.machine()}, {platform.processor() or platform.platform()}"}
    (res / f"pretrained_{args.name}.json").write_text(json.dumps({**meta, **card}, indent=1) + "\n")
    h = card["held_out"]
    lines = [f"# Pretrained model {args.name}: held-out errors", "",
             f"Command: `{meta['command'].strip()}` ({meta['date']}). {card['status'] or 'Training complete'}. "
             f"Epochs trained: {card['epochs_trained']} (best {card['best_epoch']}), {card['hours']} h.", "",
             "| set | target | metric | etgnn | goal | met |", "|---|---|---|---|---|---|"]
    for (set_name, target, metric), goal in GOALS.items():
        v = h[set_name][target][metric]
        lines.append(f"| {set_name} ({h[set_name]['n_structures']} crystals) | {target} | {metric} | {v:.4f} | "
                     f"{goal} | {'yes' if v <= goal else 'no'} |")
    for set_name, rec in h.items():
        for target, m in rec.items():
            if isinstance(m, dict) and "by_group" in m:
                lines += ["", f"## {set_name}: {target} MAE (e) by element group", "", "| group | MAE | atoms |",
                          "|---|---|---|"]
                lines += [f"| {g} | {v['mae']:.4f} | {v['n_atoms']} |" for g, v in m["by_group"].items()]
                lines += ["", f"## {set_name}: {target} MAE (e) by the anomalous part of Z "
                          "(|Z_iso - nominal oxidation state|)", "", "| anomalous part | MAE | atoms |", "|---|---|---|"]
                lines += [f"| {b} | {v['mae']:.4f} | {v['n_atoms']} |" for b, v in m["by_anomaly"].items()]
    if card.get("uncertainty"):
        import uncertainty as uq_lib

        lines += uq_lib.markdown(card["uncertainty"])
    (res / f"pretrained_{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
