#!/usr/bin/env python
"""Predict with an exported etgnn model (``etgnn export CHECKPOINT -o model.pt2``) using only
PyTorch, ASE and vesin: etgnn need not be installed.

    python examples/run_exported.py model.pt2 structure.xyz

The program takes one structure's neighbour graph (inputs documented in ``docs/performance.md``
and in the artifact's ``etgnn.json``); this script builds it with vesin the way etgnn does.
"""

from __future__ import annotations

import json
import sys

import ase.io
import numpy as np
import torch
from vesin import NeighborList


def graph(atoms, cutoff: float, triplet_cutoff: float):
    """Edges (centre i, neighbour j, integer image offsets S) and triplets of ``atoms``."""
    periodic = bool(atoms.pbc.any() and atoms.cell.volume > 0)
    cell = atoms.cell[:] if periodic else np.zeros((3, 3))
    nl = NeighborList(cutoff=cutoff, full_list=True)
    i, j, s, d = nl.compute(atoms.positions, cell, atoms.pbc.tolist() if periodic else False, "ijSd")
    order = np.lexsort((d, i))  # by centre (any order works; sorted is faster)
    i, j, s, d = i[order], j[order], s[order], d[order]
    # triplets: ordered pairs of different edges with the same centre, both shorter than triplet_cutoff
    short = np.flatnonzero(d < triplet_cutoff)
    _, start, count = np.unique(i[short], return_index=True, return_counts=True)
    n_per = np.repeat(count, count)  # partners (itself included) of each short edge
    a = np.repeat(np.arange(short.size), n_per)
    offset = np.arange(a.size) - np.repeat(np.cumsum(n_per) - n_per, n_per)
    b = np.repeat(np.repeat(start, count), n_per) + offset
    keep = a != b
    a, b = short[a[keep]], short[b[keep]]
    return cell, np.stack([i, j]).astype(np.int64), s.astype(np.int64), a.astype(np.int64), b.astype(np.int64)


def main(model_path: str, structure_path: str) -> None:
    extra = {"etgnn.json": ""}
    program = torch.export.load(model_path, extra_files=extra)
    meta = json.loads(extra["etgnn.json"])
    dtype = getattr(torch, meta["dtype"])
    run = program.module()
    std_of = {out: name for name, out in meta.get("std", {}).items()}  # "bec_std" -> "bec" (a deep ensemble)
    if (meta.get("uncertainty") or {}).get("note"):  # an LLPR model: predictions only
        print(f"note: {meta['uncertainty']['note']}", file=sys.stderr)
    for k, atoms in enumerate(ase.io.iread(structure_path)):
        cell, edge_index, shifts, ta, tb = graph(atoms, meta["cutoff"], meta["triplet_cutoff"])
        inputs = (torch.tensor(atoms.positions, dtype=dtype), torch.tensor(atoms.numbers, dtype=torch.int64),
                  torch.tensor(cell, dtype=dtype), torch.from_numpy(edge_index), torch.from_numpy(shifts),
                  torch.from_numpy(ta), torch.from_numpy(tb))
        gradients = meta.get("gradients", {})  # targets that are -d(output)/dR, e.g. conservative forces
        with torch.set_grad_enabled(bool(gradients)):
            inputs[0].requires_grad_(bool(gradients))
            out = run(*inputs)
            for name, g in gradients.items():
                out[name] = -torch.autograd.grad(out[g["of"]], inputs[0], retain_graph=True)[0]
        meta["targets"].update(gradients)
        for name, value in out.items():
            value = value.detach()
            t = meta["targets"][std_of.get(name, name)]  # NAME_std: one standard deviation per component
            print(f"structure {k} {name} ({t['level']}, rank {t['rank']}, unit {t['unit'] or '-'}): "
                  f"shape {tuple(value.shape)}\n{np.array2string(value.numpy(), precision=4)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
