"""What a training run reports besides its files: stdout lines, TensorBoard, leftovers of killed sessions.

Rank 0 prints the run directory (the CLI), the graph cache's folder and size, and one line per
epoch whether or not progress bars are on (bars appear on a terminal only).  With
``training.tensorboard: true`` the same numbers go to ``run_dir/tensorboard``.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from .checkpoint import BEST, LAST

__all__ = ["say", "remove_partial_files", "report_cache", "open_board", "board_epoch"]


def say(message: str) -> None:
    """One line on stdout (rank 0), written around any progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message)


def remove_partial_files(run_dir: Path) -> None:
    """Delete temporary files a killed session left (``.last.ckpt.tmp1234``, ...) before resuming."""
    for name in (BEST, LAST, "metrics.json"):
        for tmp in run_dir.glob(f".{name}.tmp*"):
            if tmp.name[len(name) + 5 :].isdigit():
                tmp.unlink(missing_ok=True)
                say(f"removed {tmp.name}, left by an interrupted session")


def report_cache(cfg: Config) -> None:
    from ..data.cache import describe_cache, resolve_cache_dir

    folder = resolve_cache_dir(cfg.data.cache_dir)
    if folder is not None:
        say(describe_cache(folder))


def open_board(cfg: Config, last_epoch: int):
    """A SummaryWriter on ``run_dir/tensorboard``; a resumed run drops events after ``last_epoch``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("training.tensorboard: true needs the tensorboard package: "
                          "pip install 'etgnn[tensorboard]' (or pip install tensorboard)") from None
    purge = last_epoch + 1 if last_epoch >= 0 else None
    return SummaryWriter(str(Path(cfg.run_dir) / "tensorboard"), purge_step=purge)


def board_epoch(board, epoch: int, lr: float, train_loss: float, val_loss: float, metrics: dict) -> None:
    """Losses, learning rate and every validation metric of one epoch (step = epoch)."""
    board.add_scalar("loss/train", train_loss, epoch)
    board.add_scalar("loss/val", val_loss, epoch)
    board.add_scalar("lr", lr, epoch)
    for tag, value in _scalars(metrics, "val"):
        board.add_scalar(tag, value, epoch)
    board.flush()


def _scalars(tree, prefix: str):
    """``(tag, number)`` for every number in a nested dict of metrics (``val/apt/mae``, ...)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _scalars(value, f"{prefix}/{key}")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix, float(tree)
