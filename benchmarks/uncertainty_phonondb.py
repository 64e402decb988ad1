"""LLPR uncertainty on held-out phonondb crystals (issue 26): a short training, then
``etgnn calibrate``'s fit (one pass over the training part, calibration on the validation part),
scored on the held-out test part: Spearman(sigma, |error|) per atom / per crystal, share of
components within 1 and 2 sigma, miscalibration area, Gaussian NLL, and the fit's cost.

    python benchmarks/uncertainty_phonondb.py --minutes 12 --out benchmarks/results

Writes ``uncertainty_phonondb.json`` / ``.md`` and a calibration-curve and error-vs-sigma plot
(``uncertainty_phonondb.png``).  The training is short (the point is the uncertainty, not the
accuracy; docs/results.md has the long runs).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402
import numpy as np
import torch

DATA = Path("/work/shared/data/phonondb_bec_eps/train.xyz")


def config(args) -> dict:
    return {
        "model": {"hidden_channels": args.hidden, "triplet_channels": args.hidden, "num_blocks": args.blocks,
                  "seed": 0},
        "targets": {"born_charges": {"key": "becs", "level": "atom", "rank": 2, "sum_rule": True, "unit": "e"},
                    "epsilon": {"key": "eps", "level": "structure", "rank": 2, "reduce": "mean",
                                "symmetry": "ij=ji"}},
        "data": {"train": str(args.data), "split": [0.7, 0.15, 0.15], "split_seed": 0, "cache_dir": None,
                 "num_workers": 0, "max_structures": args.max_structures},
        "training": {"batch_size": 16, "lr": 2e-3, "lr_schedule": "cosine", "min_lr": 1e-5, "warmup_epochs": 1,
                     "max_epochs": args.epochs, "max_time": args.minutes, "early_stopping_patience": 1000,
                     "progress": False, "seed": 0},
        "run_dir": str(args.run_dir),
    }


def plot(pred, ref, std, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from etgnn.uncertainty import calibration_curve

    names = list(pred)
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 8))
    for k, name in enumerate(names):
        n = pred[name].shape[0]
        e = (pred[name] - ref[name]).reshape(n, -1)
        s = std[name].reshape(n, -1)
        keep = s > 0
        exp, obs = calibration_curve(np.abs(e[keep]) / s[keep])
        ax = axes[0, k]
        ax.plot(exp, obs, label="LLPR, calibrated")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="ideal")
        ax.set(xlabel="expected share in central interval", ylabel="observed share", title=f"{name}: calibration")
        ax.legend()
        ax = axes[1, k]
        row_e, row_s = np.sqrt((e**2).mean(1)), np.sqrt((s**2).mean(1))
        ax.loglog(row_s, row_e, ".", ms=3, alpha=0.5)
        lim = [min(row_s.min(), row_e[row_e > 0].min()), max(row_s.max(), row_e.max())]
        ax.plot(lim, lim, "k--", lw=0.8, label="|error| = sigma")
        ax.set(xlabel="predicted sigma (RMS over components)", ylabel="|error| (RMS over components)",
               title=f"{name}: per {'atom' if pred[name].ndim == 3 and name == 'born_charges' else 'crystal'}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def compare_methods(model, splits) -> dict:
    """Every calibration method on the same training posterior: fitted on val, scored on test."""
    from etgnn.data.dataset import make_loader
    from etgnn.targets.losses import labelled_mask
    from etgnn.uncertainty import LastLayerPosterior, uncertainty_metrics
    from etgnn.uncertainty.posterior import METHODS

    llpr = model.uncertainty
    feats = {}
    for split in ("val", "test"):
        acc = {n: ([], []) for n in llpr.targets}
        for batch in make_loader(splits[split], model.config, shuffle=False):
            jac, out = llpr._features(model, batch, predict=True)
            for n in llpr.targets:
                rows = labelled_mask(batch[n])
                acc[n][0].append(jac[n][rows])
                acc[n][1].append((out[n] - batch[n])[rows].reshape(int(rows.sum()), -1))
        feats[split] = {n: (torch.cat(j), torch.cat(e)) for n, (j, e) in acc.items()}
    out = {}
    for n, post in llpr.posteriors.items():
        out[n] = {}
        for method in METHODS:
            p = LastLayerPosterior.from_state_dict(post.state_dict())
            cal = p.calibrator(method=method)
            cal.add(*feats["val"][n])
            info = cal.finish()
            j, e = feats["test"][n]
            sig = p.variance(j).sqrt().numpy()
            m = uncertainty_metrics(e.double().numpy(), np.zeros(e.shape), sig)
            out[n][method] = {**m, "alpha": info["alpha"], "lambda_relative": info["lambda_relative"]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--minutes", type=float, default=12.0, help="training budget (max_time)")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--max-structures", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/etgnn_uq_phonondb"))
    p.add_argument("--out", type=Path, default=_bench.RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = _bench.machine(threads=args.threads)
    meta["command"] = "python benchmarks/uncertainty_phonondb.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    from etgnn.config import load_config
    from etgnn.data.dataset import make_splits
    from etgnn.model import load_model
    from etgnn.train.calibrate import fit_uncertainty
    from etgnn.train.trainer import train
    from etgnn.uncertainty import predict_with_std, uncertainty_metrics

    cfg = load_config(config(args))
    done = Path(args.run_dir) / "metrics.json"
    with _bench.Timer() as t_train:
        if done.is_file():  # a finished run of the same command: score it again (the uncertainty only)
            import json as _json

            from etgnn.train.trainer import TrainResult

            old = _json.loads(done.read_text())
            result = TrainResult(old["best_val_loss"], old["best_epoch"], old["epochs_run"],
                                 {k: old[k] for k in ("val", "test") if k in old}, args.run_dir, old["stopped"])
            meta["training_reused"] = str(done)
            prev = args.out / "uncertainty_phonondb.json"  # the first run's training time
            if prev.is_file():
                meta["training_wall_s"] = _json.loads(prev.read_text()).get("training", {}).get("wall_s")
        else:
            result = train(cfg)
    if meta.get("training_reused"):
        t_train.wall_s = float(meta.get("training_wall_s") or float("nan"))
    model = load_model(Path(args.run_dir) / "best.ckpt")
    splits = make_splits(cfg, progress=False)
    with _bench.Timer() as t_fit:
        report = fit_uncertainty(model, splits)
    t0 = time.perf_counter()
    pred, ref, std = predict_with_std(model, splits["test"])
    t_test = time.perf_counter() - t0
    with torch.no_grad():  # the same predictions without sigma, for the cost ratio
        from etgnn.evaluate import evaluate

        t0 = time.perf_counter()
        evaluate(model, splits["test"])
        t_plain = time.perf_counter() - t0
    test = {n: uncertainty_metrics(pred[n], ref[n], std[n]) for n in pred}
    methods = compare_methods(model, splits)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(pred, ref, std, args.out / "uncertainty_phonondb.png")
    meta["loadavg_end"] = _bench.load_average()
    data = {"meta": meta, "config": config(args) | {"data": {**config(args)["data"], "train": "phonondb_bec_eps/train.xyz"}},
            "structures": {k: len(v) for k, v in splits.items()},
            "training": {"epochs": result.epochs_run, "best_epoch": result.best_epoch, "wall_s": t_train.wall_s,
                         "metrics": result.metrics.get("test", {})},
            "llpr_fit": {"wall_s": t_fit.wall_s, "cpu_s": t_fit.cpu_s, "n_features": {
                n: p.n_features for n, p in model.uncertainty.posteriors.items()}},
            "test_predict_wall_s": {"with_sigma": t_test, "without_sigma": t_plain},
            "calibration": report["calibration"], "val": report.get("val"), "test": test, "methods": methods}
    md = [f"# LLPR uncertainty on held-out phonondb crystals", "", f"Command: `{meta['command']}`", "",
          _bench.header_line(meta), "",
          f"Training: {data['structures']['train']} train / {data['structures']['val']} validation / "
          f"{data['structures']['test']} held-out test crystals (split seed 0), hidden {args.hidden}, "
          f"{args.blocks} blocks, {result.epochs_run} epochs in {t_train.wall_s / 60:.1f} min (best {result.best_epoch}). "
          f"LLPR fit (train pass + validation calibration): {t_fit.wall_s:.0f} s wall. Test prediction with sigma "
          f"{t_test:.1f} s vs {t_plain:.1f} s without."
          + (f" The training is a first run of the same command, reused from {meta['training_reused']} "
             "(only the uncertainty was fitted and scored again)." if meta.get("training_reused") else ""), "",
          "| target | test MAE | Spearman(sigma, abs error) per row | within 1 sigma | within 2 sigma | miscal. area | NLL | alpha | lambda / mean eig |",
          "|---|---|---|---|---|---|---|---|---|"]
    for n, m in test.items():
        cal = report["calibration"][n]
        mae = result.metrics.get("test", {}).get(n, {}).get("mae", float("nan"))
        md.append(f"| {n} ({'per atom' if model.targets[n].level == 'atom' else 'per crystal'}) | {mae:.4g} | "
                  f"{m['spearman']:.3f} | {m['coverage_1sigma']:.3f} | {m['coverage_2sigma']:.3f} | "
                  f"{m['miscalibration_area']:.3f} | {m['nll']:.3f} | {cal['alpha']:.3g} | {cal['lambda_relative']:.0e} |")
    md += ["", "Calibration methods compared on the same features (lambda and alpha fitted on the validation part, "
           "scored on the test part; `coverage2` is the default):", "",
           "| target | method | Spearman | within 1 sigma | within 2 sigma | miscal. area | NLL | alpha | lambda / mean eig |",
           "|---|---|---|---|---|---|---|---|---|"]
    for n, per in methods.items():
        for method, m in per.items():
            md.append(f"| {n} | {method} | {m['spearman']:.3f} | {m['coverage_1sigma']:.3f} | {m['coverage_2sigma']:.3f} | "
                      f"{m['miscalibration_area']:.3f} | {m['nll']:.3f} | {m['alpha']:.3g} | {m['lambda_relative']:.0e} |")
    md += ["", "Goals of issue 26: Spearman >= 0.5 per atom, 2-sigma coverage 0.93-0.97 after calibration.",
           "Plot: `uncertainty_phonondb.png` (calibration curve; RMS error against RMS sigma per row)."]
    _bench.write_results(args.out, "uncertainty_phonondb", data, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
