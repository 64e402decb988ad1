"""Cost of the complete expansion: the 0.1 expansion against the default, interleaved in one run.

Paper hyperparameters (hidden 128, 4 blocks, 128 triplet channels, 6 / 4 Angstrom), float32, one
thread, batches of 16 crystals of ``phonondb_bec_eps/train.xyz``, three heads: Born charges (rank
2, sum rule), eps (rank 2, ``ij=ji``) and a rank-3 tensor (``ijk=ikj``, where the mixed terms
act).  For each round and variant: CPU seconds (``time.process_time``, robust to other jobs on
the machine) of one training step (forward, backward, AdamW) and one inference forward, median
over rounds.  Results: ``benchmarks/results/bench_expansion_cost.{json,md}``.

    python benchmarks/bench_expansion_cost.py --data ../shared/data/phonondb_bec_eps/train.xyz --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import etgnn
from etgnn.data.batch import collate

VARIANTS = {"0.1 expansion": {"mixed": False, "four_body": False, "chiral": False}, "complete (default)": {}}


def build(options: dict) -> etgnn.ETGNN:
    targets = {"bec": {"key": "becs", "level": "atom", "rank": 2, "sum_rule": True, **options},
               "eps": {"key": "eps", "level": "structure", "rank": 2, "symmetry": "ij=ji", **options},
               "rank3": {"key": "r3", "level": "structure", "rank": 3, "symmetry": "ijk=ikj", **options}}
    return etgnn.build_model({"model": {"chunk_triplets": None}, "targets": targets})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/phonondb_bec_eps/train.xyz")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/bench_expansion_cost")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from ase.io import read

    frames = read(args.data, f":{16 * args.batches}")
    models = {name: build(opts) for name, opts in VARIANTS.items()}
    graphs = [models["0.1 expansion"].graph(a) for a in frames]
    batches = [collate(graphs[16 * k : 16 * (k + 1)]) for k in range(args.batches)]
    n_atoms = [int(b["_n_atoms"].sum()) for b in batches]
    optims = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    times = {name: {"train": [], "infer": []} for name in models}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for name, model in models.items():
            t_train = t_infer = 0.0
            for batch in batches:
                model.train()
                start = time.process_time()
                out = model(batch)
                loss = sum(v.square().mean() for v in out.values())
                optims[name].zero_grad()
                loss.backward()
                optims[name].step()
                t_train += time.process_time() - start
                model.eval()
                start = time.process_time()
                with torch.no_grad():
                    model(batch)
                t_infer += time.process_time() - start
            if round_:
                times[name]["train"].append(t_train / len(batches))
                times[name]["infer"].append(t_infer / len(batches))
    rows = []
    for name in models:
        tr, inf = statistics.median(times[name]["train"]), statistics.median(times[name]["infer"])
        rows.append({"variant": name, "train_cpu_s_per_step": tr, "infer_cpu_s_per_batch": inf,
                     "train_atoms_per_cpu_s": float(np.mean(n_atoms)) / tr, "infer_atoms_per_cpu_s": float(np.mean(n_atoms)) / inf,
                     "raw": times[name]})
    base = rows[0]
    lines = ["| variant | train CPU s / step | vs 0.1 | inference CPU s / batch | vs 0.1 |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['train_cpu_s_per_step']:.3f} | {r['train_cpu_s_per_step'] / base['train_cpu_s_per_step']:.2f}x "
                     f"| {r['infer_cpu_s_per_batch']:.3f} | {r['infer_cpu_s_per_batch'] / base['infer_cpu_s_per_batch']:.2f}x |")
    text = (f"Batches of 16 phonondb crystals ({np.mean(n_atoms):.0f} atoms on average), paper hyperparameters, one thread, "
            f"median over {args.rounds} interleaved rounds of {args.batches} batches; heads: BEC (rank 2), eps (rank 2), "
            "rank 3 (ijk=ikj).\n\n" + "\n".join(lines) + "\n")
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps({"n_atoms": n_atoms, "rows": rows}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
