"""Exponential moving average of model weights (Polyak averaging).

After every optimiser step ``shadow <- d * shadow + (1 - d) * weights`` with
``d = min(decay, (1 + n) / (10 + n))`` (``n`` = updates so far), so early averages are not
dominated by the random initial weights.  Buffers (normalisation) are not averaged: they are
fixed during training.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Shadow copy of the parameters of ``model``.

    Args:
        model: the (unwrapped) model whose parameters are averaged.
        decay: in (0, 1), e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current parameters of ``model`` into the shadow."""
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        self.num_updates += 1
        names = list(self.shadow)
        params = dict(model.named_parameters())
        torch._foreach_lerp_([self.shadow[n] for n in names], [params[n].detach() for n in names], 1.0 - d)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for n, v in state["shadow"].items():
            self.shadow[n].copy_(v)

    def model_state_dict(self, model: nn.Module) -> dict:
        """``model.state_dict()`` with the parameters replaced by their averages (copies)."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for n, v in self.shadow.items():
            state[n] = v.detach().clone()
        return state

    @contextmanager
    def applied(self, model: nn.Module):
        """Temporarily load the averaged weights into ``model`` (restored on exit)."""
        params = dict(model.named_parameters())
        backup = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, v in self.shadow.items():
                params[n].copy_(v)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, v in backup.items():
                    params[n].copy_(v)
