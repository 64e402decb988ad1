"""LLPR for every target of a model: a layer over a trained model, not part of it.

:class:`LLPR` holds one :class:`etgnn.uncertainty.posterior.LastLayerPosterior` per target with
a head of its own (``gradient_of`` targets such as conservative forces get none).  It is fitted
by one pass over the training data (``F^T F``) and one over the validation data (``lambda`` and
``alpha``; :class:`etgnn.uncertainty.posterior.Calibrator`), travels in the model file under ``"uncertainty"``
(:meth:`state_dict`) and gives per-component standard deviations with the prediction's shape::

    llpr = LLPR.fit(model, train_set, val_set)      # GraphDatasets with labels
    model.uncertainty = llpr
    model.predict(atoms, uncertainty=True)[0]["born_charges_std"]

A structure holding an element absent from the training data gets, in every row, at least the
target's training spread per component (the normaliser's scale: RMS of the labels after the
isotropic shift; a component the site symmetry forbids stays 0): the model knows nothing about
that element beyond it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._warnings import UnseenElementWarning, warn
from ..data import keys as K
from ..data.batch import to_device
from ..targets.losses import labelled_mask
from .features import last_layer_features, n_last_layer
from .posterior import DEFAULT_GRID, LastLayerPosterior

__all__ = ["LLPR", "supported_targets", "unseen_rows", "floor_unseen", "raise_to_floor", "warn_unseen_std", "FORMAT"]

#: version of :meth:`LLPR.state_dict`'s layout
FORMAT = 1


def supported_targets(model) -> list[str]:
    """Targets with a head of their own (LLPR applies); ``gradient_of`` targets are left out."""
    return [name for name in model.heads if name not in model.gradient_targets]


def _loader(model, dataset, batch_size):
    from ..data.dataset import make_loader

    return make_loader(dataset, model.config, shuffle=False, batch_size=batch_size)


def unseen_rows(model, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor] | None:
    """``(atom rows, structure rows)`` bool masks of the structures of ``batch`` holding an element
    absent from the model's training data (``None`` when there is none, or the model has no record)."""
    seen = model.elements_seen
    if not bool(seen.any()):
        return None
    owner, n_graphs = batch[K.BATCH], batch[K.N_ATOMS].shape[0]
    unseen_atom = ~seen[batch[K.NUMBERS]]
    if not bool(unseen_atom.any()):
        return None
    graphs = torch.zeros(n_graphs, dtype=torch.bool, device=owner.device).index_fill_(0, owner[unseen_atom], True)
    return graphs[owner], graphs


def warn_unseen_std(model, batch: dict[str, Tensor]) -> None:
    """Warn that the standard deviations of structures with unseen elements are raised (naming them)."""
    from ase.data import chemical_symbols

    z = torch.unique(batch[K.NUMBERS][~model.elements_seen[batch[K.NUMBERS]]]).tolist()
    warn(f"element(s) {', '.join(chemical_symbols[int(k)] for k in z)} absent from the training data: the "
         "standard deviations of those structures are raised to at least each target's training spread",
         UnseenElementWarning)


def floor_unseen(sigma: Tensor, head, unseen: tuple[Tensor, Tensor] | None) -> Tensor:
    """``sigma`` (n_rows, C) with the rows of structures holding an unseen element raised to at least
    the head's training spread (its normaliser's scale); a component with sigma 0 (forbidden by
    the site symmetry) stays 0."""
    if unseen is None:
        return sigma
    return raise_to_floor(sigma, unseen[0] if head.level == "atom" else unseen[1], float(head.scale))


def raise_to_floor(sigma: Tensor, rows: Tensor, floor: float) -> Tensor:
    """``sigma`` (n_rows, ...) with the rows where ``rows`` is True (a bool per row, or one 0-dim
    bool for all of them) raised to at least ``floor`` per component; a component with sigma 0
    (forbidden by the site symmetry) stays 0.  Tensor operations only, no data-dependent shape:
    the exported program of a deep ensemble runs it too (:mod:`etgnn.export`)."""
    rows = rows.reshape(rows.shape + (1,) * (sigma.dim() - rows.dim()))
    return torch.where(rows & (sigma > 0), sigma.clamp(min=floor), sigma)


