"""29Si shielding tensors (si_nmr): a trained model's validation MAE beside the mean-tensor baseline.

Uses the split of the config (``examples/si_nmr.yaml``: 80 / 20, seed 0), so the baseline (the
mean labelled tensor of the training part, predicted for every labelled Si of the validation
part) and the model are scored on the same labelled sites.  Writes
``benchmarks/results/si_nmr.json`` and prints a line per row.

    python benchmarks/si_nmr_baseline.py examples/si_nmr.yaml runs/si_nmr/best.ckpt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default="benchmarks/results/si_nmr.json")
    args = parser.parse_args(argv)
    import etgnn
    from etgnn.data.dataset import make_splits
    from etgnn.evaluate import evaluate

    cfg = etgnn.load_config(args.config)
    splits = make_splits(cfg, progress=False)
    name = next(iter(cfg.targets))

    def labelled(ds):
        rows = np.concatenate([lab[name].reshape(-1, 9) for lab in ds.labels])
        return rows[~np.isnan(rows).all(axis=1)]

    train, val = labelled(splits["train"]), labelled(splits["val"])
    mean = train.mean(axis=0)
    baseline = {"mae": float(np.abs(val - mean).mean()), "iso_mae": float(np.abs((val - mean)[:, [0, 4, 8]].mean(1)).mean())}
    model = etgnn.load_model(args.checkpoint)
    metrics, _, _ = evaluate(model, splits["val"])
    out = {"config": args.config, "n_train_sites": len(train), "n_val_sites": len(val),
           "mean_tensor_baseline": baseline, "model": metrics[name]}
    Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    print(f"validation sites {len(val)} (training sites {len(train)})")
    print(f"mean-tensor baseline  MAE {baseline['mae']:.2f} ppm (isotropic part {baseline['iso_mae']:.2f})")
    print(f"model                 MAE {metrics[name]['mae']:.2f} ppm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
