"""The training loop: AdamW, a learning-rate schedule (:mod:`etgnn.train.schedule`: x ``lr_factor``
on plateau, or a cosine anneal over the budget; optional warm-up), early stopping, EMA, DDP.

``train(config)`` reads the data (:func:`etgnn.data.dataset.make_splits`), fits the heads'
normalisation on the training part, trains, and leaves in ``config.run_dir``::

    config.yaml                   the resolved config
    best.ckpt / last.ckpt         checkpoints (see :mod:`etgnn.train.checkpoint`), written atomically
    log.csv                       one row per epoch: epoch, time_s (since the run began), lr
                                  (used in the epoch), train_loss, val_loss, val_<target>_<metric>
    metrics.json                  val / test metrics of the best model, best epoch and loss
    parity_val.png, parity_test.png

Reproducibility: everything random in epoch ``e`` (the shuffling and any torch / numpy / python
randomness) is seeded from ``(training.seed, e)`` only, and ``last.ckpt`` is written after every
epoch, so a run killed at any moment and resumed with ``resume=True`` loses at most the epoch in
progress and ends exactly like an uninterrupted run.  ``training.max_time`` (minutes) bounds the
wall-clock time of one session (one call of ``train``): the run stops cleanly after the epoch in
which it is exceeded, or inside an epoch that is still running when it is exceeded.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..config import Config, config_to_dict, load_config
from ..data import keys as K
from ..data.batch import to_device
from ..errors import ConfigError, EtgnnError
from . import ddp
from .checkpoint import BEST, LAST, capture_rng, epoch_seed, load_checkpoint, restore_rng, save_checkpoint, seed_everything
from .ema import EMA
from .finetune import backbone_param_groups, init_from_source
from ..evaluate import evaluate_loader
from ..data.statistics import atomic_numbers
from ..targets import total_loss
from ..targets.metrics import METRIC_NAMES, full_metrics
from .runlog import board_epoch, open_board, remove_partial_files, report_cache, say
from .result import TrainResult, result_from_files
from .schedule import LRSchedule

__all__ = ["TrainResult", "train"]

#: training settings that may change when a run is resumed (anything else must match)
_RESUMABLE_CHANGES = {"data": {"cache_dir", "num_workers"}}
_CHECKED_SECTIONS = ("model", "targets", "data")
#: an epoch resets the early-stopping counter only if it lowers the best validation loss by this
#: relative amount (the default threshold of ReduceLROnPlateau); any lower loss updates best.ckpt
MIN_REL_IMPROVEMENT = 1e-4


@dataclass
class _State:
    epoch: int = -1  # last completed epoch
    best_val_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    elapsed: float = 0.0  # seconds, all sessions


def train(config, *, resume: bool = False, callback=None) -> TrainResult:
    """Train a model as configured; see the module docstring for what is written.

    Args:
        config: a :class:`Config`, a mapping or a YAML path.
        resume: continue from ``run_dir/last.ckpt`` (a fresh run if there is none yet).
        callback: ``callback(epoch, val_loss)`` called after each validation (rank 0); it may
            raise (e.g. ``optuna.TrialPruned``) to stop training, and the exception propagates.
            Not available when DDP processes are spawned by ``train`` itself, nor for an ensemble.

    With ``training.ensemble: N > 1`` it trains a deep ensemble (:mod:`etgnn.train.ensemble`).

    Raises:
        ConfigError: invalid config, a run directory that already holds a run (without
            ``resume``), a resumed run whose model / targets / data changed.
        DataError: unreadable or ill-labelled data.
    """
    cfg = load_config(config)
    tr = cfg.training
    if tr.ensemble > 1:  # N runs of this function, one per member, then one model file
        from .ensemble import train_ensemble

        if ddp.launched_by_torchrun() or callback is not None:
            raise ConfigError(f"training.ensemble: {tr.ensemble} trains its members one after the other in one "
                              "process (each may use training.strategy: ddp); it takes no callback (etgnn tune) "
                              "and no torchrun launch")
        return train_ensemble(cfg, train, resume=resume)
    if ddp.launched_by_torchrun():
        _check_run_dir(cfg, resume)  # every rank, before rank 0 can write anything
        env = os.environ
        ctx = ddp.init_distributed(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                                   tr.device)
        try:
            return _run(cfg, ctx, resume, callback)
        finally:
            ddp.cleanup(ctx)
    _check_run_dir(cfg, resume)
    world = tr.devices * tr.num_nodes if tr.strategy == "ddp" else 1
    if world > 1:
        if tr.num_nodes > 1:
            raise ConfigError(f"training.num_nodes={tr.num_nodes}: start multi-node runs with torchrun, e.g. "
                              f"torchrun --nnodes {tr.num_nodes} --nproc-per-node {tr.devices} "
                              "--rdzv-endpoint HOST:PORT -m etgnn.cli train CONFIG")
        if callback is not None:
            raise ConfigError("a callback needs a single process or a torchrun launch, not training.strategy=ddp "
                              "with processes spawned by etgnn")
        ddp.resolve_device(tr.device)  # fail early on cuda without a GPU
        import torch.multiprocessing as mp

        mp.spawn(_spawn_entry, args=(config_to_dict(cfg), resume, ddp.free_port(), world), nprocs=world, join=True)
        return result_from_files(Path(cfg.run_dir))
    ctx = ddp.DistContext(device=ddp.resolve_device(tr.device))
    return _run(cfg, ctx, resume, callback)


def _spawn_entry(local_rank: int, cfg_dict: dict, resume: bool, port: int, world: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    cfg = load_config(cfg_dict)
    ctx = ddp.init_distributed(local_rank, world, local_rank, cfg.training.device)
    try:
        _run(cfg, ctx, resume, None)
    finally:
        ddp.cleanup(ctx)


def _check_run_dir(cfg: Config, resume: bool) -> None:
    run_dir = Path(cfg.run_dir)
    if not resume and (run_dir / LAST).exists():
        raise ConfigError(f"{run_dir} already holds a run ({LAST}); resume it (--resume / resume=True) "
                          "or set run_dir to a new folder")


def _check_compatible(old: dict, cfg: Config, path: Path) -> None:
    new = config_to_dict(cfg)
    diffs = []
    for section in _CHECKED_SECTIONS:
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if key not in _RESUMABLE_CHANGES.get(section, set()) and a.get(key) != b.get(key):
                diffs.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    if diffs:
        raise ConfigError(f"cannot resume {path}: the config changed ({'; '.join(diffs)}); "
                          "only training settings may change when resuming")


def _run(cfg: Config, ctx: ddp.DistContext, resume: bool, callback) -> TrainResult:
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    from ..data.dataset import EpochSampler, make_loader, make_splits
    from ..data.statistics import compute_statistics
    from ..model import _upgrade_state, build_model, load_model
    from ..targets import build_targets

    t0 = time.monotonic()
    tr, run_dir = cfg.training, Path(cfg.run_dir)
    seed_everything(tr.seed)
    if ctx.is_main:
        say(f"run directory: {run_dir}")
    if ctx.is_main and resume:
        remove_partial_files(run_dir)
    splits = make_splits(cfg, progress=tr.progress) if ctx.is_main else None
    if ctx.is_main:
        report_cache(cfg)
    ddp.barrier(ctx)  # rank 0 filled the graph cache; the others read it
    if splits is None:
        splits = make_splits(cfg, progress=False)
    model = build_model(cfg, statistics=compute_statistics(splits["train"], build_targets(cfg)))
    fresh = not (resume and (run_dir / LAST).is_file())
    if cfg.init_from is not None and fresh:  # fine-tuning: the source's backbone and matching heads
        report = init_from_source(model, load_model(cfg.init_from), atomic_numbers(splits["train"]))
        if ctx.is_main:
            for line in report.lines(cfg.init_from):
                say(line)
    model.to(ctx.device)
    params = (backbone_param_groups(model, tr.lr, tr.freeze_backbone, tr.backbone_lr_factor)
              if cfg.init_from is not None else model.parameters())
    opt = torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay)
    ema = EMA(model, tr.ema_decay) if tr.ema_decay else None
    state = _State()
    if resume and (run_dir / LAST).is_file():
        ckpt = load_checkpoint(run_dir / LAST, map_location=ctx.device)
        _check_compatible(ckpt["config"], cfg, run_dir / LAST)
        weights = ckpt.get("train_state_dict") or ckpt["state_dict"]
        model.load_state_dict(_upgrade_state(weights, model.heads) if ckpt.get("format_version", 1) < 3 else weights)
        opt.load_state_dict(ckpt["optimizer"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        restore_rng(ckpt["rng"])
        state = _State(ckpt["epoch"], ckpt["best_val_loss"], ckpt["best_epoch"], ckpt["bad_epochs"], ckpt["elapsed"])
    elif resume and ctx.is_main:
        warnings.warn(f"{run_dir}: no {LAST} to resume from; starting a new run", stacklevel=2)
    log = _Log(run_dir / "log.csv", list(cfg.targets)) if ctx.is_main else None
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        log.start(keep_until=state.epoch)
    board = open_board(cfg, state.epoch) if ctx.is_main and tr.tensorboard else None

    train_set = splits["train"]
    if ctx.distributed:
        sampler = DistributedSampler(train_set, ctx.world_size, ctx.rank, shuffle=True, seed=tr.seed)
        val_set = splits["val"].subset(range(ctx.rank, len(splits["val"]), ctx.world_size))
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    else:
        sampler, val_set, net = EpochSampler(len(train_set), True, tr.seed), splits["val"], model
    train_loader = make_loader(train_set, cfg, shuffle=True, sampler=sampler)
    val_loader = make_loader(val_set, cfg, shuffle=False)
    sched = LRSchedule(opt, tr, steps_per_epoch=len(train_loader))
    if resume and (run_dir / LAST).is_file():
        sched.load_state_dict(ckpt["scheduler"])
    deadline = t0 + (tr.max_time * 60.0 if tr.max_time is not None else math.inf)
    elapsed0 = state.elapsed

    sync_time = ctx.distributed and tr.lr_schedule == "cosine" and tr.max_time is not None

    def run_seconds(synced: bool = False) -> float:
        """Wall-clock seconds of the run, every session (the same on every rank if ``synced``)."""
        seconds = elapsed0 + time.monotonic() - t0
        return ddp.max_over_ranks(seconds, ctx) if synced else seconds

    stopped, mid_epoch = "max_epochs", False
    annealed = state.epoch >= 0 and sched.finished(state.epoch, state.elapsed)  # resumed after its cosine ended
    if annealed:
        stopped = "max_time" if state.epoch + 1 < tr.max_epochs else "max_epochs"
        if ctx.is_main:
            say(f"the cosine schedule of this run is complete ({state.epoch + 1} epochs, {state.elapsed / 60:.1f} "
                f"minutes): nothing to train; raise training.max_time or training.max_epochs to continue")
    for epoch in range(state.epoch + 1, state.epoch + 1 if annealed else tr.max_epochs):
        if state.bad_epochs >= tr.early_stopping_patience:
            stopped = "early_stopping"
            break
        sampler.set_epoch(epoch)
        seed_everything(epoch_seed(tr.seed, epoch))
        train_loss, complete = _train_epoch(net, model, train_loader, opt, ema, cfg, ctx, epoch, deadline,
                                            lambda step: sched.before_step(epoch, step, run_seconds(sync_time)))
        if not complete:  # max_time inside the epoch: a fragment is not an epoch
            stopped, mid_epoch = "max_time", True
            if ctx.is_main:
                say(f"stopped mid-epoch {epoch}: training.max_time reached; the partial epoch is discarded "
                     f"(not logged, not a candidate for {BEST}; --resume replays it)")
            break
        if ema is not None:
            with ema.applied(model):
                val_loss, val_metrics, _, _ = evaluate_loader(model, val_loader, ctx=ctx)
        else:
            val_loss, val_metrics, _, _ = evaluate_loader(model, val_loader, ctx=ctx)
        lr = opt.param_groups[0]["lr"]  # the rate of the epoch's last step
        sched.after_epoch(val_loss)
        improved = val_loss < state.best_val_loss
        significant = val_loss < state.best_val_loss * (1.0 - MIN_REL_IMPROVEMENT)
        state.epoch, state.elapsed = epoch, run_seconds(ctx.distributed)
        state.bad_epochs = 0 if significant else state.bad_epochs + 1
        if improved:
            state.best_val_loss, state.best_epoch = val_loss, epoch
        if ctx.is_main:
            log.append(epoch, state.elapsed, lr, train_loss, val_loss, val_metrics)
            if board is not None:
                board_epoch(board, epoch, lr, train_loss, val_loss, val_metrics)
            say(f"epoch {epoch}: train loss {train_loss:.5g}, val loss {val_loss:.5g}, lr {lr:.3g}"
                 + (" *" if improved else ""))
            fields = _checkpoint_fields(cfg, model, opt, sched, ema, state, epoch)
            if improved:
                save_checkpoint(run_dir / BEST, **fields)
            save_checkpoint(run_dir / LAST, **fields)
        if _callback_failed(callback, epoch, val_loss, ctx):
            if board is not None:
                board.close()
            return TrainResult(state.best_val_loss, state.best_epoch, state.epoch + 1, {}, run_dir, "callback")
        out_of_time = ddp.any_rank(time.monotonic() > deadline, ctx)  # every rank stops together
        if out_of_time or sched.finished(epoch, state.elapsed):
            stopped = "max_time" if out_of_time or epoch + 1 < tr.max_epochs else "max_epochs"
            break
    if board is not None:
        board.close()
    result = TrainResult(state.best_val_loss, state.best_epoch, state.epoch + 1, {}, run_dir, stopped, mid_epoch)
    if ctx.is_main:
        uncertainty = {}
        if state.epoch >= 0 or (run_dir / BEST).is_file():
            result.metrics = _final_evaluation(cfg, model, ema, splits, ctx.device, run_dir)
            if tr.uncertainty == "llpr" and (run_dir / BEST).is_file():  # the best weights, loaded above
                from .calibrate import add_uncertainty_to_checkpoint

                say("fitting the uncertainty (LLPR) of the best model into best.ckpt")
                uncertainty = {"uncertainty": add_uncertainty_to_checkpoint(model, splits, run_dir / BEST)}
        else:
            warnings.warn(f"{run_dir}: no epoch completed within training.max_time={tr.max_time} minutes; "
                          "nothing to evaluate (raise training.max_time)", stacklevel=2)
        _write_json(run_dir / "metrics.json", {"best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch,
                                               "epochs_run": result.epochs_run, "stopped": stopped,
                                               "stopped_mid_epoch": mid_epoch, **result.metrics, **uncertainty})
    return result


def _train_epoch(net, model, loader, opt, ema, cfg: Config, ctx: ddp.DistContext, epoch: int,
                 deadline: float, set_lr) -> tuple[float, bool]:
    """One pass over the training data; ``set_lr(step)`` sets the rate before each step.

    Returns:
        the mean loss per structure (all ranks), and whether the pass completed (``False`` when
        the deadline struck before the last batch).
    """
    from tqdm.auto import tqdm

    tr = cfg.training
    net.train()
    totals = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    bar = tqdm(total=len(loader), desc=f"epoch {epoch}", unit="batch", leave=False,
               disable=None if (tr.progress and ctx.is_main) else True)  # None: on a terminal only
    complete = True
    try:
        for step, batch in enumerate(loader):
            if step > 0 and ddp.any_rank(time.monotonic() > deadline, ctx):
                complete = False
                break
            batch = to_device(batch, ctx.device)
            loss, _ = total_loss(net(batch), batch, model.targets)
            if ctx.distributed:  # zero-weight use of every parameter: a batch without triplets
                loss = loss + 0.0 * sum(p.reshape(-1)[0] for p in model.parameters())  # leaves none unused
            if not torch.isfinite(loss):
                raise EtgnnError(f"training diverged at epoch {epoch}, batch {step}: loss is {loss.item()}; "
                                 "lower training.lr or set training.grad_clip")
            opt.zero_grad(set_to_none=True)
            set_lr(step)
            loss.backward()
            if tr.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model)
            n = batch[K.N_ATOMS].shape[0]
            totals += torch.stack([loss.detach().double() * n, totals.new_tensor(float(n))])
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4g}")
    finally:
        bar.close()
    ddp.all_reduce_sum(totals, ctx)
    return float(totals[0] / totals[1].clamp(min=1)), complete


def _callback_failed(callback, epoch: int, val_loss: float, ctx: ddp.DistContext) -> bool:
    """Call the callback on rank 0; if it raises, every rank stops and rank 0 re-raises."""
    error = None
    if callback is not None and ctx.is_main:
        try:
            callback(epoch, val_loss)
        except BaseException as exc:  # noqa: BLE001 - re-raised below (optuna.TrialPruned, ...)
            error = exc
    stop = ddp.any_rank(error is not None, ctx)  # every rank joins, callback or not
    if error is not None:
        raise error
    return stop


def _checkpoint_fields(cfg, model, opt, sched, ema, state: _State, epoch: int) -> dict:
    return {
        "config": config_to_dict(cfg),
        "state_dict": ema.model_state_dict(model) if ema is not None else model.state_dict(),
        "train_state_dict": model.state_dict() if ema is not None else None,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "epoch": epoch,
        "best_val_loss": state.best_val_loss,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "elapsed": state.elapsed,
        "rng": capture_rng(cfg.training.seed, epoch + 1),
        "baselines": model.baselines,  # training means, the metrics' baselines
    }


def _final_evaluation(cfg: Config, model, ema, splits, device, run_dir: Path) -> dict:
    """Metrics and parity plots of the best model (EMA weights if enabled) on val and test."""
    from ..data.dataset import make_loader
    from .plots import parity_plot

    if (run_dir / BEST).is_file():
        model.load_state_dict(load_checkpoint(run_dir / BEST, map_location=device)["state_dict"])
    elif ema is not None:
        model.load_state_dict(ema.model_state_dict(model))
    units = {name: t.unit for name, t in cfg.targets.items()}
    metrics = {}
    for split in ("val", "test"):
        if len(splits[split]) == 0:
            continue
        loader = make_loader(splits[split], cfg, shuffle=False)
        _, _, pred, ref = evaluate_loader(model, loader, ctx=ddp.DistContext(device=device), collect=True)
        m = metrics[split] = full_metrics(pred, ref, model.targets, numbers=atomic_numbers(splits[split]),
                                          baselines=model.baselines)
        parity_plot(pred, ref, run_dir / f"parity_{split}.png", m, units, title=f"{split} ({len(splits[split])} structures)")
    return metrics


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=float, allow_nan=True))
    os.replace(tmp, path)


class _Log:
    """``log.csv``: one row per completed epoch."""

    def __init__(self, path: Path, targets: list[str]):
        self.path = path
        self.targets = targets
        self.header = ["epoch", "time_s", "lr", "train_loss", "val_loss"] + [
            f"val_{t}_{m}" for t in targets for m in METRIC_NAMES]

    def start(self, keep_until: int) -> None:
        """Keep the rows of epochs <= ``keep_until`` (those a resumed checkpoint covers)."""
        rows = []
        if keep_until >= 0 and self.path.is_file():
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.reader(fh)][1:]
            rows = [r for r in rows if r and int(r[0]) <= keep_until]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as fh:
            csv.writer(fh).writerows([self.header] + rows)

    def append(self, epoch, time_s, lr, train_loss, val_loss, metrics) -> None:
        row = [epoch, f"{time_s:.3f}", f"{lr:.6g}", f"{train_loss:.8g}", f"{val_loss:.8g}"] + [
            f"{metrics[t][m]:.8g}" for t in self.targets for m in METRIC_NAMES]
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(row)
