"""Training: the loop, learning-rate schedule, EMA, checkpoints and DDP.

Public API::

    result = train(config, resume=False, callback=None)       # -> TrainResult
    metrics, predictions, references = evaluate(model, dataset)
    predict_file(model, "traj.extxyz", "pred.extxyz")

``evaluate`` and ``predict_file`` live in :mod:`etgnn.evaluate` (beside :mod:`etgnn.predict`), the
losses and metrics in :mod:`etgnn.targets`; they are named here too, as in etgnn 0.1.
"""

from ..evaluate import evaluate, predict_file
from ..targets import total_loss
from ..targets.losses import LOSSES, cosine, euclidean, mae, mse, sum_rule_penalty
from ..targets.metrics import METRIC_NAMES, MetricAccumulator, compute_metrics
from .plots import parity_plot
from .trainer import TrainResult, train

__all__ = [
    "train",
    "TrainResult",
    "evaluate",
    "predict_file",
    "parity_plot",
    "mse",
    "mae",
    "euclidean",
    "cosine",
    "sum_rule_penalty",
    "total_loss",
    "LOSSES",
    "METRIC_NAMES",
    "MetricAccumulator",
    "compute_metrics",
]
