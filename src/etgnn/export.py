"""``etgnn export``: a trained model as a self-contained ``torch.export`` artifact (``.pt2``).

The artifact needs only PyTorch (``torch.export.load``), not etgnn.  It predicts one structure
per call from its neighbour graph, which the caller builds (e.g. with vesin or ASE; see
``examples/run_exported.py``).

Inputs of ``program.module()(positions, numbers, cell, edge_index, shifts, triplet_a, triplet_b)``
(``n_atoms``, ``n_edges`` and ``n_triplets`` are dynamic):

=============  ======================  =====================================================
positions      (n_atoms, 3) float      Cartesian positions, Angstrom
numbers        (n_atoms,) int64        atomic numbers
cell           (3, 3) float            cell vectors as rows (ASE), Angstrom; zeros for a molecule
edge_index     (2, n_edges) int64      [centre i, neighbour j]: every ordered pair closer than
                                       ``cutoff`` (full list, periodic images separate edges)
shifts         (n_edges, 3) int64      image offsets S: r_ij = positions[j] + S @ cell - positions[i]
triplet_a/_b   (n_triplets,) int64     every ordered pair (a, b) of different edges with the same
                                       centre, both shorter than ``triplet_cutoff``
=============  ======================  =====================================================

Floats are in the model's dtype (``dtype`` in the metadata).  The output is a dict
``{target: tensor}``: per-atom targets (n_atoms, 3, ...), per-structure targets (3, ...), in the
units of the training data.  The metadata (JSON in the archive's extra file ``etgnn.json``;
read it with ``torch.export.load(path, extra_files={"etgnn.json": ""})``) gives the cutoffs,
dtype, targets (level, rank, unit) and the input order above.

Targets that are gradients (``gradient_of``, e.g. conservative forces ``-dE/dR``) are not outputs
of the program (``torch.export`` cannot trace a derivative inside it): the metadata lists them under
``gradients`` (``{"forces": {"of": "energy"}}``), and the caller takes them with autograd, which
runs through the loaded program: ``positions.requires_grad_()``, then
``forces = -torch.autograd.grad(out["energy"], positions)[0]`` (``examples/run_exported.py``).

The exported program is one pass over the whole structure (no chunking): its memory grows with the
structure like ``model.chunk_triplets: null``.  A deep ensemble (``training.ensemble``) exports the
mean of its members (the prediction), not their spread.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .data import keys as K
from .errors import DataError

__all__ = ["export_model", "ExportWrapper", "INPUT_NAMES", "add_parser"]

#: Positional inputs of the exported program, in order.
INPUT_NAMES = ("positions", "numbers", "cell", "edge_index", "shifts", "triplet_a", "triplet_b")


class ExportWrapper(nn.Module):
    """One structure in, ``{target: tensor}`` out, with plain tensor inputs (see the module doc).

    With ``members`` (the other models of a deep ensemble, registered here so their weights are
    the program's) the output is the mean of every member's, as the model's own prediction is."""

    def __init__(self, model, members=()):
        super().__init__()
        self.model = model
        self.members = nn.ModuleList(members)

    def forward(self, positions: Tensor, numbers: Tensor, cell: Tensor, edge_index: Tensor, shifts: Tensor,
                triplet_a: Tensor, triplet_b: Tensor) -> dict[str, Tensor]:
        n_atoms = positions.shape[0]
        batch = {
            K.POSITIONS: positions, K.NUMBERS: numbers, K.EDGE_INDEX: edge_index,
            K.EDGE_SHIFT: shifts.to(positions.dtype) @ cell, K.TRIPLET_A: triplet_a, K.TRIPLET_B: triplet_b,
            K.BATCH: torch.zeros(n_atoms, dtype=torch.int64, device=positions.device),
            K.N_ATOMS: torch.full((1,), n_atoms, dtype=torch.int64, device=positions.device),
        }
        out = self.model.forward_tensors(batch)  # gradient targets: -d/dR of an output (module doc)
        if len(self.members):
            outs = [out] + [m.forward_tensors(batch) for m in self.members]
            out = {name: torch.stack([o[name] for o in outs]).mean(0) for name in out}
        return {name: v if self.model.heads[name].level == "atom" else v[0] for name, v in out.items()}


def example_inputs(model) -> tuple[Tensor, ...]:
    """Inputs for tracing: a rattled 2x2x2 rock-salt cell (every edge and triplet kind present)."""
    from ase.build import bulk

    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=0)
    g = model.graph(atoms)
    # build_graph stores Cartesian shifts S @ cell; the program takes the integer offsets S
    shifts = torch.as_tensor(g[K.EDGE_SHIFT] @ np.linalg.inv(g[K.CELL])).round()
    dtype = model.dtype
    return (torch.as_tensor(g[K.POSITIONS], dtype=dtype), torch.as_tensor(g[K.NUMBERS]),
            torch.as_tensor(g[K.CELL], dtype=dtype), torch.as_tensor(g[K.EDGE_INDEX]),
            shifts.to(torch.int64), torch.as_tensor(g[K.TRIPLET_A]), torch.as_tensor(g[K.TRIPLET_B]))


