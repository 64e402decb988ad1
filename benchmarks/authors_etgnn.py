"""The authors' ETGNN on our validation-MAE-against-wall-clock axes (phonondb Born charges).

Puts the reference implementation (github Yuxing0926/ETGNN, checked out somewhere outside this
repository) on the same axes as ``benchmarks/learning_curves.py``: trained on the same
``pool.extxyz`` and scored on the same ``val.extxyz``.  Nothing of the authors' code lives here;
this script imports it from ``--authors-repo`` and needs its own environment (their dependencies:
torch, torch_geometric, pytorch_lightning, pymatgen, easydict, sympy, ...)::

    /tmp/authors_venv/bin/python benchmarks/authors_etgnn.py --authors-repo /tmp/authors_src \
        --split /work/lc/phonondb/phonondb/split --minutes 20 --eval-every-min 2 --out benchmarks/results

What it does:

* writes every structure of the split as a POSCAR plus the authors' ``id_prop.csv`` (id, then the
  9 Born-charge components of every atom in order) under ``--data-dir`` and turns them into graphs
  with the authors' own parser (``GraphData.data_parsing.cif_parse``, pymatgen neighbours);
* reads the authors' ``config.yaml`` (their BEC set-up: ``property: born``, rank-2 atom-wise
  tensors) with their ``read_config``, builds the network with their ``main.build_model`` and their
  ``models.Model.Model`` (loss list, AdamW, ReduceLROnPlateau on the epoch training loss);
* trains with their ``Model.training_step`` in a plain loop (their ``pl.Trainer`` call uses
  arguments that current Lightning no longer has), on one thread, for ``--minutes`` of training
  wall-clock, with their unshuffled train loader (``graph_data_module``, seed-42 permutation);
* every ``--eval-every-min`` minutes of training time (evaluation time excluded) computes the
  validation MAE: mean of |pred - target| over every validation atom and all 9 components (e);
* writes ``OUT/authors_etgnn.json`` and ``OUT/authors_etgnn.md``.

torch_scatter / torch_sparse have no wheels for the local torch, so ``--shims`` (default
``/tmp/authors_shims``) is put first on ``sys.path``; it must hold pure-torch stand-ins for them.
``torch_geometric.nn.acts`` (gone from current PyG) is provided below as a one-function module.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--authors-repo", required=True, help="checkout of Yuxing0926/ETGNN")
    p.add_argument("--split", required=True, help="folder with pool.extxyz and val.extxyz")
    p.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget")
    p.add_argument("--eval-every-min", type=float, default=2.0, help="minutes of training between evaluations")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--data-dir", default="/tmp/authors_data", help="where the POSCARs and graph files go")
    p.add_argument("--shims", default="/tmp/authors_shims", help="folder with torch_scatter/torch_sparse stand-ins")
    p.add_argument("--config", default=None, help="authors' config (default: AUTHORS_REPO/config.yaml)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="training batch (their config says 60, which needs ~35 GB here; see notes)")
    p.add_argument("--eval-batch-size", type=int, default=None, help="default: --batch-size")
    p.add_argument("--val-limit", type=int, default=0, help="score only the first N validation crystals (smoke tests)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after N optimiser steps (smoke tests)")
    p.add_argument("--no-initial-eval", action="store_true", help="skip the t=0 point")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--label", default="their BEC config")
    p.add_argument("--lr", type=float, default=None,
                   help="override their learning rate (e.g. scaled with the smaller batch: 5e-4 * 16/60)")
    p.add_argument("--skip-nonfinite", action="store_true",
                   help="skip an optimiser step whose loss or gradient is not finite (their batch 14 of the "
                        "unshuffled pool gives NaN at any learning rate) and count it")
    p.add_argument("--append", action="store_true",
                   help="add this run's curve to OUT/authors_etgnn.json instead of replacing the file")
    return p.parse_args(argv)


def _log(msg):
    print(f"[authors_etgnn {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        if out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    f = repo / ".authors_commit"  # written next to an exported (git archive) tree
    return f.read_text().strip() if f.exists() else "unknown"


def _write_split(frames, folder: Path):
    """One POSCAR per crystal plus id_prop.csv in the layout of the authors' README."""
    import ase.io
    import numpy as np

    crystals = folder / "crystals"
    crystals.mkdir(parents=True, exist_ok=True)
    rows, ids = [], []
    for k, atoms in enumerate(frames):
        cid = f"s{k:05d}"
        ase.io.write(crystals / f"{cid}.vasp", atoms, format="vasp", direct=True, vasp5=True, sort=False)
        z = np.asarray(atoms.arrays["y_born_charges"], dtype=float).reshape(len(atoms), 9)
        rows.append(",".join([cid] + [repr(float(v)) for v in z.reshape(-1)]))
        ids.append(cid)
    (folder / "id_prop.csv").write_text("\n".join(rows) + "\n")
    return ids


