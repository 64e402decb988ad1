"""One :class:`Target` per configured quantity: everything etgnn knows about it, in one place.

A target is built once from its :class:`etgnn.config.TargetConfig` and owns

- its label I/O: :meth:`Target.read` (a structure -> label array, the one reader used for
  training, validation, evaluation and ``--keep-labels``) and :meth:`Target.write` (a prediction
  -> fields of a structure, read back by :meth:`Target.read` as the same array);
- its head: :meth:`Target.build_head` makes the :class:`etgnn.nn.heads.TensorHead` with the
  target's terms, its index symmetry (parsed once, here) and its normaliser
  (:class:`etgnn.nn.normalize.ScaleShift`, from :class:`etgnn.data.statistics.TargetStatistics`);
- its loss: :meth:`Target.loss`, every penalty included; :func:`total_loss` sums the targets and
  is the one loss of training and validation alike;
- its metrics: :meth:`Target.metrics` (labelled rows only, next to the training baseline).

Training, validation, evaluation, prediction and the calculator iterate over
``model.targets`` (``{name: Target}``).

>>> from etgnn.config import TargetConfig
>>> t = Target("bec", TargetConfig(key="born_charges", level="atom", rank=2, sum_rule=True, unit="e"))
>>> t
Target('bec': key 'born_charges', atom rank 2, sum_rule, loss euclidean, unit e)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from ase import Atoms
from torch import Tensor

from ..config import Config, ModelConfig, TargetConfig
from ..data import keys as K
from ..data.labels import LabelSpec, extract_label, obeys_sum_rule
from ..nn.heads import TensorHead
from ..nn.response import NegativeGradient
from ..tensors import parse_symmetry
from .losses import LOSSES, labelled_mask, sum_rule_penalty
from .metrics import target_metrics

__all__ = ["Target", "build_targets", "total_loss"]


class Target:
    """One configured quantity (see the module docstring).

    Args:
        name: the target's name (its key in ``config.targets`` and in predictions).
        config: its :class:`etgnn.config.TargetConfig`.

    Attributes:
        head: the :class:`etgnn.nn.heads.TensorHead` of the model that owns this target (None
            for a target used for data only).
    """

    def __init__(self, name: str, config: TargetConfig):
        self.name, self.config = name, config
        self.key, self.level, self.rank, self.unit = config.key, config.level, config.rank, config.unit
        self.permutations = parse_symmetry(config.symmetry, config.rank)  # validated once
        self.label_spec = LabelSpec.from_target(config)
        self.loss_fn = LOSSES[config.loss]
        self.head = None

    def __repr__(self) -> str:
        c = self.config
        flags = "".join([f", -d({c.gradient_of})/dR" if c.gradient_of else "",
                         ", sum_rule" if c.sum_rule else "",
                         f", sum_rule_weight {c.sum_rule_weight:g}" if c.sum_rule_weight else "",
                         f", symmetry {c.symmetry}" if c.symmetry else "",
                         f", {c.reduce} over atoms" if c.level == "structure" and c.reduce != "mean" else ""])
        weight = f", weight {c.weight:g}" if c.weight != 1.0 else ""
        unit = f", unit {c.unit}" if c.unit else ""
        return f"Target({self.name!r}: key {self.key!r}, {self.level} rank {self.rank}{flags}, loss {c.loss}{weight}{unit})"

    @property
    def obeys_sum_rule(self) -> bool:
        """Per-atom rank-2 target held to the acoustic sum rule (exactly or by a penalty)."""
        return obeys_sum_rule(self.config)

    def shape(self, n_atoms: int) -> tuple[int, ...]:
        """Shape of one structure's label: (n_atoms, 3, ...) per atom, (3, ...) per structure."""
        return self.label_spec.shape(n_atoms)

    # ------------------------------------------------------------------ label I/O
    def read(self, atoms: Atoms, source: str = "<memory>", index: int = 0) -> np.ndarray:
        """The label of one structure (:func:`etgnn.data.labels.extract_label`), float64.

        Raises:
            MissingLabel: ``atoms`` has no field ``key`` (the message names file, structure, field).
            DataError: the field has the wrong shape or non-finite labelled entries.
        """
        return extract_label(atoms, self.label_spec, source=source, index=index)

    def write(self, atoms: Atoms, value: np.ndarray) -> None:
        """Store a prediction in ``atoms`` so that :meth:`read` with ``key = name`` gives it back.

        A per-atom target of rank M becomes ``atoms.arrays[name]`` (n_atoms, 3**M) row-major
        ((n_atoms,) for M = 0); a per-structure target ``atoms.info[name]``, 3**M numbers
        row-major (a float for M = 0).
        """
        if self.level == "atom":
            flat = np.asarray(value, dtype=float).reshape(len(atoms), -1)
            atoms.new_array(self.name, flat[:, 0] if flat.shape[1] == 1 else flat)
        else:
            atoms.info[self.name] = float(value) if np.ndim(value) == 0 else np.asarray(value, dtype=float).reshape(-1)

    def split(self, value: np.ndarray, bounds: np.ndarray, g: int) -> np.ndarray:
        """Structure ``g``'s rows of a batched prediction (``bounds``: cumulative atom counts)."""
        return value[bounds[g] : bounds[g + 1]] if self.level == "atom" else value[g]

    # ------------------------------------------------------------------ head
    def build_head(self, model: ModelConfig, statistics=None):
        """The :class:`etgnn.nn.heads.TensorHead` of this target (a
        :class:`etgnn.nn.response.NegativeGradient` for a ``gradient_of`` target).

        Args:
            model: the model settings (widths, activation).
            statistics: this target's :class:`etgnn.data.statistics.TargetStatistics`, or None
                (unit scale, no shift: an untrained model).
        """
        c = self.config
        if c.gradient_of is not None:  # -dE/dR, taken by ETGNN.forward
            return NegativeGradient(c.gradient_of, scale=statistics.scale if statistics is not None else 1.0)
        return TensorHead(
            rank=c.rank, level=c.level, reduce=c.reduce, hidden_channels=model.hidden_channels,
            triplet_channels=model.triplet_channels, activation=model.activation, isotropic=c.isotropic,
            two_body=c.two_body, three_body=c.three_body, symmetry=c.symmetry, sum_rule=c.sum_rule,
            mixed=c.mixed, chiral=c.chiral, four_body=c.four_body,
            scale=statistics.scale if statistics is not None else 1.0,
            shift=statistics.shift if statistics is not None else None,
        )

    # ------------------------------------------------------------------ loss and metrics
    def loss(self, pred: Tensor, batch: Mapping[str, Tensor], scale: Tensor,
             reduction: str = "mean") -> tuple[Tensor, dict[str, Tensor]]:
        """This target's weighted loss on normalised values, every penalty included.

        Prediction and label are divided by ``scale`` (so targets in different units mix); rows
        whose label is NaN in every component are unlabelled and left out.  With
        ``sum_rule_weight > 0`` the weight times :func:`etgnn.targets.losses.sum_rule_penalty` of the
        normalised prediction is added.

        Args:
            pred: (n, 3, ..., 3) the model's prediction.
            batch: holds the label ``batch[name]`` of the same shape, and the batch index.
            scale: scalar tensor, the normaliser's scale (data units).
            reduction: ``"mean"`` or ``"sum"`` over rows.

        Returns:
            (weighted loss, ``{name: loss, name_sum_rule: penalty}`` unweighted parts).
        """
        scale = scale.to(pred.dtype)
        label = batch[self.name]
        keep = labelled_mask(label)
        p, y = (pred, label) if bool(keep.all()) else (pred[keep], label[keep])
        if y.shape[0]:
            value = self.loss_fn(p / scale, y / scale, reduction=reduction)
        else:  # no labelled row in this batch: zero, still connected to every output (DDP)
            value = pred.sum() * 0.0
        parts = {self.name: value}
        weighted = self.config.weight * value
        if self.config.sum_rule_weight > 0:
            penalty = sum_rule_penalty(pred / scale, batch[K.BATCH], int(batch[K.N_ATOMS].shape[0]), reduction=reduction)
            parts[f"{self.name}_sum_rule"] = penalty
            weighted = weighted + self.config.sum_rule_weight * penalty
        return weighted, parts

    def metrics(self, pred: np.ndarray, ref: np.ndarray, numbers: np.ndarray | None = None,
                baseline: Mapping | None = None) -> dict:
        """Metrics in data units over the labelled rows (:func:`etgnn.targets.metrics.target_metrics`)."""
        return target_metrics(pred, ref, self.level, self.rank, numbers=numbers, baseline=baseline, name=self.name)


