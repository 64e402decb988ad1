"""Command-line interface: a thin layer over the Python API.

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)`` registering the
subcommand and setting ``func`` (called with the parsed arguments, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import EtgnnError

#: subcommand modules, in the order shown by ``etgnn --help``
SUBCOMMAND_MODULES = (
    "etgnn.train.cli",  # train, evaluate, predict
    "etgnn.symmetry",  # symmetry-test
    "etgnn.qm.make_dataset",  # make-dataset
    "etgnn.tune",  # tune, sweep
    "etgnn.export",  # export
)


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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EtgnnError as exc:
        print(f"etgnn: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("etgnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
