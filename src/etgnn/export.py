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
structure like ``model.chunk_triplets: null``.

Uncertainty (``docs/uncertainty.md``).  A deep ensemble (``training.ensemble``) exports every
member: each output is the members' mean (the prediction), and every target with a head of its own
gets ``NAME_std`` too, exactly as :class:`etgnn.uncertainty.Ensemble` computes it
(:func:`etgnn.uncertainty.ensemble.calibrated_std`): the members' standard deviation (ddof=1) per
component times the target's calibrated scale, exactly 0 where the spread is below
``negligible_std`` of the target's training scale (a component the site symmetry forbids), raised
to at least the training scale in a structure holding an element absent from the training data
(the floor; the program cannot warn: ``elements_seen`` in the metadata).  The metadata's ``std``
maps each target to its output (``{"bec": "bec_std"}``) and ``uncertainty`` records the method,
members, scales, calibration and threshold.  Gradient targets (conservative forces) get no
``NAME_std`` from the program: each member's gradient would be needed (``not_exported``).

An LLPR model (``etgnn calibrate``, ``training.uncertainty: llpr``) exports its predictions only:
its sigma needs forward-mode derivatives (``torch.func.jvp`` under ``vmap``) that ``torch.export``
cannot trace.  :func:`export_model` (and so ``etgnn export``) warns, and the metadata records
``"std": {}`` and why; ``NAME_std`` then needs etgnn (``model.predict(..., uncertainty=True)``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .data import keys as K
from .errors import DataError

__all__ = ["export_model", "ExportWrapper", "INPUT_NAMES", "LLPR_NOT_EXPORTED", "program_inputs", "add_parser"]

#: Positional inputs of the exported program, in order.
INPUT_NAMES = ("positions", "numbers", "cell", "edge_index", "shifts", "triplet_a", "triplet_b")
#: What :func:`export_model` warns (and the metadata notes) for a model whose uncertainty is LLPR.
LLPR_NOT_EXPORTED = ("this model's uncertainty is LLPR, whose standard deviations need forward-mode derivatives "
                     "(torch.func.jvp under vmap) that torch.export cannot trace: the exported program gives the "
                     "predictions only, without NAME_std; for those use etgnn (model.predict(..., uncertainty=True) "
                     "or etgnn predict --uncertainty)")


class ExportWrapper(nn.Module):
    """One structure in, ``{target: tensor}`` out, with plain tensor inputs (see the module doc).

    With ``members`` (the other models of a deep ensemble, registered here so their weights are
    the program's) the output is the mean of every member's, as the model's own prediction is, and
    ``std`` (``{target: (calibration scale, training scale)}``) adds ``NAME_std`` for those targets
    as :class:`etgnn.uncertainty.Ensemble` computes it; ``floor``: raise it in a structure with an
    element ``model.elements_seen`` lacks."""

    def __init__(self, model, members=(), std: dict[str, tuple[float, float]] | None = None, floor: bool = False):
        super().__init__()
        self.model = model
        self.members = nn.ModuleList(members)
        self.std = dict(std or {}) if len(self.members) else {}
        self.floor = floor

    def forward(self, positions: Tensor, numbers: Tensor, cell: Tensor, edge_index: Tensor, shifts: Tensor,
                triplet_a: Tensor, triplet_b: Tensor) -> dict[str, Tensor]:
        from .uncertainty.ensemble import calibrated_std
        from .uncertainty.llpr import raise_to_floor

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
            unseen = (~self.model.elements_seen[numbers]).any() if self.floor else None  # one structure: all rows
            for name, (scale, head_scale) in self.std.items():  # in float64, as Ensemble does
                sigma = calibrated_std(torch.stack([o[name] for o in outs]).to(torch.float64), scale, head_scale)
                if unseen is not None:
                    sigma = raise_to_floor(sigma, unseen, head_scale)
                out[f"{name}_std"] = sigma.to(positions.dtype)
        level = {name: self.model.heads[name].level for name in self.model.heads}
        level.update({f"{name}_std": level[name] for name in self.std})
        return {name: v if level[name] == "atom" else v[0] for name, v in out.items()}


def program_inputs(model, atoms) -> tuple[Tensor, ...]:
    """The program's inputs (:data:`INPUT_NAMES`) for ``atoms``, built with etgnn's own graph, in
    the model's dtype (a molecule: zero cell and shifts)."""
    g = model.graph(atoms)
    cell = g[K.CELL]
    # build_graph stores Cartesian shifts S @ cell; the program takes the integer offsets S
    shifts = np.rint(g[K.EDGE_SHIFT] @ np.linalg.inv(cell)) if cell.any() else np.zeros_like(g[K.EDGE_SHIFT])
    dtype = model.dtype
    return (torch.as_tensor(g[K.POSITIONS], dtype=dtype), torch.as_tensor(g[K.NUMBERS]),
            torch.as_tensor(cell, dtype=dtype), torch.as_tensor(g[K.EDGE_INDEX]),
            torch.as_tensor(shifts, dtype=torch.int64), torch.as_tensor(g[K.TRIPLET_A]),
            torch.as_tensor(g[K.TRIPLET_B]))


def example_inputs(model) -> tuple[Tensor, ...]:
    """Inputs for tracing: a rattled 2x2x2 rock-salt cell (every edge and triplet kind present)."""
    from ase.build import bulk

    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=0)
    return program_inputs(model, atoms)


