"""Command-line interface: a thin layer over the Python API.

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)`` registering the
subcommand and setting ``func`` (called with the parsed arguments, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import EtgnnError, FileSystemError

#: subcommand modules, in the order shown by ``etgnn --help``
SUBCOMMAND_MODULES = (
    "etgnn.train.cli",  # train, evaluate, predict
    "etgnn.train.calibrate",  # calibrate (uncertainty)
    "etgnn.train.select",  # select (active learning)
    "etgnn.symmetry",  # symmetry-test
    "etgnn.qm.make_dataset",  # make-dataset
    "etgnn.tune",  # tune, sweep
    "etgnn.observables.phonons_cli",  # phonons, export-born
    "etgnn.observables.spectra_cli",  # spectrum ir, spectrum raman
    "etgnn.data.cache",  # cache
    "etgnn.config_reference",  # config-reference
    "etgnn.export",  # export
    "etgnn.pretrained.cli",  # models
)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"etgnn: warning: {message}", file=sys.stderr if file is None else file)


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse with options and ``KEY=VALUE`` overrides in any order.

    argparse stops filling a ``KEY=VALUE ...`` positional at the first option, so overrides after
    an option (``train CONFIG --resume training.max_time=60``) come back as extras; they join the
    subcommand's overrides, in the order given.  Anything else unknown is an error of the
    subcommand (its usage line, not the top-level one).
    """
    args, extras = parser.parse_known_args(argv)
    takes_overrides = isinstance(getattr(args, "overrides", None), list)
    stray = [e for e in extras if not (takes_overrides and "=" in e and not e.startswith("-"))]
    if stray:
        sub = parser.subcommands.get(getattr(args, "command", None), parser)
        sub.error(f"unrecognized arguments: {' '.join(stray)}")
    if takes_overrides:
        args.overrides = list(args.overrides) + [e for e in extras if e not in stray]
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="etgnn",
        description="Edge-based tensor prediction graph neural networks: train, evaluate, predict.",
    )
    parser.add_argument("--version", action="version", version=f"etgnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("etgnn"):
                continue  # subcommand not part of this build
            raise
        module.add_parser(sub)
    parser.subcommands = dict(sub.choices)  # name -> subcommand parser (for its error messages)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning  # no source lines for command-line users
            return int(args.func(args) or 0)
    except EtgnnError as exc:
        print(f"etgnn: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file-system error anywhere: the path and what to do, no traceback
        print(f"etgnn: error: FileSystemError: {FileSystemError.from_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"etgnn: interrupted{_after_interrupt(args, sys.argv[1:] if argv is None else argv)}", file=sys.stderr)
        return 130


def _after_interrupt(args: argparse.Namespace, argv: list[str]) -> str:
    """What a subcommand adds to ``etgnn: interrupted`` (``train``: the command that resumes)."""
    hint = getattr(args, "on_interrupt", None)
    try:
        return f"; {hint(args, list(argv))}" if hint else ""
    except Exception:  # noqa: BLE001 - a hint must never hide the interruption
        return ""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
