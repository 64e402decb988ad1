"""Reading the trials of an Optuna study: the best one, the hyperparameter names and their short
labels (shared by the report, :mod:`etgnn.tune.report`, and the figures, :mod:`etgnn.tune.plots`).

>>> short_names(["model.cutoff", "training.lr", "model.lr"])
['cutoff', 'training.lr', 'model.lr']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["best_trial", "param_names", "short_names"]


def best_trial(study):
    """The complete trial with the lowest value, or None."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(done, key=lambda t: t.value) if done else None


def param_names(trials, space: Mapping[str, Any] | None = None) -> list[str]:
    """The hyperparameters of ``trials``: those of ``space`` first, in its order, then the others
    in the order the trials met them."""
    names = list(space or {})
    for t in trials:
        names += [p for p in t.params if p not in names]
    return names


def short_names(names: list[str]) -> list[str]:
    """The last dotted part of each name, or the whole name where that part is not unique."""
    last = [n.rsplit(".", 1)[-1] for n in names]
    return [s if last.count(s) == 1 else n for s, n in zip(last, names)]