class LLPR:
    """Last-layer prediction rigidity of every supported target of a model.

    Args:
        posteriors: ``{target: LastLayerPosterior}``, calibrated.

    Reference: Bigi, Chong, Ceriotti, Grasselli, Mach. Learn.: Sci. Technol. 5, 045018 (2024).
    """

    method = "llpr"

    def __init__(self, posteriors: dict[str, LastLayerPosterior]):
        self.posteriors = dict(posteriors)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: P={p.n_features}, alpha={math.sqrt(p.alpha2) if p.alpha2 else float('nan'):.3g}"
                          for n, p in self.posteriors.items())
        return f"LLPR({parts})"

    @property
    def targets(self) -> list[str]:
        return list(self.posteriors)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, model, train, val, *, batch_size: int | None = None, grid=DEFAULT_GRID,
            method: str = "coverage2", progress: bool = False) -> "LLPR":
        """One pass over ``train`` (F^T F), one over ``val`` (calibration).

        Args:
            model: an :class:`etgnn.model.ETGNN` (its weights are not changed).
            train, val: :class:`etgnn.data.dataset.GraphDataset` with labels (the model's
                training and validation parts); unlabelled rows are skipped.
            batch_size: structures per batch (default ``training.batch_size``).
            grid: regularisers tried, relative to the mean eigenvalue of F^T F.
            method: calibration, one of :data:`etgnn.uncertainty.posterior.METHODS`.
            progress: progress bars (on a terminal only).

        Raises:
            ValueError: the model has no supported target, or a target has no labelled rows.
        """
        from tqdm.auto import tqdm

        names = supported_targets(model)
        if not names:
            raise ValueError("the model has no target with a head of its own: LLPR has nothing to do")
        post = {n: LastLayerPosterior(n_last_layer(model.heads[n])) for n in names}
        llpr = cls(post)
        for batch in tqdm(_loader(model, train, batch_size), desc="LLPR train", unit="batch",
                          disable=None if progress else True):
            batch = to_device(batch, model.device)
            jac, _ = llpr._features(model, batch)
            for n in names:
                rows = labelled_mask(batch[n])
                post[n].add(jac[n][rows].reshape(-1, post[n].n_features))
        for n in names:
            if post[n].n_components == 0:
                raise ValueError(f"target {n!r} has no labelled rows in the training data")
        cal = {n: post[n].calibrator(grid, method) for n in names}
        for batch in tqdm(_loader(model, val, batch_size), desc="LLPR calibrate", unit="batch",
                          disable=None if progress else True):
            batch = to_device(batch, model.device)
            jac, out = llpr._features(model, batch, predict=True)
            for n in names:
                rows = labelled_mask(batch[n])
                err = (out[n] - batch[n])[rows]
                cal[n].add(jac[n][rows], err.reshape(err.shape[0], -1))
        for n in names:
            cal[n].finish()
        return llpr

    # ------------------------------------------------------------------ features and sigma
    @torch.no_grad()
    def _features(self, model, batch: dict[str, Tensor], predict: bool = False):
        """``({target: J (n_rows, C, P)}, {target: prediction} or None)`` of a collated batch."""
        was_training = model.training
        model.eval()
        try:
            batch = model.geometry(batch)
            feats = model.backbone(batch)
            jac = {n: last_layer_features(model.heads[n], feats, batch) for n in self.posteriors}
            out = {n: model.heads[n](feats, batch) for n in self.posteriors} if predict else None
        finally:
            model.train(was_training)
        return jac, out

    def features(self, model, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{target: J}`` (n_rows, 3**rank, P) of a collated batch (:func:`last_layer_features`)."""
        return self._features(model, batch)[0]

    def _unseen_rows(self, model, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor] | None:
        return unseen_rows(model, batch)

    def std(self, model, batch: dict[str, Tensor], *, covariance: bool = False) -> dict[str, Tensor]:
        """One standard deviation per output component, shaped like the prediction.

        Args:
            model: the model this LLPR was fitted for.
            batch: a collated batch (:func:`etgnn.data.batch.collate`), on the model's device.
            covariance: return ``{target: (n_rows, 3**rank, 3**rank)}`` covariances of the
                components of each row instead (float64).

        Returns:
            ``{target: (n_rows, 3, ..., 3)}`` float64, data units; exactly 0 for a component the
            site symmetry forbids; rows of structures holding an element absent from the training
            data are raised to at least the target's training spread (but forbidden components
            stay 0), and a warning names the elements.
        """
        jac = self.features(model, batch)
        unseen = unseen_rows(model, batch)
        if unseen is not None:
            warn_unseen_std(model, batch)
        out = {}
        for name, post in self.posteriors.items():
            head = model.heads[name]
            j = jac[name]
            if covariance:
                cov = post.component_covariance(j)
                if unseen is not None:
                    rows = unseen[0] if head.level == "atom" else unseen[1]
                    allowed = torch.diagonal(cov[rows], dim1=-2, dim2=-1) > 0  # a forbidden component stays 0
                    cov[rows] = cov[rows] + torch.diag_embed(allowed * float(head.scale) ** 2)
                out[name] = cov
                continue
            sigma = floor_unseen(post.variance(j).sqrt(), head, unseen)
            out[name] = sigma.reshape(sigma.shape[0], *(3,) * head.rank)
        return out

    def predict(self, model, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(model(batch), self.std(model, batch))``: the prediction and its standard deviations
        (the interface :meth:`etgnn.ETGNN.predict_graphs` uses for every uncertainty layer)."""
        return model(batch), self.std(model, batch)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """What a model file keeps under ``"uncertainty"``."""
        return {"method": self.method, "format": FORMAT,
                "targets": {n: p.state_dict() for n, p in self.posteriors.items()}}

    @classmethod
    def from_state_dict(cls, state: dict, model=None) -> "LLPR":
        """Inverse of :meth:`state_dict`; with ``model``, checks that the sizes still match.

        Raises:
            ValueError: an unknown method or format, or a target whose head has another size.
        """
        if state.get("method") != cls.method or state.get("format", 0) > FORMAT:
            raise ValueError(f"unknown uncertainty entry (method {state.get('method')!r}, format "
                             f"{state.get('format')!r}); this etgnn reads LLPR format <= {FORMAT}")
        post = {n: LastLayerPosterior.from_state_dict(s) for n, s in state["targets"].items()}
        if model is not None:
            for n, p in post.items():
                if n not in model.heads or n_last_layer(model.heads[n]) != p.n_features:
                    raise ValueError(f"uncertainty of target {n!r} does not fit this model's head")
        return cls(post)
