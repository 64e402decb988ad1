"""What a search leaves in its study directory, and the table it prints.

``best_config.yaml``
    The base config with the fixed settings and the best trial's values applied, fully
    resolved, with the base config's training budget (not the per-trial one) and
    ``run_dir: <study_dir>/best``: ``etgnn train <study_dir>/best_config.yaml`` trains the final
    model.  The best trial's own model is in ``<study_dir>/trial_<number>/best.ckpt``.
``trials.csv``
    One row per trial of the study (all workers): number, state (COMPLETE / PRUNED / FAIL /
    RUNNING), value (best validation loss, normalised units as the training loss; empty unless
    complete), last_reported (last validation loss reported to the pruner), duration_s,
    epochs_run, best_epoch, one column per hyperparameter, run_dir, error.
``parallel_coordinates.png``
    :func:`etgnn.tune.plots.parallel_coordinates` of all trials (Fig. S4 of the paper).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..config import config_to_dict, load_config
from .plots import parallel_coordinates
from .space import override
from .trials import best_trial, param_names, short_names

__all__ = ["write_reports", "trial_rows", "best_trial", "format_top_trials", "best_config_dict"]

_FIXED_COLUMNS = ("number", "state", "value", "last_reported", "duration_s", "epochs_run", "best_epoch")


def trial_rows(study, space: Mapping[str, Any] | None = None) -> tuple[list[str], list[dict]]:
    """``(header, rows)`` of ``trials.csv``; one dict per trial, ordered by trial number."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    names = param_names(trials, space)
    header = [*_FIXED_COLUMNS, *names, "run_dir", "error"]
    rows = []
    for t in trials:
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        row = {"number": t.number, "state": t.state.name, "value": t.value, "last_reported": last,
               "duration_s": round(t.duration.total_seconds(), 3) if t.duration is not None else None,
               "epochs_run": t.user_attrs.get("epochs_run"), "best_epoch": t.user_attrs.get("best_epoch"),
               "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error")}
        row.update({p: t.params.get(p) for p in names})
        rows.append(row)
    return header, rows


def best_config_dict(base: Mapping[str, Any], fixed: Mapping[str, Any], params: Mapping[str, Any],
                     study_dir: Path) -> dict:
    """The resolved config of the best values (validated), with ``run_dir: <study_dir>/best``."""
    items = {**fixed, **params, "run_dir": str(study_dir / "best")}
    return config_to_dict(load_config(dict(base), [override(p, v) for p, v in items.items()]))


def write_reports(study, study_dir: str | Path, base: Mapping[str, Any], fixed: Mapping[str, Any] | None = None,
                  space: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``trials.csv``, ``best_config.yaml`` and ``parallel_coordinates.png``.

    Args:
        study: the ``optuna.Study``.
        study_dir: output folder.
        base: resolved base config (dict).
        fixed: settings fixed in every trial.
        space: the search space (orders the columns and axes).

    Returns:
        The files written (no best config and no plot while the study has no trial).
    """
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    header, rows = trial_rows(study, space)
    files = [study_dir / "trials.csv"]
    with open(files[0], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    best = best_trial(study)
    if best is not None:
        cfg = best_config_dict(base, fixed or {}, best.params, study_dir)
        text = (f"# Best trial {best.number} of study {study.study_name!r}: validation loss {best.value:.6g}\n"
                f"# after {best.user_attrs.get('epochs_run', '?')} epochs (run: {best.user_attrs.get('run_dir')}).\n"
                + "".join(f"#   {p} = {v}\n" for p, v in best.params.items())
                + "# Training budget: the base config's.  Train the final model with:\n"
                + f"#   etgnn train {study_dir / 'best_config.yaml'}\n")
        path = study_dir / "best_config.yaml"
        path.write_text(text + yaml.safe_dump(cfg, sort_keys=False))
        files.append(path)
    if rows:
        files.append(parallel_coordinates(study, study_dir / "parallel_coordinates.png", space=space))
    return files


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)


def format_top_trials(study, k: int = 10) -> str:
    """A table of the ``k`` best complete trials (like Table S3 of the paper), with state counts."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    head = (f"{len(trials)} trials: {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
            f"{counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} running")
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)[:k]
    if not done:
        return head + "; no complete trial yet"
    names = param_names(done)
    header = ["rank", "trial", "val loss", "epochs", "time (s)", *short_names(names)]
    table = [[str(i + 1), str(t.number), f"{t.value:.5g}", _fmt(t.user_attrs.get("epochs_run")),
              f"{t.duration.total_seconds():.0f}" if t.duration is not None else "",
              *(_fmt(t.params.get(p)) for p in names)] for i, t in enumerate(done)]
    widths = [max(len(r[c]) for r in [header, *table]) for c in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header, *table]]
    return f"{head}; best {len(done)} (lowest validation loss first):\n" + "\n".join(lines)