def metadata(model, n_models: int = 1) -> dict:
    """What a user of the artifact needs besides the program: cutoffs, dtype, targets, inputs."""
    from ._version import __version__

    m = model.config.model
    return {
        "format": "etgnn-export-1", "etgnn_version": __version__, "torch_version": torch.__version__,
        "cutoff": m.cutoff, "triplet_cutoff": m.triplet_cutoff, "dtype": m.dtype, "inputs": list(INPUT_NAMES),
        "targets": {name: {"level": t.level, "rank": t.rank, "unit": t.unit, "key": t.key}
                    for name, t in model.config.targets.items() if t.gradient_of is None},
        "gradients": {name: {"of": t.gradient_of, "level": t.level, "rank": t.rank, "unit": t.unit, "key": t.key}
                      for name, t in model.config.targets.items() if t.gradient_of is not None},
        "ensemble": n_models,  # > 1: the outputs are the mean of that many models (a deep ensemble)
    }


def export_model(model, path) -> Path:
    """Export ``model`` (an :class:`etgnn.ETGNN`) to ``path`` (``.pt2``) with ``torch.export``."""
    import dataclasses

    from torch.export import Dim

    from .model import build_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # before the minute of tracing: a bad path fails at once
    # one pass (the chunked loop is data-dependent Python, which torch.export cannot trace)
    cfg = model.config
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, chunk_triplets=None, checkpoint="none"))
    members = []
    for source in [model, *model.ensemble_members()]:  # a deep ensemble: every member, the mean exported
        one_pass = build_model(cfg)
        one_pass.load_state_dict(source.state_dict())
        members.append(one_pass.cpu().eval())
    model = members[0]
    wrapper = ExportWrapper(model, members[1:]).eval()
    atoms, edges, trips = Dim("n_atoms", min=2), Dim("n_edges", min=2), Dim("n_triplets", min=2)
    shapes = ({0: atoms}, {0: atoms}, None, {1: edges}, {0: edges}, {0: trips}, {0: trips})
    with torch.no_grad():
        program = torch.export.export(wrapper, example_inputs(model), dynamic_shapes=shapes, strict=False)
    torch.export.save(program, path, extra_files={"etgnn.json": json.dumps(metadata(model, len(members)))})
    return path


# ------------------------------------------------------------------------------------- CLI
def add_parser(subparsers) -> None:
    """Register the ``export`` subcommand."""
    import argparse

    from ._paths import input_path

    p = subparsers.add_parser("export", help="write a model as a torch.export artifact (.pt2) for plain PyTorch",
                              description=__doc__.split("\n\n", 1)[1].split("Floats")[0].strip(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=input_path, help="best.ckpt / last.ckpt or a saved model")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt2", help="artifact to write (overwritten)")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from .model import load_model

    if not str(args.output).endswith(".pt2"):
        raise DataError(f"{args.output}: the artifact name must end in .pt2")
    path = export_model(load_model(args.checkpoint), args.output)
    print(f"wrote {path} (load with torch.export.load; inputs: {', '.join(INPUT_NAMES)})")
    return 0
