"""What a training run returns (:class:`TrainResult`), and reading it back from a run directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TrainResult", "result_from_files"]


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        best_val_loss: lowest validation loss (normalised units, as the training loss).
        best_epoch: its epoch (0-based); -1 if no epoch ran.
        epochs_run: epochs completed by the whole run (all sessions).
        metrics: ``{"val": {target: {metric: value}}, "test": {...}}`` of the best model, data units
            (empty on DDP ranks other than 0).
        run_dir: the run directory.
        stopped: why training ended (``"max_epochs"``, ``"early_stopping"``, ``"max_time"``).
        mid_epoch: ``max_time`` struck inside an epoch; that fragment was discarded (not logged,
            never a best epoch, not in ``epochs_run``; a resumed run replays it whole).
        members: a deep ensemble's (``training.ensemble``) runs of its members, one
            ``TrainResult`` each (empty for one model); the fields above are then the ensemble's:
            the validation loss of the members' mean, ``epochs_run`` summed over the members.
    """

    best_val_loss: float
    best_epoch: int
    epochs_run: int
    metrics: dict = field(default_factory=dict)
    run_dir: Path = Path(".")
    stopped: str = "max_epochs"
    mid_epoch: bool = False
    members: list = field(default_factory=list)


def result_from_files(run_dir: Path) -> TrainResult:
    """The :class:`TrainResult` of a finished run, from its ``metrics.json``."""
    data = json.loads((Path(run_dir) / "metrics.json").read_text())
    metrics = {k: v for k, v in data.items() if k in ("val", "test")}
    return TrainResult(data["best_val_loss"], data["best_epoch"], data["epochs_run"], metrics, Path(run_dir),
                       data["stopped"])
