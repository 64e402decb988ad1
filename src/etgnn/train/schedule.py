"""Learning-rate schedules: the paper's decay on plateau, or a cosine anneal; either with a warm-up.

``training.lr_schedule``:

- ``plateau`` (the ETGNN paper's): the rate is multiplied by ``lr_factor`` when the validation
  loss has not improved (by a relative 1e-4) for more than ``lr_patience`` epochs, never below
  ``min_lr``; the same rule as ``torch.optim.lr_scheduler.ReduceLROnPlateau``, whose saved
  state this class also reads.
- ``cosine``: ``lr(p) = min_lr + (lr - min_lr) (1 + cos(pi p)) / 2``, set before every step, with
  the run's progress ``p`` the larger of (epochs done / ``max_epochs``) and (wall-clock seconds of
  the run, all resumed sessions together / ``max_time``).  The rate reaches ``min_lr`` exactly
  when the budget is spent; training then stops.  Suits fixed-budget runs: no validation plateau
  is needed to lower the rate.

``training.warmup_epochs`` > 0 multiplies the rate by a linear ramp from ``1 / n_steps`` to 1
over that many epochs (per step), in both schedules.

>>> import torch
>>> from etgnn.config import TrainingConfig
>>> opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-3)
>>> s = LRSchedule(opt, TrainingConfig(lr_schedule="cosine", max_epochs=10, min_lr=0.0), steps_per_epoch=4)
>>> [round(s.before_step(epoch, 0, 0.0) * 1e3, 4) for epoch in (0, 5, 10)]
[1.0, 0.5, 0.0]
"""

from __future__ import annotations

import math

__all__ = ["LRSchedule"]

#: relative improvement of the validation loss that counts as one (ReduceLROnPlateau's default)
PLATEAU_THRESHOLD = 1e-4


class LRSchedule:
    """Sets the optimiser's learning rate before each step and after each epoch.

    Args:
        optimizer: the optimiser (every parameter group gets the same rate).
        training: the :class:`etgnn.config.TrainingConfig` (``lr``, ``lr_schedule``, ``lr_factor``,
            ``lr_patience``, ``min_lr``, ``warmup_epochs``, ``max_epochs``, ``max_time``).
        steps_per_epoch: optimisation steps in one epoch (the warm-up and cosine are per step).
    """

    def __init__(self, optimizer, training, steps_per_epoch: int):
        self.optimizer, self.tr = optimizer, training
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.base_lr = float(training.lr)  # plateau: the current (decayed) rate before warm-up
        self.best = math.inf
        self.bad_epochs = 0

    # ------------------------------------------------------------------ per step
    def progress(self, epoch: int, step: int, elapsed_s: float) -> float:
        """Fraction of the run's budget used before ``step`` of ``epoch`` (cosine; may exceed 1).

        Args:
            epoch: 0-based epoch; step: 0-based step inside it.
            elapsed_s: wall-clock seconds of the run so far (all sessions).
        """
        tr = self.tr
        fractions = [(epoch + step / self.steps_per_epoch) / tr.max_epochs] if tr.max_epochs > 0 else [1.0]
        if tr.max_time is not None:
            fractions.append(elapsed_s / (tr.max_time * 60.0))
        return max(fractions)

    def rate(self, epoch: int, step: int, elapsed_s: float) -> float:
        """The learning rate of ``step`` of ``epoch`` (see the module docstring)."""
        tr = self.tr
        if tr.lr_schedule == "cosine":
            p = min(max(self.progress(epoch, step, elapsed_s), 0.0), 1.0)
            lr = tr.min_lr + (tr.lr - tr.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
        else:
            lr = self.base_lr
        if tr.warmup_epochs > 0:
            done = (epoch * self.steps_per_epoch + step + 1) / (tr.warmup_epochs * self.steps_per_epoch)
            lr *= min(1.0, done)
        return lr

    def before_step(self, epoch: int, step: int, elapsed_s: float) -> float:
        """Set and return the rate of the coming step."""
        lr = self.rate(epoch, step, elapsed_s)
        for group in self.optimizer.param_groups:  # lr_scale: a group's share (fine-tuning's backbone)
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def finished(self, epoch: int, elapsed_s: float) -> bool:
        """Cosine: the anneal is complete after ``epoch`` (its budget spent); plateau: never."""
        return self.tr.lr_schedule == "cosine" and self.progress(epoch + 1, 0, elapsed_s) >= 1.0

    # ------------------------------------------------------------------ per epoch
    def after_epoch(self, val_loss: float) -> None:
        """Plateau: count the epoch and decay the rate after more than ``lr_patience`` bad ones."""
        if val_loss < self.best * (1.0 - PLATEAU_THRESHOLD):
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        if self.tr.lr_schedule == "plateau" and self.bad_epochs > self.tr.lr_patience:
            self.base_lr = max(self.base_lr * self.tr.lr_factor, self.tr.min_lr)
            self.bad_epochs = 0

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`, or the state of a ``ReduceLROnPlateau`` (checkpoints of
        etgnn before the schedule option)."""
        if "base_lr" in state:
            self.base_lr, self.best, self.bad_epochs = float(state["base_lr"]), float(state["best"]), int(state["bad_epochs"])
        else:
            self.base_lr = float(state["_last_lr"][0])
            self.best, self.bad_epochs = float(state["best"]), int(state["num_bad_epochs"])
