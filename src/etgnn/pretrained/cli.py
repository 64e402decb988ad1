"""``etgnn models``: the models shipped with etgnn, one line of card each."""

from __future__ import annotations

import argparse

from . import SHIPPED_MODELS, model_card

__all__ = ["add_parser", "card_line"]


def card_line(name: str) -> str:
    """``NAME  summary (targets; N elements; file size)`` for ``etgnn models``."""
    model = SHIPPED_MODELS[name]
    card = model_card(name)
    size = model.path.stat().st_size / 1e6
    status = f"; {card['status']}" if card.get("status") else ""
    return (f"{name}  {model.summary} (targets {', '.join(card['targets'])}; {len(card['elements'])} elements; "
            f"{size:.1f} MB{status}; card: docs/pretrained.md)")


def _models(args) -> int:
    for name in SHIPPED_MODELS:
        print(card_line(name))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list the models shipped with etgnn (load them by name)",
        description="The models shipped inside etgnn. Every command that takes a CHECKPOINT also takes one of "
                    "these names, e.g. 'etgnn predict dielectric-v1 my.cif -o out.extxyz'; in Python "
                    "etgnn.load_model('dielectric-v1'); in a config, init_from: dielectric-v1 fine-tunes it.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=_models)
