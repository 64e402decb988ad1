"""``etgnn select``: the pool structures whose labels would help a model most (active learning)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .._paths import input_path

__all__ = ["add_parser"]

_HELP = """\
Pick K structures of POOL whose labels (a DFT calculation each) would help MODEL most, and write
them to an extxyz file with their index in the pool (info pool_index), the order picked
(selection_rank) and their score (selection_score, selection_score_initial). MODEL must carry
uncertainty (etgnn calibrate).

Score: the summed posterior variance of a structure's output components under the model's
last-layer posterior (LLPR), every target in units of its calibrated noise. Picks are greedy: the
largest score first, then the posterior is conditioned on that structure's labels as if computed
(a low-rank update of the last-layer covariance) and every score is updated, so a structure like
one already picked loses its score and the picks stay diverse. Structures with elements the
model never saw come first (a greedy cover: one per new element). Deterministic. See docs/uncertainty.md.

example:
  etgnn select phonondb_uq.pt candidates.extxyz -n 100 -o to_compute.extxyz
"""


def add_parser(subparsers) -> None:
    """Register the ``select`` subcommand."""
    p = subparsers.add_parser("select", help="choose the structures to compute next (largest uncertainty, diverse)",
                              description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", type=input_path, help="model with uncertainty (etgnn calibrate)")
    p.add_argument("pool", metavar="POOL", type=input_path, help="candidate structures (any format etgnn reads)")
    p.add_argument("-n", "--number", type=int, required=True, metavar="K", help="structures to pick")
    p.add_argument("-o", "--output", required=True, metavar="CHOSEN.extxyz", help="extxyz file to write (overwritten)")
    p.add_argument("--targets", nargs="+", metavar="NAME", help="targets whose uncertainty counts (default: all)")
    p.add_argument("--format", default=None, help="format of POOL (default: detected)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="structures per batch (default 8)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="device of the model (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal only)")
    p.set_defaults(func=_select)


def _select(args) -> int:
    import ase.io

    from ..data.readers import read_structures
    from ..errors import ConfigError
    from ..model import load_model
    from ..predict import check_output_path
    from ..uncertainty.selection import select_structures
    from .ddp import resolve_device

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    out = check_output_path(args.output)
    model = load_model(args.model, map_location=resolve_device(args.device))
    if model.uncertainty is None:
        raise ConfigError(f"{args.model} has no uncertainty: add it with `etgnn calibrate CHECKPOINT -o MODEL.pt`")
    pool = read_structures(args.pool, args.format)
    if not 1 <= args.number <= len(pool):
        raise ConfigError(f"-n {args.number}: the pool {args.pool} holds {len(pool)} structure(s); "
                          f"choose 1 <= n <= {len(pool)}")
    result = select_structures(model, pool, args.number, targets=args.targets, batch_size=args.batch_size,
                               progress=not args.no_progress)
    chosen = []
    print(f"{len(result.indices)} of {len(pool)} structures picked from {args.pool} (targets "
          f"{', '.join(result.targets)}; score: summed posterior variance, units of the calibrated noise)")
    print(f"{'rank':>4}  {'pool index':>10}  {'formula':<16}  {'atoms':>5}  {'score':>12}  {'before picks':>12}")
    for rank, (i, score) in enumerate(zip(result.indices, result.scores)):
        atoms = pool[i].copy()
        atoms.info.update({"pool_index": int(i), "selection_rank": rank + 1,
                           "selection_score": float(score), "selection_score_initial": float(result.initial_scores[i])})
        chosen.append(atoms)
        shown = "unseen elem." if not np.isfinite(score) else f"{score:12.4g}"
        print(f"{rank + 1:4d}  {i:10d}  {atoms.get_chemical_formula(mode='metal'):<16}  {len(atoms):5d}  {shown:>12}  "
              f"{result.initial_scores[i]:12.4g}")
    out.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(out, chosen, format="extxyz")
    print(f"chosen structures written to {out}")
    return 0