def uncertainty_plan(model) -> tuple[dict[str, tuple[float, float]], dict | None]:
    """``({target: (calibration scale, training scale)}, metadata entry)`` of the ``NAME_std``
    outputs the program of ``model`` gets (see the module doc); warns for LLPR."""
    from ._warnings import warn
    from .uncertainty import LLPR, Ensemble
    from .uncertainty.ensemble import NEGLIGIBLE_STD

    unc = model.uncertainty
    if isinstance(unc, LLPR):
        warn(LLPR_NOT_EXPORTED)
        return {}, {"method": "llpr", "note": LLPR_NOT_EXPORTED}
    if not isinstance(unc, Ensemble):
        return {}, None
    names = [n for n in unc.targets if n not in model.gradient_targets]
    std = {n: (unc.scales[n], float(model.heads[n].scale)) for n in names}
    seen = torch.nonzero(model.elements_seen).flatten().tolist()
    return std, {
        "method": "ensemble", "members": unc.size, "ddof": 1, "scales": {n: unc.scales[n] for n in names},
        "calibration": {n: unc.calibration.get(n, {}).get("method") for n in names},  # None: scale 1, uncalibrated
        "negligible_std": NEGLIGIBLE_STD, "training_scale": {n: std[n][1] for n in names},
        "unseen_element_floor": bool(seen), "elements_seen": seen,
        "not_exported": {n: "a gradient target: its std needs every member's gradient (etgnn's predict gives it)"
                         for n in unc.targets if n in model.gradient_targets},
    }


def metadata(model, n_models: int = 1, std=(), uncertainty: dict | None = None) -> dict:
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
        "std": {name: f"{name}_std" for name in std},  # outputs NAME_std (a deep ensemble)
        "uncertainty": uncertainty,  # how NAME_std is computed, or why there is none (module doc)
    }


def export_model(model, path) -> Path:
    """Export ``model`` (an :class:`etgnn.ETGNN`) to ``path`` (``.pt2``) with ``torch.export``; a deep
    ensemble with ``NAME_std`` outputs, an LLPR model with a warning that they are missing (module doc)."""
    import dataclasses

    from torch.export import Dim

    from .model import build_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # before the minute of tracing: a bad path fails at once
    std, uncertainty = uncertainty_plan(model)
    # one pass (the chunked loop is data-dependent Python, which torch.export cannot trace)
    cfg = model.config
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, chunk_triplets=None, checkpoint="none"))
    members = []
    for source in [model, *model.ensemble_members()]:  # a deep ensemble: every member, the mean exported
        one_pass = build_model(cfg)
        one_pass.load_state_dict(source.state_dict())
        members.append(one_pass.cpu().eval())
    model = members[0]
    floor = bool(uncertainty and uncertainty.get("unseen_element_floor"))
    wrapper = ExportWrapper(model, members[1:], std, floor=floor).eval()
    atoms, edges, trips = Dim("n_atoms", min=2), Dim("n_edges", min=2), Dim("n_triplets", min=2)
    shapes = ({0: atoms}, {0: atoms}, None, {1: edges}, {0: edges}, {0: trips}, {0: trips})
    with torch.no_grad():
        program = torch.export.export(wrapper, example_inputs(model), dynamic_shapes=shapes, strict=False)
    meta = metadata(model, len(members), std, uncertainty)
    torch.export.save(program, path, extra_files={"etgnn.json": json.dumps(meta)})
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
