"""The one resolver of input paths on the command line: ``etgnn:<path>`` names a file shipped with etgnn.

Every subcommand's input-path argument is declared with ``type=input_path``, so
``etgnn spectrum ir CKPT etgnn:examples_data/water_trajectory.extxyz`` works as the same prefix
does in configs, ``etgnn predict`` and ``etgnn evaluate`` (all through
:func:`resolve_data_path`, also :func:`etgnn.data.dataset.resolve_data_path`). Output paths are never resolved: the package's
folder is not a place to write to.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGE_PREFIX", "resolve_data_path", "input_path"]

#: prefix of paths to data shipped inside the package, e.g. ``etgnn:examples_data/molecules.extxyz``
PACKAGE_PREFIX = "etgnn:"


def resolve_data_path(path) -> Path:
    """Turn ``etgnn:<relative path>`` into the path of a file shipped with etgnn; else ``Path(path)``."""
    text = str(path)
    if text.startswith(PACKAGE_PREFIX):
        from importlib.resources import files

        return Path(str(files("etgnn").joinpath(text[len(PACKAGE_PREFIX):])))
    return Path(path)


def input_path(text: str) -> str:
    """argparse ``type`` of an input path: ``etgnn:<path>`` -> the shipped file's path; else unchanged.

    >>> input_path("runs/best.ckpt")
    'runs/best.ckpt'
    >>> input_path("etgnn:examples_data/molecules.extxyz").endswith("examples_data/molecules.extxyz")
    True
    """
    return str(resolve_data_path(text)) if text.startswith(PACKAGE_PREFIX) else text