def build_targets(config: Config | Mapping[str, TargetConfig]) -> dict[str, Target]:
    """``{name: Target}`` of a config (or of a ``{name: TargetConfig}`` mapping), in config order."""
    targets = config.targets if isinstance(config, Config) else config
    return {name: t if isinstance(t, Target) else Target(name, t) for name, t in targets.items()}


def total_loss(outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor], targets: Mapping,
               scales: Mapping[str, Tensor] | None = None, reduction: str = "mean") -> tuple[Tensor, dict[str, Tensor]]:
    """The one loss of training and validation: the sum over targets of :meth:`Target.loss`.

    Args:
        outputs: ``{target: (n, 3, ..., 3)}`` model predictions.
        batch: a batch holding the labels.
        targets: ``{name: Target}`` (e.g. ``model.targets``) or ``{name: TargetConfig}``.
        scales: ``{name: scalar tensor}`` normalisation scales; default each target's head's.
        reduction: ``"mean"`` or ``"sum"`` over rows, per target.

    Returns:
        (weighted total, ``{target: unweighted loss, target_sum_rule: penalty}``), scalars.
    """
    total, parts = None, {}
    for name, target in build_targets(targets).items():
        scale = scales[name] if scales is not None else target.head.scale
        weighted, part = target.loss(outputs[name], batch, scale, reduction=reduction)
        parts.update(part)
        total = weighted if total is None else total + weighted
    if total is None:
        raise ValueError("total_loss needs at least one target")
    return total, parts
