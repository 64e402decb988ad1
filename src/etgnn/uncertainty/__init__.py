"""Calibrated per-component uncertainty for any trained model (issue 26), kept as a layer over it.

- :mod:`etgnn.uncertainty.features`: last-layer features ``dT/dtheta`` of a tensor head
  (vectorised forward-mode differentiation);
- :mod:`etgnn.uncertainty.posterior`: one head's ``F^T F``, regulariser and calibration
  (Gaussian maximum likelihood on validation residuals);
- :mod:`etgnn.uncertainty.llpr`: :class:`LLPR`, every target of a model, fitted in one pass over
  the training data and stored in the model file;
- :mod:`etgnn.uncertainty.ensemble`: :class:`Ensemble`, a deep ensemble (``training.ensemble: N``):
  the members' mean is the model's prediction, their calibrated spread the uncertainty;
- :mod:`etgnn.uncertainty.metrics`, :mod:`etgnn.uncertainty.evaluation`: Spearman, coverage,
  miscalibration area and NLL on labelled data.

Layer: beside :mod:`etgnn.model` (which holds an ``LLPR`` or an ``Ensemble`` as
``model.uncertainty``); it takes the model as an argument and never imports it.  See
``docs/uncertainty.md``.
"""

from .ensemble import Ensemble
from .evaluation import evaluate_uncertainty, predict_with_std
from .features import last_layer_features, last_layer_parameters, n_last_layer
from .llpr import LLPR, supported_targets
from .metrics import calibration_curve, format_uncertainty_table, uncertainty_metrics
from .posterior import Calibrator, LastLayerPosterior, VarianceCalibrator

__all__ = ["LLPR", "Ensemble", "uncertainty_from_state_dict", "LastLayerPosterior", "Calibrator",
           "VarianceCalibrator", "last_layer_features", "last_layer_parameters", "n_last_layer", "supported_targets", "uncertainty_metrics", "calibration_curve", "format_uncertainty_table",
           "evaluate_uncertainty", "predict_with_std"]


def uncertainty_from_state_dict(state: dict, model):
    """The uncertainty layer a model file keeps under ``"uncertainty"`` (:class:`LLPR` or
    :class:`Ensemble`, by its ``"method"``), checked against ``model``."""
    if state.get("method") == Ensemble.method:
        return Ensemble.from_state_dict(state, model)
    return LLPR.from_state_dict(state, model)
