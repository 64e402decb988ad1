"""The shipped model's calibrated uncertainty (issue 26): LLPR fitted on the pretraining data,
calibrated on the run's validation part, scored on the held-out crystals (pretrain/export.py).

- ``F^T F`` of every head from ``n_train`` training structures drawn at random (seed 0) from the
  run's training part (all of them by default; a subsample scales ``F^T F`` roughly by its share,
  which the calibrated ``alpha`` and the ``lambda`` grid, relative to the mean eigenvalue, absorb);
- ``alpha`` and ``lambda`` of each target on the run's validation part (``coverage2``: the share
  of validation components within 2 sigma made a Gaussian's);
- the metrics of :func:`etgnn.uncertainty.uncertainty_metrics` on the held-out files of
  pretrain/make_data.py: the PBEsol heads on the 100 phonondb crystals, the PBE heads on the MP ones;
- a figure: calibration curve and |error| against sigma for the Born charges of both sets.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

#: held-out file and the targets scored on it
HELD_OUT = {"phonondb": ("test_phonondb.extxyz", ("born_charges", "epsilon")),
            "mp": ("test_mp.extxyz", ("born_charges_pbe", "epsilon_pbe"))}


def calibrate(model, data_dir: Path, n_train: int | None = None, method: str = "coverage2") -> dict:
    """Fit LLPR on the run's training part (or ``n_train`` of it) and calibrate on its validation part.

    Sets ``model.uncertainty``; returns ``{"n_train", "n_val", "seconds", "calibration": {...}}``.
    """
    from etgnn.data.dataset import make_splits
    from etgnn.train.calibrate import fit_uncertainty

    data = dataclasses.replace(model.config.data, train=str(data_dir / "train.extxyz"), val=None, test=None)
    splits = make_splits(dataclasses.replace(model.config, data=data), progress=False)
    train = splits["train"]
    if n_train is not None and n_train < len(train):
        pick = np.sort(np.random.default_rng(0).choice(len(train), n_train, replace=False))
        train = train.subset(pick.tolist())
    t0 = time.perf_counter()
    report = fit_uncertainty(model, {"train": train, "val": splits["val"]}, method=method)
    return {"n_train": len(train), "n_train_available": len(splits["train"]), "n_val": len(splits["val"]),
            "seconds": round(time.perf_counter() - t0, 1), "method": method,
            "calibration": {n: {k: v for k, v in c.items() if not isinstance(v, (list, dict))}
                            for n, c in report["calibration"].items()}}


def score(model, data_dir: Path) -> tuple[dict, dict]:
    """Uncertainty metrics on the held-out crystals, and the (pred, ref, std) arrays behind them.

    Each held-out file carries the labels of its own set only, so it is read with that set's
    targets (the other heads' outputs are not scored there).
    """
    import torch

    from etgnn.data.batch import to_device
    from etgnn.data.dataset import load_structures_dataset, make_loader
    from etgnn.uncertainty import uncertainty_metrics

    metrics, arrays = {}, {}
    model.eval()
    for set_name, (file, names) in HELD_OUT.items():
        config = dataclasses.replace(model.config, targets={n: model.config.targets[n] for n in names})
        dataset = load_structures_dataset(data_dir / file, config, progress=False)
        got = {n: ([], [], []) for n in names}
        with torch.no_grad():
            for batch in make_loader(dataset, config, shuffle=False):
                batch = to_device(batch, model.device)
                out, sig = model.uncertainty.predict(model, batch)
                for n in names:
                    for store, value in zip(got[n], (out[n], batch[n], sig[n])):
                        store.append(value.detach().cpu().double().numpy())
        arrays[set_name] = {n: tuple(np.concatenate(v) for v in got[n]) for n in names}
        metrics[set_name] = {n: uncertainty_metrics(*arrays[set_name][n]) for n in names}
    return metrics, arrays


def plot(arrays: dict, path: Path, name: str) -> None:
    """Calibration curve and |error| against sigma of the Born charges on both held-out sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from etgnn.uncertainty import calibration_curve

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.7), dpi=110)
    for set_name, target in (("phonondb", "born_charges"), ("mp", "born_charges_pbe")):
        pred, ref, std = (a.reshape(a.shape[0], -1) for a in arrays[set_name][target])
        rows = ~np.isnan(ref).all(axis=1)
        err, sig = np.abs(pred - ref)[rows], std[rows]
        keep = sig > 0
        expected, observed = calibration_curve(err[keep] / sig[keep])
        axes[0].plot(expected, observed, label=f"{set_name} {target}")
        row_err, row_sig = np.sqrt((err**2).mean(1)), np.sqrt((sig**2).mean(1))
        ax = axes[1] if set_name == "phonondb" else axes[2]
        ax.loglog(row_sig, row_err, ".", ms=2, alpha=0.4)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        lim = np.array([max(row_sig.min(), 1e-4), row_sig.max()])
        ax.plot(lim, lim, "k-", lw=0.8, label="|error| = sigma")
        ax.plot(lim, 2 * lim, "k--", lw=0.8, label="2 sigma")
        ax.set(xlabel="predicted sigma per atom (RMS over components, e)", ylabel="|error| per atom (RMS, e)",
               title=f"{set_name} held-out: {target}")
        ax.legend(fontsize=7)
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="expected share within the interval", ylabel="observed share",
                title=f"{name}: calibration (held-out)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(report: dict) -> list[str]:
    """The uncertainty section of benchmarks/results/pretrained_NAME.md."""
    cal = report["fit"]
    lines = ["", "## Calibrated uncertainty (LLPR) on the held-out crystals", "",
             f"LLPR fitted on {cal['n_train']} of the {cal['n_train_available']} training structures (random, seed 0), "
             f"calibrated ({cal['method']}) on the run's {cal['n_val']} validation structures; {cal['seconds']:.0f} s. "
             "Spearman: rank correlation of the row's RMS sigma and RMS error (rows: atoms for Born charges, "
             "crystals for eps_inf). Goals (issue 26): Spearman per atom >= 0.5, 2-sigma coverage 0.93-0.97.", "",
             "| set | target | Spearman | within 1 sigma | within 2 sigma | miscalibration area | NLL | mean sigma | RMSE | rows |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for set_name, per_target in report["held_out"].items():
        for target, m in per_target.items():
            lines.append(f"| {set_name} | {target} | {m['spearman']:.3f} | {m['coverage_1sigma']:.3f} | "
                         f"{m['coverage_2sigma']:.3f} | {m['miscalibration_area']:.3f} | {m['nll']:.3f} | "
                         f"{m['mean_std']:.4g} | {m['rmse']:.4g} | {m['n_rows']} |")
    return lines
