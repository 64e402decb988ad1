"""Hyperparameter search with Optuna on the validation loss (how the ETGNN paper chose its settings).

Each trial samples the search space (:mod:`etgnn.tune.space`), applies the values as dotted
overrides to the base config, trains in ``<study_dir>/trial_<number>`` under the base config's
budget (or ``trial_epochs`` / ``trial_time``) and returns the best validation loss.  The
validation loss of every epoch is reported to the pruner, which stops unpromising trials early.

Storage and resuming: the study lives in an Optuna storage, by default
``sqlite:///<study_dir>/study.db``; a PostgreSQL or MySQL URL lets workers on several machines
share one study (same ``storage`` and ``study_name``).  ``n_trials`` is the size the *study*
should reach, not the number of trials of this call: a worker starts a new trial only while the
study holds fewer than ``n_trials`` trials that are complete, pruned, failed or running, so
re-running the same command resumes an interrupted search and runs only the missing trials,
and several workers together run ``n_trials`` (give each worker its own ``seed``).  Trials of a
worker that was killed are marked failed after the heartbeat grace period and then no longer
count.  ``n_trials=0`` runs nothing and only rewrites the outputs.

Outputs in ``study_dir`` (see :mod:`etgnn.tune.report`): ``best_config.yaml``, ``trials.csv``,
``parallel_coordinates.png``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import config_to_dict, load_config
from ..errors import ConfigError, DataError
from .space import DEFAULT_SPACE, Range, merge_space, override, suggest, validate_space

__all__ = ["TuneResult", "TrialFailed", "tune", "default_study_dir", "make_pruner"]

log = logging.getLogger(__name__)

#: trials of a worker silent this long (seconds) are marked failed (RDB storages' heartbeat)
HEARTBEAT_INTERVAL, GRACE_PERIOD = 60, 180


class TrialFailed(Exception):
    """A trial that could not produce a validation loss (diverged, out of memory, invalid
    combination of sampled values); recorded as FAIL and the search goes on."""


@dataclass
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes:
        study: the ``optuna.Study`` (all trials, also those of other workers).
        study_dir: where the outputs are.
        trials_run: trials started by this call.
        best_config: path of ``best_config.yaml`` (None while no trial is complete).
        files: the output files written.
    """

    study: Any
    study_dir: Path
    trials_run: int = 0
    best_config: Path | None = None
    files: list = field(default_factory=list)


def import_optuna():
    """Import Optuna, or explain how to install it (it is the optional extra ``etgnn[tune]``)."""
    try:
        import optuna
    except ModuleNotFoundError:
        raise ConfigError("hyperparameter search needs Optuna: pip install 'etgnn[tune]' (or pip install optuna)") \
            from None
    return optuna


def default_study_dir(config: Any) -> Path:
    """``<run_dir>_tune`` of a config."""
    return Path(str(load_config(config).run_dir).rstrip("/") + "_tune")


def make_pruner(name: str = "median", startup_trials: int = 3, warmup_epochs: int = 2):
    """An Optuna pruner by name: ``"median"``, ``"hyperband"`` or ``"none"``.

    Args:
        name: MedianPruner (prune a trial whose loss at an epoch is worse than the median of
            earlier trials at that epoch), HyperbandPruner, or no pruning.
        startup_trials: median: trials run in full before pruning starts.
        warmup_epochs: median: epochs of every trial before it can be pruned; hyperband: the
            minimum resource (epochs).
    """
    optuna = import_optuna()

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup_epochs))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"pruner must be one of median, hyperband, none, got {name!r}")


