"""The ETGNN model: invariant backbone + one tensor head per target, with a numpy-in/numpy-out API.

>>> import etgnn
>>> from ase.build import molecule
>>> model = etgnn.build_model({"model": {"hidden_channels": 16, "triplet_channels": 8, "num_blocks": 1},
...                            "targets": {"dipole": {"key": "mu", "level": "structure", "rank": 1}}})
>>> model.predict(molecule("H2O"))[0]["dipole"].shape
(3,)
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from torch import Tensor, nn

from ._version import __version__
from ._warnings import UnseenElementWarning, warn
from .config import Config, config_to_dict, load_config
from .data import keys as K
from .data.batch import collate, to_device
from .data.graph import build_graph
from .errors import DataError, EtgnnError
from .data.statistics import Statistics, TargetStatistics
from .nn.backbone import MAX_Z, Backbone
from .nn.chunking import chunked_atom_tensors
from .nn.geometry import edge_geometry
from .pretrained import read_model_file
from .targets import Target, build_targets

__all__ = ["ETGNN", "build_model", "load_model"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ETGNN(nn.Module):
    """Backbone plus one tensor head per target, built from a :class:`etgnn.config.Config` and
    (for a trained model) the training set's :class:`etgnn.data.statistics.Statistics`.

    ``forward(batch)`` maps a batch from :func:`etgnn.data.batch.collate` to
    ``{target: tensor}`` with per-atom targets (n_atoms, 3, ...) and per-structure targets
    (n_graphs, 3, ...), in the units of the training data.

    Attributes:
        targets: ``{name: Target}`` (:mod:`etgnn.targets`), each bound to its head.
        heads: the same heads as a ``ModuleDict``.
        baselines: constant predictors of the training data, the metrics' baselines; None if unknown.
    """

    def __init__(self, config: Config, statistics: Statistics | None = None):
        super().__init__()
        self.config = config
        m = config.model
        self.backbone = Backbone(
            cutoff=m.cutoff, triplet_cutoff=m.triplet_cutoff, hidden_channels=m.hidden_channels,
            triplet_channels=m.triplet_channels, num_blocks=m.num_blocks, int_emb_size=m.int_emb_size,
            basis_emb_size=m.basis_emb_size, num_radial=m.num_radial, num_spherical=m.num_spherical,
            envelope_exponent=m.envelope_exponent, activation=m.activation,
            cutoff_function=m.cutoff_function, radial_basis=m.radial_basis, smooth_triplets=m.smooth_triplets,
            checkpoint_blocks=m.checkpoint == "blocks",
        )
        stats = statistics or Statistics()
        self.targets: dict[str, Target] = build_targets(config)
        for name, target in self.targets.items():
            target.head = target.build_head(m, stats.targets.get(name))
        self.heads = nn.ModuleDict({name: t.head for name, t in self.targets.items()})
        self.backbone.counts.edges_per_atom.fill_(stats.edges_per_atom)
        self.backbone.counts.triplets_per_atom.fill_(stats.triplets_per_atom)
        #: elements present in the training data; all False for an untrained model, which then
        #: accepts any element
        self.register_buffer("elements_seen", torch.zeros(MAX_Z + 1, dtype=torch.bool))
        if stats.elements:
            self.elements_seen[torch.as_tensor(stats.elements, dtype=torch.long)] = True
        self.baselines: dict | None = stats.baselines
        #: calibrated per-component uncertainty (an :class:`etgnn.uncertainty.LLPR` or, for a deep
        #: ensemble whose mean is then the prediction, an :class:`etgnn.uncertainty.Ensemble`), or
        #: None; set by ``etgnn calibrate`` / ``training.uncertainty`` / ``training.ensemble``, kept
        #: in the model file
        self.uncertainty = None

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.config.model.dtype]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def statistics(self) -> Statistics:
        """The training-set statistics this model holds (read back from its buffers)."""
        counts = self.backbone.counts
        return Statistics(
            edges_per_atom=float(counts.edges_per_atom), triplets_per_atom=float(counts.triplets_per_atom),
            elements=torch.nonzero(self.elements_seen).flatten().tolist(),
            targets={name: TargetStatistics(float(h.normalizer.scale), h.normalizer.shifts())
                     for name, h in self.heads.items()},
            baselines=self.baselines)

    def geometry(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``batch`` with the edge geometry added (:func:`etgnn.nn.geometry.edge_geometry`)."""
        return edge_geometry(batch, self.backbone.cutoff_fn, self.backbone.triplet_cutoff_fn)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every target of a batch; with a deep ensemble (``model.uncertainty`` an
        :class:`etgnn.uncertainty.Ensemble`) the mean of its members' outputs."""
        if self.ensemble_members():
            return self.mean_outputs(self.member_outputs(batch))
        return self._forward_one(batch)

    def _forward_one(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every target of a batch from this model's own weights."""
        if not self.gradient_targets:
            return self._tensors(self.geometry(batch))
        # conservative targets (F = -dE/dR): the one place a gradient is taken.  With gradients
        # enabled (training) the forces keep their graph, so a loss on them trains the weights.
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            pos = batch[K.POSITIONS]
            pos = pos if pos.requires_grad else pos.detach().requires_grad_(True)
            batch = self.geometry({**batch, K.POSITIONS: pos})
            energies = sorted(set(self.gradient_targets.values()))
            out, grads = self._tensors(batch, grad_of=energies, wrt=pos, create_graph=keep_graph)
        for name, energy in self.gradient_targets.items():
            out[name] = self.heads[name](grads[energy])
        return out if keep_graph else {name: value.detach() for name, value in out.items()}

    def forward_tensors(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The targets with a head of their own (every target but the ``gradient_of`` ones) of a
        batch from :func:`etgnn.data.batch.collate`; differentiable in the positions.  With a deep
        ensemble, the mean of its members' (so a gradient of it is the mean of theirs)."""
        geometry = self.geometry(batch)  # the members share the config: one geometry for all
        outs = [m._tensors(geometry) for m in [self, *self.ensemble_members()]]
        return outs[0] if len(outs) == 1 else self.mean_outputs(outs)

    # ------------------------------------------------------------------ deep ensembles
    def ensemble_members(self) -> list["ETGNN"]:
        """The other members of this model's deep ensemble (``[]`` without one), moved to this
        model's device, dtype and train / eval mode first."""
        others = list(getattr(self.uncertainty, "members", None) or [])
        if others:
            p = next(self.parameters())
            for m in others:
                q = next(m.parameters())
                if q.device != p.device or q.dtype != p.dtype:
                    m.to(device=p.device, dtype=p.dtype)
                if m.training != self.training:
                    m.train(self.training)
        return others

    def member_outputs(self, batch: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """``[{target: tensor}]`` of every member of the ensemble, this model's own first (a model
        without an ensemble: its own outputs only)."""
        return [self._forward_one(batch)] + [m._forward_one(batch) for m in self.ensemble_members()]

    @staticmethod
    def mean_outputs(outs: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The mean over members of :meth:`member_outputs` (the ensemble's prediction)."""
        return {name: torch.stack([o[name] for o in outs]).mean(0) for name in outs[0]}

    def replica(self, state_dict: dict) -> "ETGNN":
        """A model of this one's config (no uncertainty) holding ``state_dict``: a member of a deep
        ensemble, on this model's device and dtype, in its train / eval mode."""
        with torch.random.fork_rng(devices=[]):
            other = type(self)(self.config)
        p = next(self.parameters())
        other = other.to(device=p.device, dtype=p.dtype)
        other.load_state_dict(state_dict)
        other.baselines = self.baselines
        return other.train(self.training)

    @property
    def gradient_targets(self) -> dict[str, str]:
        """``{target: energy target}`` of the targets that are ``-d(energy)/dR``."""
        return {name: t.config.gradient_of for name, t in self.targets.items() if t.config.gradient_of}

    def _tensors(self, batch: dict[str, Tensor], grad_of: Sequence[str] = (), wrt: Tensor | None = None,
                 create_graph: bool = False) -> tuple[dict[str, Tensor], dict[str, Tensor]] | dict[str, Tensor]:
        """Every tensor head on a batch with geometry; with ``grad_of`` also ``{energy: dE/d wrt}``.

        Large batches run chunk by chunk (:mod:`etgnn.nn.chunking`).  Without ``create_graph``
        (inference) each chunk's energy gradient is taken and its graph freed before the next
        chunk, so memory stays bounded with forces too.
        """
        heads = {name: head for name, head in self.heads.items() if name not in self.gradient_targets}
        chunk, ckpt = self.config.model.chunk_triplets, self.config.model.checkpoint == "chunks"
        ckpt = ckpt and torch.is_grad_enabled() and not grad_of
        grads = {}
        if chunk is not None and (batch[K.TRIPLET_A].shape[0] > chunk or ckpt):  # exact, bounded memory
            after_chunk = None
            if grad_of and not create_graph:
                grads = {e: torch.zeros_like(wrt) for e in grad_of}

                def after_chunk(raw: dict[str, Tensor]) -> dict[str, Tensor]:
                    for e in grad_of:  # E = scale * sum(raw) + constant shifts
                        grads[e] += _gradient(raw[e].sum(), wrt, retain_graph=True) * heads[e].scale.to(wrt.dtype)
                    return {name: value.detach() for name, value in raw.items()}

            budget = self.config.model.checkpoint_budget_gb
            raw = chunked_atom_tensors(self.backbone, heads, batch, chunk, checkpoint=ckpt, after_chunk=after_chunk,
                                       store_bytes=(budget or 0.0) * 1e9)
            out = {name: head(None, batch, raw=raw[name]) for name, head in heads.items()}
        else:
            feats = self.backbone(batch)
            out = {name: head(feats, batch) for name, head in heads.items()}
        if grad_of and not grads:
            for k, e in enumerate(grad_of):
                keep = create_graph or k < len(grad_of) - 1
                grads[e] = _gradient(out[e].sum(), wrt, create_graph=create_graph, retain_graph=keep)
        return (out, grads) if grad_of else out

    # ------------------------------------------------------------------ numpy API
    def graph(self, atoms: Atoms, where: str = "structure") -> dict[str, np.ndarray]:
        """Neighbour graph of ``atoms`` with this model's cutoffs."""
        m = self.config.model
        return build_graph(atoms, m.cutoff, m.triplet_cutoff, m.max_neighbors, where=where)

    def predict(self, structures: Atoms | Iterable[Atoms] | str | os.PathLike, batch_size: int = 32,
                progress: bool = False, uncertainty: bool = False) -> list[dict[str, np.ndarray]]:
        """Predict every target for one or many structures (see :class:`etgnn.predict.Predictor`).

        Args:
            structures: an ``ase.Atoms``, an iterable of them (a long trajectory is streamed in
                batches, the next batch's graphs built in a background thread), or the path of a
                structure file, read as training reads it (``etgnn:<path>`` for a shipped file).
            batch_size: structures per forward pass.
            progress: show a progress bar (only when stderr is a terminal).
            uncertainty: also return ``<target>_std``, one standard deviation per component with
                the target's shape (needs ``self.uncertainty``: ``etgnn calibrate``; see
                docs/uncertainty.md).

        Returns:
            one dict per structure, ``{target: array}``: per-atom targets (n_atoms, 3, ...),
            per-structure targets (3, ...), float64, in the units of the training data.
        """
        from .predict import Predictor

        return Predictor(self, batch_size=batch_size, progress=progress, uncertainty=uncertainty).predict(structures)

    @torch.no_grad()
    def predict_graphs(self, graphs: Sequence[dict[str, np.ndarray]],
                       where: Sequence[str] | None = None, uncertainty: bool = False) -> list[dict[str, np.ndarray]]:
        """Like :meth:`predict` for graphs already built by :meth:`graph`.

        ``where`` names each graph in messages (default ``"structure <k>"``, k its position);
        ``uncertainty`` adds ``<target>_std`` arrays (see :meth:`predict`).
        """
        where = list(where) if where is not None else [f"structure {k}" for k in range(len(graphs))]
        self._check_elements(graphs, where)
        batch = to_device(collate(graphs, dtype=self.dtype), self.device)
        n_atoms = batch[K.N_ATOMS].cpu().numpy()
        bounds = np.concatenate([[0], np.cumsum(n_atoms)])
        if uncertainty:
            if self.uncertainty is None:
                raise EtgnnError("this model has no uncertainty: add it with `etgnn calibrate CHECKPOINT -o "
                                 "MODEL.pt` (or train with training.uncertainty: llpr or training.ensemble: N)")
            out, std = self.uncertainty.predict(self, batch)
        else:
            out = self(batch)
        arrays = {name: value.detach().cpu().double().numpy() for name, value in out.items()}
        if uncertainty:
            arrays.update({f"{name}_std": value.cpu().numpy() for name, value in std.items()})
        split = []
        for g in range(len(graphs)):
            item = {}
            for name, arr in arrays.items():
                target = self.targets.get(name) or self.targets[name.removesuffix("_std")]  # NAME_std: as NAME
                item[name] = target.split(arr, bounds, g)
                if not np.isfinite(item[name]).all():
                    raise EtgnnError(f"{where[g]}: prediction of {name!r} is not finite")
            split.append(item)
        return split

    def _check_elements(self, graphs: Sequence[dict[str, np.ndarray]], where: Sequence[str]) -> None:
        """Warn (naming the file and structure) when a structure holds an element never trained on."""
        seen = self.elements_seen.cpu().numpy()
        if not seen.any():
            return
        for k, g in enumerate(graphs):
            unseen = np.unique(g[K.NUMBERS][~seen[g[K.NUMBERS]]])
            if unseen.size:
                from ase.data import chemical_symbols

                names = ", ".join(chemical_symbols[z] for z in unseen)
                warn(f"{where[k]} contains element(s) {names} absent from the training data: its predictions "
                     "are extrapolations", UnseenElementWarning)

    # ------------------------------------------------------------------ persistence
    def checkpoint(self) -> dict:
        """Everything needed to rebuild the model: resolved config, weights, versions."""
        return {
            "format_version": CHECKPOINT_FORMAT,
            "etgnn_version": __version__,
            "torch_version": torch.__version__,
            "config": config_to_dict(self.config),
            "state_dict": self.state_dict(),
            "baselines": self.baselines,
            **({"uncertainty": self.uncertainty.state_dict()} if self.uncertainty is not None else {}),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` atomically (temporary file + rename)."""
        save_atomic(self.checkpoint(), path)


def _gradient(y: Tensor, x: Tensor, create_graph: bool = False, retain_graph: bool = False) -> Tensor:
    """dy/dx of a scalar ``y``; zeros where ``y`` does not depend on ``x`` (e.g. an isolated atom)."""
    if not y.requires_grad:
        return torch.zeros_like(x)
    g, = torch.autograd.grad(y, x, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def save_atomic(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    buf = io.BytesIO()
    torch.save(obj, buf)
    with open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def build_model(config, statistics: Statistics | None = None) -> ETGNN:
    """Build a model from a config (dict, YAML path or :class:`Config`).

    Args:
        config: the configuration.
        statistics: the training set's :func:`etgnn.data.statistics.compute_statistics` (output
            scales and shifts, neighbour counts, elements, baselines); None for an untrained
            model (unit scales, no shifts, the default neighbour counts).

    Weights are initialised from ``model.seed``; the model's dtype is ``model.dtype``.
    """
    cfg = load_config(config)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(cfg.model.seed)
        model = ETGNN(cfg, statistics)
    finally:
        torch.random.set_rng_state(state)
    return model.to(_DTYPES[cfg.model.dtype])


#: Version of the model-file layout written by :meth:`ETGNN.checkpoint`: 1 is etgnn 0.1.0's (no
#: ``format_version`` entry), 2 adds the complete expansion and the smooth triplet stream, 3 keeps
#: the statistics once (each head's normaliser, the backbone's neighbour counts) instead of
#: copies of the neighbour counts in every head.
CHECKPOINT_FORMAT = 3


def _upgrade_state(state: dict, heads) -> dict:
    """A format-1/2 ``state_dict`` in the format-3 layout: ``heads.<t>.scale`` and
    ``.element_shift`` move into ``heads.<t>.normalizer``; the per-head ``edge_norm`` and
    ``triplet_norm`` (equal in every head, 1 / count) become ``backbone.counts``."""
    state = dict(state)
    counts = {}
    for name in heads:
        for old in ("scale", "element_shift"):
            key = f"heads.{name}.{old}"
            if key in state:
                state[f"heads.{name}.normalizer.{old}"] = state.pop(key)
        for old, new in (("edge_norm", "edges_per_atom"), ("triplet_norm", "triplets_per_atom")):
            key = f"heads.{name}.{old}"
            if key in state:
                counts.setdefault(new, 1.0 / state.pop(key).double())
    for new, value in counts.items():
        state.setdefault(f"backbone.counts.{new}", value)
    return state

#: Target options added after etgnn 0.1.0, with the value that reproduces a 0.1.0 model.
_ADDED_TARGET_OPTIONS = {"mixed": False, "chiral": False, "four_body": False}


def _upgrade_config(config: dict, path) -> dict:
    """A checkpoint's config dict with the options it predates set to their old behaviour.

    A model from etgnn 0.1.0 then predicts exactly what it did; it is discontinuous where an atom
    crosses ``triplet_cutoff`` (fixed since), which a warning says, with the remedy.
    """
    config = dict(config)
    config["targets"] = {name: {**_ADDED_TARGET_OPTIONS, **dict(t)} for name, t in config.get("targets", {}).items()}
    model = dict(config.get("model", {}))
    if "smooth_triplets" not in model:
        model["smooth_triplets"] = False
        from ._warnings import warn

        warn(f"{path} was written by etgnn 0.1.0: it loads and predicts as it did, but its predictions "
             "jump slightly when an atom crosses model.triplet_cutoff; retrain it (same config) for a "
             "model that is continuous there", UserWarning)
    config["model"] = model
    return config


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ETGNN:
    """Load a model written by :meth:`ETGNN.save`, a training checkpoint (``best.ckpt``), or a
    model shipped with etgnn by its name (``"dielectric-v1"``; ``etgnn models`` lists them)."""
    path, ckpt = read_model_file(path, map_location)
    version = ckpt.get("format_version", 1)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise DataError(f"{path} has model-file format {version!r}, newer than this etgnn {__version__} reads "
                        f"(format {CHECKPOINT_FORMAT}): upgrade etgnn (pip install -U etgnn) to load it")
    state = ckpt.get("model_state", ckpt.get("state_dict"))
    model = build_model(_upgrade_config(ckpt["config"], path) if version == 1 else ckpt["config"])
    state = _upgrade_state(state, model.heads) if version < 3 else dict(state)
    state.setdefault("elements_seen", model.elements_seen)  # files written before etgnn 0.1.0 final
    model.load_state_dict(state)
    model.baselines = ckpt.get("baselines")  # absent before etgnn stored them
    if ckpt.get("uncertainty") is not None:  # etgnn calibrate / training.uncertainty / .ensemble (docs/uncertainty.md)
        from .uncertainty import uncertainty_from_state_dict

        model.uncertainty = uncertainty_from_state_dict(ckpt["uncertainty"], model)
    return model.to(map_location)
