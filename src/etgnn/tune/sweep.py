"""One-parameter sweeps: the validation loss against batch size or learning rate (Fig. S3).

:func:`sweep` trains the base config once per value of one dotted config path, every run under
the same budget (``budget_minutes`` and / or ``epochs``, else the base config's), and writes to
``output_dir`` (default ``<run_dir>_sweep_<param>``)::

    sweep.yaml      what the sweep is (parameter, budget, base config); a rerun must match it
    <param>=<value>/  one training run per value (config.yaml, log.csv, metrics.json, ...)
    sweep.csv       one row per value: param, value, best_val_loss, final_val_loss (last epoch),
                    best_epoch, epochs_run, stopped, time_s, status, run_dir, error
    sweep.png       best and last-epoch validation loss vs value (log x for learning rates)

Resuming: a value whose run finished (``metrics.json`` present) is not retrained; an interrupted
run is resumed from its ``last.ckpt`` with what is left of the time budget (its ``log.csv``
records the time used), so every value gets the same budget.  New values may be added on a
rerun; changing the base config or the budget needs a new ``output_dir``.  A run that diverges
is recorded as ``failed`` and the sweep goes on.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..config import config_to_dict, load_config
from ..errors import ConfigError, DataError, EtgnnError
from .space import override

__all__ = ["SweepResult", "sweep", "default_sweep_dir"]

#: settings that may differ between the sessions of one sweep (they do not change the results)
_FREE = {"run_dir", "data.cache_dir", "data.num_workers", "training.progress", "training.device"}
COLUMNS = ("param", "value", "best_val_loss", "final_val_loss", "best_epoch", "epochs_run", "stopped", "time_s",
           "status", "run_dir", "error")
#: a resumed run whose time budget is used up still runs this long (minutes), then evaluates
_MIN_TIME = 1e-3


@dataclass
class SweepResult:
    """Outcome of :func:`sweep`.

    Attributes:
        param: the swept config path.
        rows: one dict per value (the columns of ``sweep.csv``), in the order given.
        csv: path of ``sweep.csv``.
        plot: path of ``sweep.png`` (None when no run finished).
    """

    param: str
    rows: list
    csv: Path
    plot: Path | None


def default_sweep_dir(config: Any, param: str) -> Path:
    """``<run_dir>_sweep_<param>`` of a config."""
    return Path(f"{str(load_config(config).run_dir).rstrip('/')}_sweep_{param}")


def _dir_name(param: str, value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", f"{param}={text}")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _check_manifest(path: Path, manifest: dict) -> None:
    """Write ``sweep.yaml`` or check that an earlier session swept the same thing."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        return
    old = yaml.safe_load(path.read_text()) or {}
    a, b = _flat(old), _flat(manifest)
    diffs = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
             if a.get(k) != b.get(k) and k.removeprefix("config.") not in _FREE]
    if diffs:
        raise ConfigError(f"{path.parent} holds a sweep made with other settings ({'; '.join(diffs[:8])}); "
                          "use another --output-dir for a different sweep")


