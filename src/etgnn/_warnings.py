"""Warnings that point at the user's code, never at a torch or etgnn source line.

``warnings.warn(..., stacklevel=k)`` with a fixed ``k`` lands inside torch's ``no_grad`` wrapper
or an etgnn helper depending on the call path; :func:`warn` walks the stack to the first frame
outside both packages instead.  The command line prints warnings as one ``etgnn: warning:`` line
(see :func:`etgnn.cli.main`).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

__all__ = ["warn", "UnseenElementWarning"]

_INTERNAL = (str(Path(__file__).resolve().parent), str(Path(torch.__file__).resolve().parent))


class UnseenElementWarning(UserWarning):
    """A structure holds an element absent from the model's training data."""


def _internal(filename: str) -> bool:
    try:
        name = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    return name.startswith(_INTERNAL)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first caller outside etgnn and torch."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and _internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
