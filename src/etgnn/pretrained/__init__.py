"""Models shipped inside the package, loaded by name (no download at run time).

>>> from etgnn.pretrained import is_model_name
>>> is_model_name("dielectric-v1"), is_model_name("runs/x/best.ckpt")
(True, False)

Each shipped model is a model file (``NAME.pt``, written by :meth:`etgnn.model.ETGNN.save`) and
a card (``NAME.json``: what it predicts, training data with sources and licences, elements,
held-out errors), both in this folder; docs/pretrained.md is the long card.  Wherever etgnn takes
a model file (``etgnn.load_model``, ``ETGNNCalculator``, every CLI command's CHECKPOINT, the
``init_from`` config key) it also takes a name listed here.

This module sits at the bottom of the layers (beside :mod:`etgnn.config`): it only maps names to
files and reads cards.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from ..errors import DataError

__all__ = ["ShippedModel", "SHIPPED_MODELS", "is_model_name", "model_path", "model_card", "read_model_config",
           "read_model_file", "resolve_model"]


@dataclass(frozen=True)
class ShippedModel:
    """A model in the package: its name, file and one-line description."""

    name: str
    summary: str  #: one line for ``etgnn models``

    @property
    def path(self) -> Path:
        """The model file inside the installed package."""
        return Path(str(files("etgnn.pretrained").joinpath(f"{self.name}.pt")))

    @property
    def card_path(self) -> Path:
        return Path(str(files("etgnn.pretrained").joinpath(f"{self.name}.json")))


#: every shipped model, by name
SHIPPED_MODELS: dict[str, ShippedModel] = {
    m.name: m
    for m in (
        ShippedModel("dielectric-v1",
                     "Born effective charges (e) and electronic eps_inf of crystals; PBEsol (phonondb) level, "
                     "PBE (Materials Project) heads born_charges_pbe / epsilon_pbe"),
    )
}


def is_model_name(text: str | os.PathLike) -> bool:
    """Whether ``text`` names a shipped model (and not a file path)."""
    return isinstance(text, str) and text in SHIPPED_MODELS


def model_path(name: str) -> Path:
    """The file of the shipped model ``name``.

    Raises:
        DataError: no such shipped model, or its file is missing from the installation.
    """
    if name not in SHIPPED_MODELS:
        raise DataError(f"no shipped model named {name!r}; shipped: {', '.join(SHIPPED_MODELS)} (etgnn models)")
    path = SHIPPED_MODELS[name].path
    if not path.is_file():
        raise DataError(f"the shipped model {name!r} is missing from this installation ({path}); reinstall etgnn")
    return path


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A shipped model's file for its name; anything else as a path."""
    return model_path(name_or_path) if is_model_name(name_or_path) else Path(name_or_path)


def model_card(name: str) -> dict:
    """The card of a shipped model (``NAME.json``) as a dict."""
    model_path(name)
    try:
        return json.loads(SHIPPED_MODELS[name].card_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the card of shipped model {name!r}: {exc}") from None


def read_model_file(name_or_path: str | os.PathLike, map_location="cpu") -> tuple[Path, dict]:
    """``(path, contents)`` of a model file or training checkpoint (a shipped model by name).

    Raises:
        DataError: no such file, or not an etgnn model file (no ``config`` entry).
    """
    import torch

    path = resolve_model(name_or_path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise DataError(f"no model file at {path}") from None
    except Exception as exc:  # corrupt or foreign file
        raise DataError(f"{path} is not an etgnn model file: {exc}") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt:
        raise DataError(f"{path} is not an etgnn model file (no 'config' entry)")
    return path, ckpt


def read_model_config(name_or_path: str | os.PathLike) -> dict:
    """The config dict stored in a model file or training checkpoint (a shipped model by name)."""
    return read_model_file(name_or_path)[1]["config"]