def tune(config: Any, n_trials: int, *, study_dir: str | Path | None = None, storage: str | None = None,
         study_name: str | None = None, space: Mapping[str, Any] | None = None,
         fixed: Mapping[str, Any] | None = None, overrides: list[str] | None = None,
         trial_epochs: int | None = None, trial_time: float | None = None, pruner: Any = "median",
         seed: int = 0, verbose: bool = True) -> TuneResult:
    """Search hyperparameters on the validation loss; see the module docstring.

    Args:
        config: base config (path, mapping or :class:`~etgnn.config.Config`).
        n_trials: number of trials the study should hold when this call returns (resumable).
        study_dir: outputs and trial runs (default ``<run_dir>_tune``).
        storage: Optuna storage URL (default ``sqlite:///<study_dir>/study.db``).
        study_name: default: the name of ``study_dir``.
        space: search space (path -> choices / :class:`Range`); default :data:`DEFAULT_SPACE`.
        fixed: ``{path: value}`` set in every trial; a fixed path is removed from the space.
        overrides: ``"path=value"`` edits of the base config; those naming a searched path fix it.
        trial_epochs, trial_time: per-trial budget (``training.max_epochs`` / ``max_time``, minutes).
        pruner: ``"median"``, ``"hyperband"``, ``"none"`` or an ``optuna.pruners.BasePruner``.
        seed: seed of the TPE sampler (give parallel workers different seeds).
        verbose: print the search space and the table of the best trials.

    Raises:
        ConfigError: bad config or space (before any trial), a study whose earlier trials used
            other choices for a parameter.
        DataError: unreadable data (the trial is marked failed and the error propagates).
    """
    optuna = import_optuna()

    from .report import format_top_trials, write_reports

    if n_trials < 0:
        raise ConfigError(f"the number of trials must be >= 0, got {n_trials}")
    base_cfg = load_config(config, overrides)
    space, fixed = _resolve_space(space, fixed, overrides)
    budget = []
    if trial_epochs is not None:
        if trial_epochs < 1:
            raise ConfigError(f"trial epochs must be >= 1, got {trial_epochs}")
        budget.append(override("training.max_epochs", int(trial_epochs)))
    if trial_time is not None:
        if not trial_time > 0:
            raise ConfigError(f"trial time must be > 0 minutes, got {trial_time}")
        budget.append(override("training.max_time", float(trial_time)))
    base = config_to_dict(base_cfg)
    validate_space(base, space, fixed)
    load_config(base, budget)
    study_dir = Path(study_dir) if study_dir is not None else default_study_dir(base_cfg)
    if isinstance(pruner, str):
        pruner = make_pruner(pruner)
    study = optuna.create_study(storage=_storage(storage, study_dir), study_name=study_name or study_dir.name,
                                direction="minimize", pruner=pruner, load_if_exists=True)
    _check_same_space(study, space)
    if verbose:
        from .space import describe_space

        print(f"study {study.study_name!r} in {study_dir} ({len(study.trials)} trials so far); search space:\n"
              + describe_space(space, fixed))
    fixed_overrides = [override(p, v) for p, v in fixed.items()]
    objective = _Objective(base, space, fixed_overrides + budget, study_dir)
    ran = 0
    try:
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # trials of killed workers -> FAIL
            if _n_counted(study) >= n_trials:
                break
            study.sampler = optuna.samplers.TPESampler(seed=_sampler_seed(seed, len(study.trials)))
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
            ran += 1
    finally:  # also after Ctrl-C or a data error: what ran so far is reported
        files = write_reports(study, study_dir, base, fixed, space)
    best = study_dir / "best_config.yaml"
    if verbose:
        print(format_top_trials(study))
        print("\n".join(f"wrote {f}" for f in files))
    return TuneResult(study, study_dir, ran, best if best in files else None, files)


def _resolve_space(space, fixed, overrides) -> tuple[dict, dict]:
    space, more_fixed = merge_space(DEFAULT_SPACE if space is None else space, {})
    fixed = {**more_fixed, **dict(fixed or {})}
    for path in fixed:
        space.pop(path, None)
    for item in overrides or []:  # an override of a searched parameter fixes it
        path = item.split("=", 1)[0].strip()
        if path in space:
            del space[path]
            log.info("%s is set by an override and is not searched", path)
    if not space:
        raise ConfigError("the search space is empty: nothing to tune")
    return space, fixed


