"""``etgnn calibrate``: add a calibrated per-component uncertainty (LLPR) to a trained model.

One pass over the model's training data accumulates each head's ``F^T F`` and one pass over the
validation data fits the regulariser and the calibration factor (maximum Gaussian likelihood;
:mod:`etgnn.uncertainty`).  By default the data are the checkpoint's own ``data.train`` (and
``data.val``), split exactly as in training (``data.split_seed``).  The same function runs at the
end of training with ``training.uncertainty: llpr``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

__all__ = ["add_parser", "fit_uncertainty", "add_uncertainty_to_checkpoint"]

_HELP = """\
Add calibrated per-component uncertainty (last-layer prediction rigidity, LLPR) to a trained
model and write it as a new model file: one pass over the training data, then the scale of each
target's uncertainty is fitted on the validation data (--calibration: by default the share of
validation components within 2 sigma is made a Gaussian's, 0.954). By default
the data are the checkpoint's data.train / data.val, split as in training; --train names another
training file (split by the checkpoint's data.split unless --val is given too), --val another
calibration file (the training part stays as in training).
The new file predicts NAME_std for every target: etgnn predict --uncertainty, model.predict(...,
uncertainty=True), calc.get_property("NAME_std"). See docs/uncertainty.md.
"""


def add_parser(subparsers) -> None:
    """Register the ``calibrate`` subcommand."""
    p = subparsers.add_parser("calibrate", help="add calibrated per-component uncertainty (LLPR) to a model",
                              description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="best.ckpt / last.ckpt or a saved model")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt", help="model file to write (with uncertainty)")
    p.add_argument("--train", metavar="DATA", default=None,
                   help="training data (default: the checkpoint's data.train, split as in training)")
    p.add_argument("--val", metavar="DATA", default=None,
                   help="calibration data (default: the checkpoint's validation part)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="structures per batch")
    p.add_argument("--calibration", default="coverage2", choices=["coverage2", "coverage1", "likelihood"],
                   help="how sigma's scale is fitted on the validation data: match the share within 2 sigma "
                        "(default) or 1 sigma to a Gaussian's, or maximise the Gaussian likelihood")
    p.add_argument("--metrics", metavar="JSON", default=None, help="also write the calibration and metrics here")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no progress bars (shown on a terminal only)")
    p.set_defaults(func=_calibrate)


def fit_uncertainty(model, splits: dict, *, batch_size: int | None = None, method: str = "coverage2",
                    progress: bool = False) -> dict:
    """Fit LLPR on ``splits["train"]``, calibrate it on ``splits["val"]``, set ``model.uncertainty``.

    Returns:
        ``{"calibration": {target: posterior.calibration}, "val": {target: metrics}, "test": ...}``
        (:func:`etgnn.uncertainty.uncertainty_metrics`; ``test`` only when that split has data).
    """
    from ..uncertainty import LLPR, evaluate_uncertainty

    if getattr(model.uncertainty, "method", None) == "ensemble":  # LLPR of member 0, which then predicts alone
        import warnings

        warnings.warn(f"the model is a deep ensemble of {model.uncertainty.size} models: LLPR is fitted to its "
                      "first member, which replaces the ensemble (the members' mean) as the prediction", stacklevel=2)
        model.uncertainty = None
        model.config = dataclasses.replace(model.config, training=dataclasses.replace(model.config.training, ensemble=1))
    model.uncertainty = LLPR.fit(model, splits["train"], splits["val"], batch_size=batch_size, method=method,
                                 progress=progress)
    out = {"calibration": {n: p.calibration for n, p in model.uncertainty.posteriors.items()}}
    for split in ("val", "test"):
        if split in splits and len(splits[split]):
            out[split] = evaluate_uncertainty(model, splits[split], batch_size=batch_size)
    return out


def add_uncertainty_to_checkpoint(model, splits: dict, path, *, progress: bool = False) -> dict:
    """:func:`fit_uncertainty` for the trainer: the result is added to the checkpoint at ``path``."""
    from ..model import save_atomic
    from .checkpoint import load_checkpoint

    report = fit_uncertainty(model, splits, progress=progress)
    ckpt = load_checkpoint(path)
    ckpt["uncertainty"] = model.uncertainty.state_dict()
    save_atomic(ckpt, path)
    return report


def _splits(model, args) -> dict:
    """The training part as in training (or ``--train``, split alike) and the validation part (or ``--val``)."""
    from ..data.dataset import load_structures_dataset, make_splits
    from ..errors import DataError

    config = model.config
    data = config.data
    if args.train is not None:
        data = dataclasses.replace(data, train=str(args.train), val=args.val and str(args.val), test=None)
    if not data.train:
        raise DataError(f"{args.checkpoint} names no training data (data.train); give --train DATA")
    progress = not args.no_progress
    try:
        splits = make_splits(dataclasses.replace(config, data=data), progress=progress)
        if args.val is not None and args.train is None:  # another calibration file, the same training part
            splits["val"] = load_structures_dataset(args.val, config, progress=progress)
    except FileNotFoundError as exc:  # the checkpoint's data moved
        raise DataError(f"{exc}; give the training data with --train DATA (and --val DATA)") from None
    if len(splits["val"]) == 0:
        raise DataError("no validation structures to calibrate on; give --val DATA")
    return splits


def _calibrate(args) -> int:
    from ..errors import ConfigError
    from ..model import load_model
    from ..uncertainty import format_uncertainty_table
    from .ddp import resolve_device

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    model = load_model(args.checkpoint, map_location=resolve_device(args.device))
    splits = _splits(model, args)
    print(f"LLPR: {len(splits['train'])} training and {len(splits['val'])} validation structures")
    report = fit_uncertainty(model, splits, batch_size=args.batch_size, method=args.calibration,
                             progress=not args.no_progress)
    for name, cal in report["calibration"].items():
        print(f"{name}: alpha {cal['alpha']:.4g}, lambda {cal['lambda_relative']:.1e} x mean eigenvalue "
              f"({cal['method']}); validation: Spearman {cal['spearman']:.3f}, components within 1 / 2 sigma "
              f"{cal['coverage_1sigma']:.3f} / {cal['coverage_2sigma']:.3f}")
    print(format_uncertainty_table({k: v for k, v in report.items() if k in ("val", "test")}))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)
    print(f"model with uncertainty written to {args.output}")
    if args.metrics:
        Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
        Path(args.metrics).write_text(json.dumps({"checkpoint": str(args.checkpoint), **report}, indent=2))
    return 0
