"""Active learning on phonondb (issue 26, item 5): ``etgnn select`` against random picks.

Start from ``--initial`` random crystals of the pool, train a model for ``--minutes``, fit LLPR
(``etgnn calibrate``'s function), then add ``--add`` crystals per round, either chosen by
:func:`etgnn.uncertainty.selection.select_structures` (largest posterior variance, kept diverse)
or at random, and train again from scratch with the same budget; held-out test MAE per round for
both.  The test crystals (``--test-fraction`` of the file, seed 0) are never in the pool.

    python benchmarks/active_learning_phonondb.py --initial 100 --add 100 --rounds 4 --minutes 12
    python benchmarks/active_learning_phonondb.py --smoke      # tiny end-to-end check (minutes)

Writes ``active_learning_phonondb.json`` / ``.md`` / ``.png`` (test MAE against training crystals).
The issue's goal: selection reaches the error of 400 random crystals with at most 250.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench  # noqa: E402
import numpy as np
import torch

DATA = Path("/work/shared/data/phonondb_bec_eps/train.xyz")
TARGETS = {"born_charges": {"key": "becs", "level": "atom", "rank": 2, "sum_rule": True, "unit": "e"},
           "epsilon": {"key": "eps", "level": "structure", "rank": 2, "reduce": "mean", "symmetry": "ij=ji"}}


def config(args, train_file: Path, test_file: Path, run_dir: Path) -> dict:
    return {
        "model": {"hidden_channels": args.hidden, "triplet_channels": args.hidden, "num_blocks": args.blocks, "seed": 0},
        "targets": TARGETS,
        "data": {"train": str(train_file), "test": str(test_file), "split": [0.85, 0.15, 0.0], "split_seed": 0,
                 "cache_dir": None, "num_workers": 0},
        "training": {"batch_size": 16, "lr": 2e-3, "lr_schedule": "cosine", "min_lr": 1e-5, "warmup_epochs": 1,
                     "max_epochs": args.epochs, "max_time": args.minutes, "early_stopping_patience": 1000,
                     "progress": False, "seed": 0},
        "run_dir": str(run_dir),
    }


def train_round(args, frames, test_file: Path, tag: str):
    """Train on ``frames`` (15 % of them for validation), fit LLPR; (model, test metrics)."""
    import ase.io

    from etgnn.config import load_config
    from etgnn.data.dataset import make_splits
    from etgnn.model import load_model
    from etgnn.train.calibrate import fit_uncertainty
    from etgnn.train.trainer import train

    work = args.work / tag
    work.mkdir(parents=True, exist_ok=True)
    ase.io.write(work / "train.xyz", frames, format="extxyz")
    cfg = load_config(config(args, work / "train.xyz", test_file, work / "run"))
    result = train(cfg)
    model = load_model(work / "run" / "best.ckpt")
    fit_uncertainty(model, make_splits(cfg, progress=False))
    return model, result.metrics.get("test", {})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--initial", type=int, default=100)
    p.add_argument("--add", type=int, default=100)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--minutes", type=float, default=12.0, help="training budget per round (max_time)")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--max-structures", type=int, default=None, help="use only the first N crystals of --data")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/etgnn_active_learning"))
    p.add_argument("--out", type=Path, default=_bench.RESULTS)
    p.add_argument("--smoke", action="store_true", help="tiny settings: 40 crystals, 8 + 4, 1 round, 2 epochs")
    args = p.parse_args(argv)
    if args.smoke:
        args.initial, args.add, args.rounds, args.minutes, args.epochs = 8, 4, 1, 0.5, 2
        args.hidden, args.blocks, args.max_structures = 8, 1, args.max_structures or 40
    torch.set_num_threads(args.threads)
    meta = _bench.machine(threads=args.threads)
    meta["command"] = ("python benchmarks/active_learning_phonondb.py "
                       + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))

    import ase.io

    from etgnn.uncertainty.selection import select_structures

    frames = ase.io.read(args.data, ":" if args.max_structures is None else f":{args.max_structures}")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(frames))
    n_test = max(1, int(round(args.test_fraction * len(frames))))
    test, pool = [frames[i] for i in order[:n_test]], [frames[i] for i in order[n_test:]]
    need = args.initial + args.rounds * args.add
    if need > len(pool):
        raise SystemExit(f"{need} training crystals needed, the pool holds {len(pool)}")
    args.work.mkdir(parents=True, exist_ok=True)
    test_file = args.work / "test.xyz"
    ase.io.write(test_file, test, format="extxyz")
    start = [int(i) for i in rng.choice(len(pool), args.initial, replace=False)]
    chosen = {"selected": list(start), "random": list(start)}
    rows = []
    models = {}
    for rnd in range(args.rounds + 1):
        for how in ("selected", "random") if rnd else ("selected",):
            with _bench.Timer() as t:
                model, metrics = train_round(args, [pool[i] for i in chosen[how]], test_file, f"{how}_{rnd}")
            models[how] = model
            rows.append({"round": rnd, "strategy": how, "n_train": len(chosen[how]), "wall_s": t.wall_s,
                         **{f"{n}_mae": m.get("mae") for n, m in metrics.items()}})
            print(rows[-1], flush=True)
        if rnd == 0:
            models["random"] = models["selected"]
            rows.append({**rows[-1], "strategy": "random"})
        if rnd == args.rounds:
            break
        rest = [i for i in range(len(pool)) if i not in set(chosen["selected"])]
        picked = select_structures(models["selected"], [pool[i] for i in rest], args.add).indices
        chosen["selected"] += [rest[i] for i in picked]
        rest = [i for i in range(len(pool)) if i not in set(chosen["random"])]
        chosen["random"] += [int(i) for i in rng.choice(rest, args.add, replace=False)]

    args.out.mkdir(parents=True, exist_ok=True)
    names = [k for k in rows[0] if k.endswith("_mae")]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), constrained_layout=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        for how in ("selected", "random"):
            r = [x for x in rows if x["strategy"] == how]
            ax.plot([x["n_train"] for x in r], [x[name] for x in r], "o-", label=how)
        ax.set_xlabel("training crystals")
        ax.set_ylabel(f"test {name.replace('_', ' ')}")
        ax.legend()
    fig.savefig(args.out / "active_learning_phonondb.png", dpi=110)
    plt.close(fig)
    md = ["# Active learning on phonondb: etgnn select against random picks", "", f"Command: `{meta['command']}`", "",
          _bench.header_line(meta), "", f"{len(test)} held-out test crystals; every round trains a new model from scratch for {args.epochs} epochs "
          f"(cosine anneal; {args.minutes:g} min only as a guard), {args.hidden} channels, {args.blocks} blocks; "
          "one seed per point (the spread between seeds is not measured).", "",
          "| round | strategy | training crystals | " + " | ".join(f"test {n}" for n in names) + " |",
          "|---|---|---|" + "---|" * len(names)]
    md += [f"| {r['round']} | {r['strategy']} | {r['n_train']} | " + " | ".join(f"{r[n]:.4g}" for n in names) + " |"
           for r in rows]
    _bench.write_results(args.out, "active_learning_phonondb", {"meta": meta, "rows": rows}, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