def _storage(url: str | None, study_dir: Path):
    import optuna

    if url is None:
        url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    if "://" not in url:
        raise ConfigError(f"storage must be a database URL such as sqlite:///study.db, "
                          f"postgresql://user:password@host/db or mysql://user:password@host/db, got {url!r}")
    study_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" since optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_INTERVAL,
                                              grace_period=GRACE_PERIOD)
    except ImportError as exc:
        raise ConfigError(f"storage {url.split('://')[0]}: a database driver is missing ({exc}); install it, "
                          "e.g. pip install psycopg2-binary (PostgreSQL) or pymysql (mysql+pymysql://...)") from None
    except Exception as exc:  # noqa: BLE001 - unreachable server, bad credentials, bad URL
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot open the study storage {_hide_password(url)}: {_hide_password(reason)}") from None


def _hide_password(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``."""
    import re

    return re.sub(r"(://[^:/@\s]+:)\S+@", r"\1***@", text)


def _check_same_space(study, space: Mapping[str, Any]) -> None:
    """Optuna cannot change the choices, the kind or the log scale of a parameter within a study."""
    import optuna

    dists = {}
    for trial in study.get_trials(deepcopy=False):
        dists.update(trial.distributions)
    for path, dist in dists.items():
        spec = space.get(path)
        if spec is None:
            continue
        if isinstance(spec, Range):
            kind = optuna.distributions.IntDistribution if spec.is_int else optuna.distributions.FloatDistribution
            same = isinstance(dist, kind) and dist.log == spec.log
        else:
            same = isinstance(dist, optuna.distributions.CategoricalDistribution) and tuple(dist.choices) == tuple(spec)
        if not same:
            raise ConfigError(f"study {study.study_name!r} searched {path} over {_dist_text(dist)} and this "
                              f"search asks for {spec if isinstance(spec, Range) else list(spec)}; keep the "
                              "space of a study or start a new one (--study-name / --study-dir)")


def _dist_text(dist) -> str:
    if hasattr(dist, "choices"):
        return str(list(dist.choices))
    return f"{'log-uniform' if dist.log else 'uniform'} [{dist.low:g}, {dist.high:g}]"


def _n_counted(study) -> int:
    """Trials that count towards ``n_trials``: complete, pruned, failed, and running (other workers)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


def _sampler_seed(seed: int, n_trials: int) -> int:
    """Seed for the trial after ``n_trials``: a resumed search samples what an uninterrupted one would."""
    import numpy as np

    return int(np.random.SeedSequence([seed, n_trials]).generate_state(1)[0])


class _Objective:
    """``objective(trial) -> best validation loss`` of one training run."""

    def __init__(self, base: dict, space: Mapping[str, Any], overrides: list[str], study_dir: Path):
        self.base, self.space, self.overrides, self.study_dir = base, space, overrides, study_dir

    def __call__(self, trial) -> float:
        import optuna

        from ..train import train

        params = suggest(trial, self.space)
        run_dir = self.study_dir / f"trial_{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        extra = [override(p, v) for p, v in params.items()] + [override("run_dir", str(run_dir))]
        try:
            cfg = load_config(self.base, self.overrides + extra)
        except ConfigError as exc:
            self._fail(trial, f"invalid combination of values: {exc}")

        def report(epoch: int, val_loss: float) -> None:
            trial.report(val_loss, epoch)
            if trial.should_prune():
                trial.set_user_attr("epochs_run", epoch + 1)
                raise optuna.TrialPruned(f"validation loss {val_loss:.5g} at epoch {epoch}")

        try:
            result = train(cfg, callback=report)
        except (optuna.TrialPruned, ConfigError, DataError):
            raise  # pruned, or a problem of the config / data that every trial would meet
        except Exception as exc:  # noqa: BLE001 - diverged, out of memory, ...: record and go on
            _free_gpu_memory()
            self._fail(trial, f"{type(exc).__name__}: {exc}")
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("stopped", result.stopped)
        if not math.isfinite(result.best_val_loss):
            self._fail(trial, f"no finite validation loss after {result.epochs_run} epochs")
        return result.best_val_loss

    @staticmethod
    def _fail(trial, message: str):
        trial.set_user_attr("error", message[:500])
        raise TrialFailed(message)


def _free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
