"""Training checkpoints: what they hold, atomic writing, reading, RNG capture and restore.

A checkpoint is a dict written with :func:`etgnn.model.save_atomic` (temporary file + fsync +
rename, so a run killed while writing leaves the previous file intact)::

    format_version                 layout version (etgnn.model.CHECKPOINT_FORMAT; absent in 0.1.0)
    etgnn_version, torch_version   package versions
    config                         resolved config as a plain dict
    state_dict                     evaluation weights (the EMA weights when training.ema_decay
                                   is set) and the training statistics (normalisers, neighbour
                                   counts, elements: kept here only); what :func:`etgnn.load_model` reads
    train_state_dict               raw (non-EMA) weights, only with EMA, used to resume
    optimizer, scheduler, ema      their state dicts (ema None without EMA)
    epoch                          last completed epoch (0-based); -1 before the first
    best_val_loss, best_epoch      best validation loss so far and its epoch
    bad_epochs                     early-stopping counter (epochs since the best)
    elapsed                        training wall-clock seconds over all sessions of the run
    rng                            torch / numpy / python / cuda generator states and the
                                   loader's (seed, epoch) (shuffling depends on these only)
    baselines                      training means, the metrics' baselines (etgnn.data.statistics.
                                   training_baselines; absent in older files, optional to read)
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..errors import DataError
from ..model import CHECKPOINT_FORMAT, save_atomic

__all__ = ["BEST", "LAST", "capture_rng", "restore_rng", "save_checkpoint", "load_checkpoint", "seed_everything",
           "epoch_seed"]

#: file names inside the run directory
BEST = "best.ckpt"
LAST = "last.ckpt"


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of everything random in epoch ``epoch`` (a function of (seed, epoch) only)."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(loader_seed: int, epoch: int) -> dict[str, Any]:
    """Current states of every random generator, plus the loader's (seed, epoch)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "loader": {"seed": int(loader_seed), "epoch": int(epoch)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (the loader part is read by the trainer)."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # different number of GPUs: keep the fresh states
            pass


def save_checkpoint(path: str | os.PathLike, **fields: Any) -> None:
    """Write a checkpoint atomically; the package versions are added.

    Args:
        path: destination (``run_dir/best.ckpt`` or ``run_dir/last.ckpt``).
        **fields: the entries listed in the module docstring.
    """
    ckpt = {"format_version": CHECKPOINT_FORMAT, "etgnn_version": __version__, "torch_version": torch.__version__,
            **fields}
    save_atomic(ckpt, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint.

    Raises:
        DataError: no file, an unreadable file, or a file that is not an etgnn training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise DataError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    missing = [k for k in ("config", "state_dict", "optimizer", "epoch") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise DataError(f"{path} is not an etgnn training checkpoint (missing {', '.join(missing)}); "
                        "a model saved with ETGNN.save can be evaluated but not resumed")
    return ckpt
