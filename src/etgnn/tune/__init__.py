"""Hyperparameter search and one-parameter sweeps (the ETGNN paper's Table S3, Figs. S3 and S4).

Public API::

    result = tune("config.yaml", n_trials=40, trial_time=5)          # Optuna search -> TuneResult
    result = sweep("config.yaml", "training.batch_size", [10, 20, 40, 60], budget_minutes=10)

Command line: ``etgnn tune CONFIG --trials N`` and ``etgnn sweep CONFIG --param P --values ...``
(see ``docs/tuning.md``).  Optuna and matplotlib are imported only when a command runs.
"""

from __future__ import annotations

import argparse

from .._paths import input_path
from .search import TrialFailed, TuneResult, default_study_dir, make_pruner, tune
from .space import DEFAULT_SPACE, Range, describe_space, load_space_file, merge_space, validate_space
from .sweep import SweepResult, default_sweep_dir, sweep

__all__ = [
    "tune",
    "TuneResult",
    "TrialFailed",
    "make_pruner",
    "default_study_dir",
    "sweep",
    "SweepResult",
    "default_sweep_dir",
    "DEFAULT_SPACE",
    "Range",
    "merge_space",
    "load_space_file",
    "validate_space",
    "describe_space",
    "add_parser",
]

_TUNE_HELP = """\
Search hyperparameters with Optuna (TPE sampler, pruning of unpromising trials) on the
validation loss.  Default space (the paper's): model.hidden_channels 64/96/128/160/192,
model.num_blocks 2/4/6, model.activation swish/elu/silu, model.cutoff_function
polynomial/cosine, model.radial_basis gaussian/bessel, training.lr log-uniform 1e-4..5e-3,
training.batch_size 8/16/32/64.  Edit it with --space-file, --choice, --range and --fix;
KEY=VALUE overrides edit the base config (and fix a searched parameter they name).

--trials N is the size the study should reach: rerunning the same command resumes an
interrupted search; workers on several machines share one study with the same --storage URL
(PostgreSQL / MySQL) and --study-name, each with its own --seed.  --trials 0 only rewrites
the outputs.  Outputs in --study-dir (default <run_dir>_tune): best_config.yaml (train it with
etgnn train), trials.csv, parallel_coordinates.png, and trial_<n>/ runs.
"""

_SWEEP_HELP = """\
Train CONFIG once per value of one parameter, each under the same budget, and plot the
validation loss against the value (log x for learning rates).  Writes sweep.csv, sweep.png and
one run per value to --output-dir (default <run_dir>_sweep_<param>); rerunning skips finished
values and resumes an interrupted one with what is left of its budget.
  etgnn sweep CONFIG --param training.batch_size --values 10,20,40,60 --budget-minutes 10
  etgnn sweep CONFIG --param training.lr --values 1e-4,3e-4,1e-3,3e-3 --epochs 100
"""


def add_parser(subparsers) -> None:
    """Register the ``tune`` and ``sweep`` subcommands."""
    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("tune", help="hyperparameter search (Optuna) on the validation loss",
                              description=_TUNE_HELP, formatter_class=raw)
    p.add_argument("config", metavar="CONFIG", type=input_path, help="base YAML config")
    p.add_argument("overrides", metavar="KEY=VALUE", nargs="*", help="dotted overrides of the base config")
    p.add_argument("--trials", type=int, required=True, metavar="N", help="trials the study should hold")
    p.add_argument("--storage", metavar="URL", help="Optuna storage (default sqlite:///STUDY_DIR/study.db)")
    p.add_argument("--study-name", metavar="NAME", help="default: the name of the study directory")
    p.add_argument("--study-dir", metavar="DIR", help="outputs and trial runs (default <run_dir>_tune)")
    p.add_argument("--space-file", metavar="YAML", type=input_path, help="search space edits: path -> [choices] | {low, high, log} "
                   "| value (fixed) | null (not searched); 'defaults: false' starts from an empty space")
    p.add_argument("--choice", action="append", default=[], metavar="PATH=V1,V2", help="search PATH over these values")
    p.add_argument("--range", action="append", default=[], metavar="PATH=LOW:HIGH[:log]",
                   help="search PATH in an interval (integers if both bounds are)")
    p.add_argument("--fix", action="append", default=[], metavar="PATH=VALUE", help="do not search PATH; use VALUE")
    p.add_argument("--trial-epochs", type=int, metavar="N", help="training.max_epochs of each trial")
    p.add_argument("--trial-time", type=float, metavar="MIN", help="training.max_time of each trial (minutes)")
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    p.add_argument("--warmup-epochs", type=int, default=2, metavar="N",
                   help="epochs before a trial can be pruned (default 2)")
    p.add_argument("--startup-trials", type=int, default=3, metavar="N",
                   help="trials run in full before median pruning starts (default 3)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed; give parallel workers different seeds")
    p.set_defaults(func=_tune)

    p = subparsers.add_parser("sweep", help="validation loss against one hyperparameter (same budget per value)",
                              description=_SWEEP_HELP, formatter_class=raw)
    p.add_argument("config", metavar="CONFIG", type=input_path, help="base YAML config")
    p.add_argument("overrides", metavar="KEY=VALUE", nargs="*", help="dotted overrides of the base config")
    p.add_argument("--param", required=True, metavar="PATH", help="dotted config path, e.g. training.batch_size")
    p.add_argument("--values", required=True, metavar="V1,V2,...", help="comma-separated values (YAML scalars)")
    p.add_argument("--budget-minutes", type=float, metavar="M", help="training.max_time of every run")
    p.add_argument("--epochs", type=int, metavar="N", help="training.max_epochs of every run")
    p.add_argument("--output-dir", metavar="DIR", help="default <run_dir>_sweep_<param>")
    p.set_defaults(func=_sweep)


def _space_from_args(args) -> tuple[dict, dict]:
    from .space import parse_choice, parse_range, parse_value

    space, fixed = load_space_file(args.space_file) if args.space_file else merge_space(DEFAULT_SPACE, {})
    edits = dict(parse_choice(c) for c in args.choice)
    edits.update(parse_range(r) for r in args.range)
    space, more = merge_space(space, edits)
    fixed.update(more)
    for item in args.fix:
        if "=" not in item:
            from ..errors import ConfigError

            raise ConfigError(f"--fix {item!r} must look like PATH=VALUE")
        path, value = item.split("=", 1)
        fixed[path.strip()] = parse_value(value)
    return space, fixed


def _tune(args) -> int:
    space, fixed = _space_from_args(args)
    pruner = make_pruner(args.pruner, startup_trials=args.startup_trials, warmup_epochs=args.warmup_epochs)
    tune(args.config, args.trials, study_dir=args.study_dir, storage=args.storage, study_name=args.study_name,
         space=space, fixed=fixed, overrides=args.overrides, trial_epochs=args.trial_epochs,
         trial_time=args.trial_time, pruner=pruner, seed=args.seed)
    return 0


def _sweep(args) -> int:
    from .space import parse_value

    values = [parse_value(v) for v in args.values.split(",") if v.strip()]
    sweep(args.config, args.param, values, output_dir=args.output_dir, budget_minutes=args.budget_minutes,
          epochs=args.epochs, overrides=args.overrides)
    return 0
