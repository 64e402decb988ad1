"""Everything etgnn knows about one configured quantity: its :class:`Target`, loss, metrics.

- :mod:`etgnn.targets.target`: :class:`Target` (label I/O, head, loss with every penalty,
  metrics), :func:`build_targets`, :func:`total_loss` (the one loss of training and validation);
- :mod:`etgnn.targets.losses`: the loss functions on batches of Cartesian tensors and the
  sum-rule penalty (pure functions);
- :mod:`etgnn.targets.metrics`: metrics in data units, with the baselines of a constant
  predictor (fitted on the training data by :func:`etgnn.data.statistics.training_baselines`)
  and the parts of rank-2 tensors.

Layer: above :mod:`etgnn.data` and :mod:`etgnn.nn`, below :mod:`etgnn.model` (see
``docs/model.md``, "How the code is organised").
"""

from .target import Target, build_targets, total_loss

__all__ = ["Target", "build_targets", "total_loss"]