def main(argv=None):
    a = _args(argv)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    os.environ["MKL_NUM_THREADS"] = str(a.threads)
    repo = Path(a.authors_repo).resolve()
    split = Path(a.split).resolve()
    out = Path(a.out)
    data_dir = Path(a.data_dir)
    warnings.filterwarnings("ignore")

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(a.threads)
    except RuntimeError:
        pass
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)

    sys.path.insert(0, str(repo))
    if a.shims:
        sys.path.insert(0, str(Path(a.shims).resolve()))
    import torch_geometric.nn as _pyg_nn

    if not hasattr(_pyg_nn, "acts"):  # removed from PyG after 2.0; the authors import swish from it
        acts = types.ModuleType("torch_geometric.nn.acts")
        acts.swish = lambda x: x * torch.sigmoid(x)
        sys.modules["torch_geometric.nn.acts"] = acts
        _pyg_nn.acts = acts

    cwd = os.getcwd()
    os.chdir(repo)  # their modules use relative imports from the repository root
    try:
        from GraphData.data_parsing import cif_parse
        from GraphData.graph_data import graph_data_module
        from input.config_parsing import read_config
        from main import build_model
        from models.Model import Model
        from torch_geometric.loader import DataLoader

        import yaml
        from input import config_parsing

        cfg_path = Path(a.config).resolve() if a.config else repo / "config.yaml"
        # their shipped config.yaml also carries a 'painn' section that their read_config rejects
        # (KeyError); keep only the sections read_config knows and parse that copy
        raw = yaml.safe_load(cfg_path.read_text())
        dropped = sorted(set(raw) - set(config_parsing.config_default))
        data_dir.mkdir(parents=True, exist_ok=True)
        cfg_copy = data_dir / "config_born.yaml"
        cfg_copy.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k not in dropped}))
        config = read_config(config_file_name=str(cfg_copy))
    finally:
        os.chdir(cwd)
    if config.setup.property.lower() != "born" or int(config.dataset_params.rank_tensor) != 2:
        raise SystemExit(f"{cfg_path} is not a Born-charge config (property={config.setup.property})")
    config.setup.stage = "fit"
    config.setup.l_pred_atomwise_tensor = True
    config.setup.l_pred_crystal_tensor = False

    # ---- data: POSCAR + id_prop.csv -> the authors' graph_data.npz (cached) ----
    import ase.io

    graphs = {}
    for name in ("pool", "val"):
        frames = ase.io.read(split / f"{name}.extxyz", ":")
        folder = data_dir / name
        npz = folder / "graph_data.npz"
        if not npz.exists():
            t0 = time.perf_counter()
            ids = _write_split(frames, folder)
            config.dataset_params.crystal_path = str(folder / "crystals")
            config.dataset_params.id_prop_path = str(folder)
            config.dataset_params.graph_data_path = str(folder)
            config.dataset_params.file_type = "poscar"
            cif_parse(config)
            _log(f"{name}: {len(ids)} crystals -> {npz} ({time.perf_counter() - t0:.1f} s)")
        g = np.load(npz, allow_pickle=True)["graph"].item()
        data = [g[f"s{k:05d}"] for k in range(len(frames))]
        for atoms, d in zip(frames, data):  # the POSCAR round trip must keep atom order and labels
            assert d.z.tolist() == list(atoms.numbers), "atom order changed in the POSCAR round trip"
            assert np.allclose(d.y.numpy(), atoms.arrays["y_born_charges"].reshape(-1, 9), atol=1e-5)
        graphs[name] = data
    train_set, val_set = graphs["pool"], graphs["val"]
    if a.val_limit:
        val_set = val_set[: a.val_limit]
    n_val_atoms = sum(int(d.z.numel()) for d in val_set)
    _log(f"train {len(train_set)} crystals / {sum(int(d.z.numel()) for d in train_set)} atoms; "
         f"val {len(val_set)} crystals / {n_val_atoms} atoms; "
         f"mean neighbours {np.mean(np.concatenate([d.nbr_counts.numpy() for d in train_set])):.1f}")

    # their data module, with the whole pool as the training part (their seed-42 permutation, no shuffle)
    dm = graph_data_module(train_set, train_ratio=1.0, val_ratio=0.0, test_ratio=0.0, batch_size=a.batch_size)
    dm.setup(stage="fit")
    train_loader = dm.train_dataloader()
    train_loader.pin_memory = False
    val_loader = DataLoader(val_set, batch_size=a.eval_batch_size or a.batch_size)

    # ---- the authors' model, loss and optimiser ----
    if a.lr is not None:
        config.optim_params.lr = a.lr
    net, head = build_model(config)
    model = Model(representation=net, output=head, loss=config.losses_metrics.losses,
                  metric=config.losses_metrics.metrics, lr=config.optim_params.lr,
                  lr_decay=config.optim_params.lr_decay, lr_patience=config.optim_params.lr_patience)
    (optimizer,), (sched,) = model.configure_optimizers()
    scheduler = sched["scheduler"]
    n_params = sum(p.numel() for p in model.parameters())

    hp = {k: (v.__class__.__name__ if callable(v) and not isinstance(v, (int, float, str, bool)) else v)
          for k, v in dict(config.ETGNN).items()}
    hp.update({
        "config_file": str(cfg_path), "config_sections_dropped": dropped,
        "property": config.setup.property,
        "radius": config.dataset_params.radius,
        "max_num_nbr": config.dataset_params.max_num_nbr,
        "losses": [f"{type(d['metric']).__name__}*{d['loss_weight']}" for d in config.losses_metrics.losses],
        "optimizer": "AdamW", "lr": config.optim_params.lr, "lr_decay": config.optim_params.lr_decay,
        "lr_patience": config.optim_params.lr_patience, "scheduler": "ReduceLROnPlateau(training total loss, per epoch)",
        "batch_size": a.batch_size, "config_batch_size": config.dataset_params.batch_size,
        "n_parameters": int(n_params), "seed": a.seed,
    })
    _log(f"authors' model: {n_params} parameters; hyperparameters {json.dumps(hp)}")

    def evaluate():
        model.eval()
        err, n = 0.0, 0
        with torch.no_grad():
            for batch in val_loader:
                pred = model(batch)
                err += float((pred - batch.y).abs().sum())
                n += batch.y.numel()
        model.train()
        assert n == 9 * n_val_atoms
        return err / n

    budget = a.minutes * 60.0
    every = a.eval_every_min * 60.0
    curve, eval_s = [], 0.0

    def record(t_train):
        nonlocal eval_s
        t0 = time.perf_counter()
        mae = evaluate()
        eval_s += time.perf_counter() - t0
        curve.append([round(t_train, 2), mae if np.isfinite(mae) else None])  # null: NaN output (valid JSON)
        _log(f"t_train={t_train:7.1f} s  val BEC MAE = {mae:.4f} e  (eval {time.perf_counter() - t0:.1f} s, "
             f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB)")

    if not a.no_initial_eval:
        record(0.0)
    t_train, steps, epoch, next_eval, done = 0.0, 0, 0, every, False
    step_times, first_nonfinite, skipped = [], None, []
    model.train()
    while not done:
        epoch_losses = []
        for bi, batch in enumerate(train_loader):
            if t_train >= budget or (a.max_steps and steps >= a.max_steps):
                done = True
                break
            t0 = time.perf_counter()
            optimizer.zero_grad()
            loss = model.training_step(batch, bi)
            loss.backward()
            finite = bool(torch.isfinite(loss)) and all(
                bool(torch.isfinite(q.grad).all()) for q in model.parameters() if q.grad is not None)
            if finite or not a.skip_nonfinite:
                optimizer.step()
            else:
                skipped.append(steps + 1)
                _log(f"step {steps + 1}: non-finite loss or gradient, optimiser step skipped "
                     f"(batch {bi}, {int(batch.num_graphs)} crystals)")
            dt_step = time.perf_counter() - t0
            t_train += dt_step
            steps += 1
            step_times.append(dt_step)
            lval = float(loss.detach())
            if np.isfinite(lval) or not a.skip_nonfinite:
                epoch_losses.append(lval)
            if first_nonfinite is None and not np.isfinite(lval) and not a.skip_nonfinite:
                first_nonfinite = steps
            _log(f"epoch {epoch} step {steps}: loss {lval:.4f}  {dt_step:.1f} s/step  "
                 f"t_train {t_train:.0f}/{budget:.0f} s")
            if t_train >= next_eval and t_train < budget:
                record(t_train)
                while next_eval <= t_train:
                    next_eval += every
        else:
            scheduler.step(float(np.mean(epoch_losses)))  # Lightning: monitor training/total_loss, per epoch
            epoch += 1
            _log(f"epoch {epoch} done, mean training loss {np.mean(epoch_losses):.4f}, lr {optimizer.param_groups[0]['lr']:.2e}")
    if not curve or curve[-1][0] != round(t_train, 2):
        record(t_train)

    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    sec_step = float(np.median(step_times)) if step_times else float("nan")
    notes = (
        f"Authors' code from {repo} (commit {_commit(repo)}), run unmodified from its own modules; config "
        f"{cfg_path.name} (their BEC set-up, property=born, rank 2; sections {dropped} dropped because their "
        f"read_config rejects them). Graphs from their cif_parse (pymatgen, "
        f"radius {config.dataset_params.radius} A, at most {config.dataset_params.max_num_nbr} neighbours). "
        f"Trained with their Model.training_step/configure_optimizers in a plain loop (their pl.Trainer call is "
        f"incompatible with current Lightning), unshuffled loader as in their graph_data_module. Batch {a.batch_size} "
        f"instead of their {config.dataset_params.batch_size} (memory; lr {config.optim_params.lr:g}). torch_scatter/torch_sparse replaced "
        f"by pure-torch shims from {a.shims}. {a.threads} thread(s), torch {torch.__version__}. "
        f"{steps} steps, {epoch} full epochs, median {sec_step:.2f} s/step, training {t_train:.0f} s, "
        f"evaluation {eval_s:.0f} s (excluded from t), peak RSS {peak_gb:.2f} GB. Validation MAE over "
        f"{len(val_set)} crystals / {n_val_atoms} atoms x 9 components (e)"
        + (f" (--val-limit {a.val_limit}: smoke test, not the full validation set)." if a.val_limit else ".")
        + (f" Stopped by --max-steps {a.max_steps}." if a.max_steps else "")
        + (f" The training loss was not finite from step {first_nonfinite} on." if first_nonfinite else "")
        + (f" Steps with a non-finite loss or gradient skipped (--skip-nonfinite): {skipped}." if a.skip_nonfinite else "")
    )
    result = {
        "set": "phonondb",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "authors_commit": _commit(repo),
        "minutes": a.minutes,
        "threads": a.threads,
        "hyperparameters": hp,
        "notes": notes,
        "curves": [{"label": a.label, "val_curve": curve, "lr": config.optim_params.lr, "batch_size": a.batch_size,
                    "steps": steps, "first_nonfinite_step": first_nonfinite, "skipped_steps": skipped,
                    "notes": notes}],
    }
    out.mkdir(parents=True, exist_ok=True)
    if a.append and (out / "authors_etgnn.json").is_file():
        old = json.loads((out / "authors_etgnn.json").read_text())
        for c in old["curves"]:
            c.setdefault("notes", old["notes"])
        result["curves"] = old["curves"] + result["curves"]
    (out / "authors_etgnn.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Authors' ETGNN on phonondb (validation Born-charge MAE against training wall-clock)",
        "",
        f"Commit `{result['authors_commit']}`, {a.minutes:g} min budget, {a.threads} thread, {result['date']}.",
        "",
    ]
    for c in result["curves"]:
        md += [f"## {c['label']}", "", "| training time (s) | val BEC MAE (e) |", "| ---: | ---: |"]
        md += [f"| {t:.0f} | {'-' if m is None else f'{m:.4f}'} |" for t, m in c["val_curve"]] + ["", c.get("notes", notes), ""]
    md = md[:-1] + [""]
    (out / "authors_etgnn.md").write_text("\n".join(md))
    _log(f"wrote {out / 'authors_etgnn.json'} and {out / 'authors_etgnn.md'}")
    return result


if __name__ == "__main__":
    main()
