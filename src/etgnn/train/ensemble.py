"""Deep ensembles (``training.ensemble: N``): N ordinary runs, then one model file.

Member ``k`` is a run of :func:`etgnn.train.train` with the ensemble's config except
``model.seed + k`` (its initial weights), ``training.seed + k`` (its shuffling and every random
number of its epochs) and ``run_dir/member_k``; the data split is the same for every member
(``data.split_seed``), and so is the budget (``max_epochs``, ``max_time`` per member).  After the
last member, ``run_dir`` receives::

    config.yaml                   the ensemble's config
    best.ckpt                     member 0's best checkpoint with the ensemble's config and, under
                                  "uncertainty", the other members' weights and one calibration
                                  scale per target (etgnn.uncertainty.Ensemble): etgnn.load_model
                                  gives a model whose prediction is the members' mean
    metrics.json                  val / test metrics of the mean, the uncertainty's calibration and
                                  metrics, and every member's run
    parity_val.png, parity_test.png

``--resume``: a member whose run finished (its ``metrics.json`` exists) is not trained again; the
first unfinished one resumes from its ``last.ckpt`` (or starts), then the others; then the
ensemble is joined again.  To train a finished member longer, resume its own folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
import yaml

from ..config import Config, config_to_dict
from ..errors import ConfigError, EtgnnError
from . import ddp
from .checkpoint import BEST, LAST, load_checkpoint
from .result import TrainResult, result_from_files
from .runlog import say

__all__ = ["member_config", "member_dir", "train_ensemble", "join_ensemble"]


def member_dir(run_dir, k: int) -> Path:
    """Run directory of member ``k``: ``run_dir/member_k``."""
    return Path(run_dir) / f"member_{k}"


def member_config(cfg: Config, k: int) -> Config:
    """The config of member ``k``: seeds ``model.seed + k`` and ``training.seed + k``, its own run
    directory, one model."""
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, seed=cfg.model.seed + k),
        training=dataclasses.replace(cfg.training, seed=cfg.training.seed + k, ensemble=1),
        run_dir=str(member_dir(cfg.run_dir, k)))


def _check_run_dir(cfg: Config, resume: bool) -> None:
    run_dir = Path(cfg.run_dir)
    held = [p for p in [run_dir / BEST] + [member_dir(run_dir, k) / LAST for k in range(cfg.training.ensemble)]
            if p.exists()]
    if held and not resume:
        raise ConfigError(f"{run_dir} already holds a run ({held[0]}); resume it (--resume / resume=True) or set "
                          "run_dir to a new folder")


def train_ensemble(cfg: Config, train_one, *, resume: bool = False) -> TrainResult:
    """Train every member with ``train_one`` (:func:`etgnn.train.train`), then :func:`join_ensemble`.

    Raises:
        ConfigError: ``run_dir`` holds a run and ``resume`` is False.
    """
    n = cfg.training.ensemble
    _check_run_dir(cfg, resume)
    say(f"run directory: {cfg.run_dir} (deep ensemble of {n} models)")
    results = []
    for k in range(n):
        mcfg = member_config(cfg, k)
        folder = Path(mcfg.run_dir)
        if resume and (folder / "metrics.json").is_file():
            say(f"ensemble member {k + 1} of {n}: finished in {folder}, not trained again")
            results.append(result_from_files(folder))
            continue
        say(f"ensemble member {k + 1} of {n}: model.seed {mcfg.model.seed}, training.seed {mcfg.training.seed}")
        results.append(train_one(mcfg, resume=resume and (folder / LAST).is_file()))
    return join_ensemble(cfg, results)


def join_ensemble(cfg: Config, results: list[TrainResult]) -> TrainResult:
    """One model file from the members' ``best.ckpt``: calibrate the spread on the validation part,
    score the mean on val and test, write ``run_dir`` (module docstring)."""
    from ..data.dataset import make_splits
    from ..model import load_model, save_atomic
    from ..uncertainty import Ensemble, evaluate_uncertainty

    run_dir, n = Path(cfg.run_dir), cfg.training.ensemble
    missing = [str(member_dir(run_dir, k) / BEST) for k in range(n) if not (member_dir(run_dir, k) / BEST).is_file()]
    if missing:
        raise EtgnnError(f"no best model to join into the ensemble: {', '.join(missing)} missing (no epoch completed "
                         "within training.max_time?); raise the budget and resume (--resume)")
    device = ddp.resolve_device(cfg.training.device)
    models = [load_model(member_dir(run_dir, k) / BEST, map_location=device) for k in range(n)]
    model = models[0]
    model.config = cfg
    model.uncertainty = Ensemble(models[1:], list(model.targets), seeds=[cfg.model.seed + k for k in range(n)])
    say(f"joining {n} members into {run_dir / BEST}: the prediction is their mean")
    splits = make_splits(cfg, progress=cfg.training.progress)
    uncertainty = {}
    if len(splits["val"]):
        uncertainty["calibration"] = model.uncertainty.calibrate(model, splits["val"], progress=cfg.training.progress)
        for name, cal in uncertainty["calibration"].items():
            say(f"{name}: members' spread x {cal['scale']:.4g} ({cal['method']}); validation: Spearman "
                f"{cal['spearman']:.3f}, components within 1 / 2 sigma {cal['coverage_1sigma']:.3f} / "
                f"{cal['coverage_2sigma']:.3f}")
    else:
        say("no validation part: the ensemble's spread is not calibrated (scale 1)")
    val_loss, metrics = _evaluate(cfg, model, splits, device, run_dir)
    for split in ("val", "test"):
        if len(splits[split]):
            uncertainty[split] = evaluate_uncertainty(model, splits[split])
    ckpt = load_checkpoint(member_dir(run_dir, 0) / BEST)
    ckpt.update(config=config_to_dict(cfg), uncertainty=model.uncertainty.state_dict(), best_val_loss=val_loss)
    save_atomic(ckpt, run_dir / BEST)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    members = [{"run_dir": str(r.run_dir), "model_seed": cfg.model.seed + k, "training_seed": cfg.training.seed + k,
                "best_val_loss": r.best_val_loss, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                "stopped": r.stopped} for k, r in enumerate(results)]
    epochs = sum(r.epochs_run for r in results)
    _write_json(run_dir / "metrics.json", {"best_val_loss": val_loss, "best_epoch": -1, "epochs_run": epochs,
                                           "stopped": "ensemble", "ensemble": n, "members": members, **metrics,
                                           "uncertainty": uncertainty})
    return TrainResult(val_loss, -1, epochs, metrics, run_dir, "ensemble", members=results)


@torch.no_grad()
def _evaluate(cfg: Config, model, splits, device, run_dir: Path) -> tuple[float, dict]:
    """``(validation loss, {split: metrics})`` of the members' mean, with parity plots."""
    from ..data.dataset import make_loader
    from ..data.statistics import atomic_numbers
    from ..evaluate import evaluate_loader
    from ..targets.metrics import full_metrics
    from .plots import parity_plot

    units = {name: t.unit for name, t in cfg.targets.items()}
    val_loss, metrics = float("nan"), {}
    for split in ("val", "test"):
        if len(splits[split]) == 0:
            continue
        loader = make_loader(splits[split], cfg, shuffle=False)
        loss, _, pred, ref = evaluate_loader(model, loader, ctx=ddp.DistContext(device=device), collect=True)
        val_loss = loss if split == "val" else val_loss
        m = metrics[split] = full_metrics(pred, ref, model.targets, numbers=atomic_numbers(splits[split]),
                                          baselines=model.baselines)
        parity_plot(pred, ref, run_dir / f"parity_{split}.png", m, units,
                    title=f"{split} ({len(splits[split])} structures), mean of {cfg.training.ensemble} models")
    return val_loss, metrics


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=float, allow_nan=True))
    os.replace(tmp, path)