def _read_log(run_dir: Path) -> tuple[float | None, float | None]:
    """``(last val_loss, last time_s)`` of a run's ``log.csv``."""
    try:
        with open(run_dir / "log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return None, None
    if not rows:
        return None, None
    return float(rows[-1]["val_loss"]), float(rows[-1]["time_s"])


def _finished_row(run_dir: Path) -> dict:
    data = json.loads((run_dir / "metrics.json").read_text())
    final, time_s = _read_log(run_dir)
    return {"best_val_loss": data["best_val_loss"], "final_val_loss": final, "best_epoch": data["best_epoch"],
            "epochs_run": data["epochs_run"], "stopped": data["stopped"], "time_s": time_s}


def sweep(config: Any, param: str, values: Sequence, *, output_dir: str | Path | None = None,
          budget_minutes: float | None = None, epochs: int | None = None, overrides: list[str] | None = None,
          verbose: bool = True) -> SweepResult:
    """Train once per value of ``param`` under one budget; see the module docstring.

    Args:
        config: base config (path, mapping or :class:`~etgnn.config.Config`).
        param: dotted config path, e.g. ``"training.batch_size"`` or ``"training.lr"``.
        values: the values (numbers or strings, as in the config).
        output_dir: default ``<run_dir>_sweep_<param>``.
        budget_minutes: ``training.max_time`` of every run (minutes).
        epochs: ``training.max_epochs`` of every run.
        overrides: ``"path=value"`` edits of the base config.
        verbose: print one line per value.

    Raises:
        ConfigError: unknown path or invalid value (before any training), an output folder that
            holds a different sweep.
        DataError: unreadable data.
    """
    from ..train import train

    base_cfg = load_config(config, overrides)
    base = config_to_dict(base_cfg)
    if param.split(".")[0] == "run_dir":
        raise ConfigError("run_dir cannot be swept: every value gets its own run directory in --output-dir")
    values = list(values)
    if not values:
        raise ConfigError(f"no values given for {param}")
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"repeated values for {param}: {values}")
    budget = []
    if budget_minutes is not None:
        if not budget_minutes > 0:
            raise ConfigError(f"budget must be > 0 minutes, got {budget_minutes}")
        budget.append(override("training.max_time", float(budget_minutes)))
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}")
        budget.append(override("training.max_epochs", int(epochs)))
    out = Path(output_dir) if output_dir is not None else default_sweep_dir(base_cfg, param)
    configs = []
    for value in values:
        run_dir = out / _dir_name(param, value)
        try:
            configs.append(load_config(base, budget + [override(param, value), override("run_dir", str(run_dir))]))
        except ConfigError as exc:
            raise ConfigError(f"sweep value {param}={value!r}: {exc}") from None
    budget_cfg = load_config(base, budget).training
    _check_manifest(out / "sweep.yaml", {"param": param, "budget": {"max_epochs": budget_cfg.max_epochs,
                                                                    "max_time": budget_cfg.max_time}, "config": base})
    rows = []
    for value, cfg in zip(values, configs):
        run_dir = Path(cfg.run_dir)
        row = dict.fromkeys(COLUMNS) | {"param": param, "value": value, "run_dir": str(run_dir)}
        if (run_dir / "metrics.json").is_file():
            row |= _finished_row(run_dir) | {"status": "done before"}
        else:
            resume = (run_dir / "last.ckpt").is_file()
            if resume and cfg.training.max_time is not None:  # only what is left of the budget
                used = (_read_log(run_dir)[1] or 0.0) / 60.0
                cfg = load_config(cfg, [override("training.max_time", max(cfg.training.max_time - used, _MIN_TIME))])
            if verbose:
                print(f"{param}={value}: {'resuming' if resume else 'training'} in {run_dir}", flush=True)
            try:
                train(cfg, resume=resume)
                row |= _finished_row(run_dir) | {"status": "resumed" if resume else "trained"}
            except (ConfigError, DataError):
                raise
            except EtgnnError as exc:  # diverged: a result of this value, not of the sweep
                row |= {"status": "failed", "error": str(exc)}
        rows.append(row)
        if verbose:
            print(f"{param}={value}: {row['status']}, best validation loss {row['best_val_loss']}", flush=True)
        plot = _write(out, rows, param, budget_cfg)
    if verbose:
        print(f"wrote {out / 'sweep.csv'}" + (f" and {plot}" if plot else ""))
    return SweepResult(param, rows, out / "sweep.csv", plot)


def _write(out: Path, rows: list[dict], param: str, budget) -> Path | None:
    from .plots import sweep_plot

    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    ok = [r for r in rows if r["best_val_loss"] is not None]
    if not ok:
        return None
    final = [r["final_val_loss"] for r in ok]
    return sweep_plot(param, [r["value"] for r in ok], [r["best_val_loss"] for r in ok],
                      None if any(f is None for f in final) else final, out / "sweep.png",
                      title=f"validation loss vs {param}\n(each run: {_budget_text(budget)})")


def _budget_text(training) -> str:
    epochs = f"at most {training.max_epochs} epochs"
    return epochs if training.max_time is None else f"{training.max_time:g} min, {epochs}"
