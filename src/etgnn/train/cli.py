"""``etgnn train`` / ``etgnn evaluate`` / ``etgnn predict``: thin wrappers over :mod:`etgnn.train`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .._paths import input_path

__all__ = ["add_parser"]

_TRAIN_HELP = """\
Train a model; overrides like training.lr=3e-4 are applied to CONFIG. The run directory (run_dir)
receives config.yaml, best.ckpt, last.ckpt, log.csv, metrics.json and parity plots; --resume
continues from last.ckpt and replays exactly what an uninterrupted run would have done.
training.ensemble=N trains N models (seeds model.seed + k, training.seed + k) in run_dir/member_k
and joins them in run_dir/best.ckpt, whose prediction is their mean and NAME_std their calibrated
spread; --resume continues member by member.

Several processes: training.strategy=ddp training.devices=N spawns N processes on this machine;
for several nodes start one process per device with torchrun, e.g.
  torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:PORT -m etgnn.cli train CONFIG
"""

_PREDICT_HELP = """\
Predict every target for the structures of INPUT and write them, with the predictions, to
OUTPUT (extended XYZ: OUTPUT must end in .extxyz or .xyz), streaming long trajectories in chunks
of --batch-size structures while the next chunk's graphs are built in the background.  OUTPUT
holds the structure and the predictions only; --keep-labels adds the input's own labels
(per-atom tensors flattened to 3**M columns as below).  INPUT is read exactly as training data
is (extxyz, etgnn's formats: phonopy BORN with --structure for its unit cell, OUTCAR, ...), or
by ASE (CIF, POSCAR, ASE trajectories).

Field naming in OUTPUT (units of the training data):
  per-atom target NAME of rank M   per-atom column NAME with 3**M values per atom, the tensor
                                   flattened row-major (T[a,b] at 3*a+b); one value for M=0
  per-structure target NAME        comment-line entry NAME with 3**M values, row-major
                                   (a single number for M=0)
With --keep-labels an input field named like a prediction is written as NAME_input.
With --uncertainty (a model from etgnn calibrate, or a deep ensemble: training.ensemble) each
target NAME also gets NAME_std, one standard deviation per component, laid out as NAME.
"""

_MAP_HELP = ("read the checkpoint's data key (or target) KEY from this data's FIELD, e.g. "
             "--map becs=born_effective_charges (repeatable)")
_STRUCTURE_HELP = ("structure file of a phonopy BORN (its unit cell) or OUTCAR input, or the folder of "
                   "an id_prop.csv's structure files (default: beside the data file)")


_EVALUATE_HELP = """\
Metrics of a checkpoint on every structure of DATA, in data units: per target the pooled MAE,
RMSE, R^2 over all components and the mean Euclidean error; beside each a baseline (the
per-element mean tensor of the training data for per-atom targets, the training mean tensor for
structure targets); for rank-2 targets also the isotropic (tr/3), anisotropic (symmetric
traceless) and antisymmetric parts.  Structures whose per-atom rank-2 labels break the acoustic
sum rule are listed (index in DATA, |sum|) and evaluated unless --drop-sum-rule-violators.
A model with uncertainty (etgnn calibrate) also gets, per target, the Spearman rank correlation
of sigma and |error| per row, the share of components within 1 and 2 sigma, the miscalibration
area and the Gaussian negative log-likelihood (docs/uncertainty.md).
"""

#: --drop-sum-rule-violators without a value: the checkpoint's training threshold
_CHECKPOINT = "checkpoint"


def add_parser(subparsers) -> None:
    """Register the ``train``, ``evaluate`` and ``predict`` subcommands."""
    p = subparsers.add_parser("train", help="train a model from a YAML config", description=_TRAIN_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG", type=input_path, help="YAML config file")
    p.add_argument("overrides", metavar="KEY=VALUE", nargs="*", help="dotted config overrides, e.g. training.max_epochs=10")
    p.add_argument("--resume", action="store_true", help="continue the run in run_dir from last.ckpt")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (same as training.progress=false; bars appear on a terminal only)")
    p.set_defaults(func=_train, on_interrupt=_resume_command)

    p = subparsers.add_parser("evaluate", help="metrics of a checkpoint on labelled data",
                              description=_EVALUATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=input_path, help="best.ckpt / last.ckpt or a saved model")
    p.add_argument("data", metavar="DATA", type=input_path, help="labelled structures, read with the targets' keys of the checkpoint")
    p.add_argument("--output", "-o", metavar="JSON", help="write the metrics as JSON here")
    p.add_argument("--plot", metavar="PNG",
                   help="write a parity plot here (one panel per target; four, all/iso/aniso/anti, per rank-2 one)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="structures per batch")
    p.add_argument("--format", default=None, metavar="F", help="data format (default: detected)")
    p.add_argument("--structure", default=None, metavar="PATH", type=input_path, help=_STRUCTURE_HELP)
    p.add_argument("--map", action="append", default=[], metavar="KEY=FIELD", help=_MAP_HELP)
    p.add_argument("--drop-sum-rule-violators", nargs="?", const=_CHECKPOINT, default=None, metavar="THRESHOLD",
                   help="leave out structures whose per-atom rank-2 labels have |sum over atoms| above THRESHOLD "
                        "(data units; without a value: the checkpoint's data.sum_rule_threshold). Default: "
                        "evaluate every structure and list the violators")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("predict", help="predict tensors for structures, written as extxyz",
                              description=_PREDICT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=input_path, help="best.ckpt / last.ckpt or a saved model")
    p.add_argument("input", metavar="INPUT", type=input_path, help="structure file (extxyz, any ASE format, or an etgnn format)")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT.extxyz",
                   help="output file, .extxyz or .xyz (overwritten)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="structures per chunk (default 32)")
    p.add_argument("--format", default=None, metavar="F", help="input format (default: detected)")
    p.add_argument("--structure", default=None, metavar="PATH", type=input_path, help=_STRUCTURE_HELP)
    p.add_argument("--keep-labels", action="store_true", help="also write the input's own labels")
    p.add_argument("--map", action="append", default=[], metavar="NEW=FIELD",
                   help="with --keep-labels, write the input's FIELD under the name NEW (repeatable)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal only)")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write NAME_std, one standard deviation per component (a model from etgnn calibrate)")
    p.set_defaults(func=_predict)


def _positive(n, what: str):
    from ..errors import ConfigError

    if n is not None and n < 1:
        raise ConfigError(f"{what} must be >= 1, got {n}")
    return n


def _load(path: str, device: str):
    from ..model import load_model
    from .ddp import resolve_device

    return load_model(path, map_location=resolve_device(device))


def _train(args) -> int:
    from ..config import load_config
    from ..targets.metrics import format_table
    from .trainer import train

    overrides = list(args.overrides) + (["training.progress=false"] if args.no_progress else [])
    cfg = load_config(args.config, overrides)
    result = train(cfg, resume=args.resume)  # prints the run directory first
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return 0
    for k, member in enumerate(result.members):  # a deep ensemble (training.ensemble)
        print(f"member {k} ({member.run_dir}): stopped: {member.stopped} after {member.epochs_run} epochs; best epoch "
              f"{member.best_epoch}, val loss {member.best_val_loss:.5g}")
    how = f"{result.stopped} (mid-epoch {result.epochs_run}, discarded)" if result.mid_epoch else result.stopped
    if result.members:
        print(f"ensemble of {len(result.members)} models (their mean): val loss {result.best_val_loss:.5g}; "
              f"model file {Path(result.run_dir) / 'best.ckpt'}")
    else:
        print(f"stopped: {how} after {result.epochs_run} epochs; best epoch {result.best_epoch}, "
              f"val loss {result.best_val_loss:.5g}")
    if result.metrics:
        print(format_table(result.metrics))
    return 0


def _resume_command(args, argv: list[str]) -> str:
    """After Ctrl-C in ``etgnn train``: the exact command that continues the run (the one typed,
    with ``--resume``), or, before the first epoch was saved, the one that starts it again."""
    import shlex

    from ..config import load_config

    cfg = load_config(args.config, list(args.overrides))
    lasts = [Path(cfg.run_dir) / "last.ckpt"] + sorted(Path(cfg.run_dir).glob("member_*/last.ckpt"))  # an ensemble's
    existing = [p for p in lasts if p.is_file()]
    last = max(existing, key=lambda p: p.stat().st_mtime) if existing else lasts[0]
    if not last.is_file():
        return f"no epoch completed, nothing to resume; start again with: {shlex.join(['etgnn', *argv])}"
    again = ["etgnn", *argv] + ([] if args.resume else ["--resume"])
    return f"the last completed epoch is in {last}; resume with: {shlex.join(again)}"


def _drop_threshold(value, config, checkpoint: str) -> float | None:
    """The ``--drop-sum-rule-violators`` threshold: ``None`` (keep all), a number, or the checkpoint's."""
    from ..errors import ConfigError

    if value is None:
        return None
    if value == _CHECKPOINT:
        if config.data.sum_rule_threshold is None:
            raise ConfigError(f"{checkpoint} was trained without data.sum_rule_threshold; give "
                              "--drop-sum-rule-violators a THRESHOLD (|sum over atoms| in data units)")
        return float(config.data.sum_rule_threshold)
    try:
        threshold = float(value)
    except ValueError:
        raise ConfigError(f"--drop-sum-rule-violators takes a number (|sum over atoms| in data units), "
                          f"got {value!r}; without a number put it after DATA") from None
    if not threshold >= 0:
        raise ConfigError(f"--drop-sum-rule-violators must be >= 0, got {value!r}")
    return threshold


def _evaluate(args) -> int:
    from ..evaluate import evaluate, format_sum_rule_report, load_evaluation_data
    from ..targets.metrics import format_table
    from .plots import parity_plot

    from ..data.dataset import resolve_data_path
    from ..data.readers import iter_structures
    from ..predict import check_targets_present, parse_key_map, remap_targets

    batch_size = _positive(args.batch_size, "--batch-size")
    model = _load(args.checkpoint, args.device)
    config = remap_targets(model.config, parse_key_map(args.map))
    drop = _drop_threshold(args.drop_sum_rule_violators, config, args.checkpoint)
    path = resolve_data_path(args.data)
    first = next(iter_structures(path, args.format or config.data.format, structure_path=args.structure), None)
    if first is not None:
        check_targets_present(first, config, f"{args.data} structure 0")
    dataset, sum_rule = load_evaluation_data(path, config, drop_threshold=drop, format=args.format,
                                             structure_path=args.structure)
    if sum_rule["violators"]:
        print(format_sum_rule_report(sum_rule, args.data))
    metrics, pred, ref = evaluate(model, dataset, batch_size=batch_size)
    print(format_table({"data": metrics}))
    uncertainty = {}
    if model.uncertainty is not None:
        from ..uncertainty import evaluate_uncertainty, format_uncertainty_table

        uncertainty = {"uncertainty": evaluate_uncertainty(model, dataset, batch_size=batch_size)}
        print(format_uncertainty_table({"data": uncertainty["uncertainty"]}))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"checkpoint": str(args.checkpoint), "data": str(args.data),
                                                 "n_evaluated": len(dataset), "sum_rule": sum_rule,
                                                 "metrics": metrics, **uncertainty}, indent=2))
        print(f"metrics written to {args.output}")
    if args.plot:
        units = {name: t.unit for name, t in model.config.targets.items()}
        parity_plot(pred, ref, args.plot, metrics, units, title=Path(args.data).name)
        print(f"parity plot written to {args.plot}")
    return 0


def _predict(args) -> int:
    from ..predict import Predictor, check_output_path, parse_key_map

    batch_size = _positive(args.batch_size, "--batch-size")
    check_output_path(args.output)  # before loading anything
    rename = parse_key_map(args.map)
    model = _load(args.checkpoint, args.device)
    n = Predictor(model, batch_size=batch_size, progress=not args.no_progress,
                  uncertainty=args.uncertainty).predict_file(
        args.input, args.output, format=args.format, structure_path=args.structure,
        keep_labels=args.keep_labels, rename=rename)
    print(f"{n} structures with predictions written to {args.output}")
    return 0
