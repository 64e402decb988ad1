"""Posterior samples of a model's outputs: draws of the last-layer weights from the LLPR posterior
(or, for a deep ensemble, its members: :meth:`etgnn.uncertainty.Ensemble.deviations`).

Every output of a head is exactly linear in its last-layer weights (:mod:`etgnn.uncertainty.features`),

    T[row, c](theta + d) = T[row, c](theta) + sum_p J[row, c, p] d_p,

so a draw ``d ~ N(0, Sigma)`` from the posterior of the weights (:meth:`LastLayerPosterior.covariance`)
is one model of the posterior, and ``T + J d`` is its output, for every structure at once.  Such
samples keep every correlation: between the components of a row, between the atoms of a structure
and between the frames of a trajectory (the same draw applies to all of them).  They lie in the
model's function space, so each sample obeys what every model obeys: index symmetry, the
acoustic sum rule of a ``sum_rule`` head and the site symmetry (equivariance), to round-off; a
component the site symmetry forbids (zero features, :meth:`LastLayerPosterior.negligible`) stays
exactly the prediction's.  Targets are independent (one head each, one posterior each).

Not in the samples: the floor LLPR puts on the sigma of a structure with an element absent from
the training data (:meth:`etgnn.uncertainty.LLPR.std`); such structures get a warning.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._warnings import UnseenElementWarning, warn
from ..data import keys as K
from ..data.batch import collate, to_device
from .llpr import unseen_rows

__all__ = ["weight_samples", "posterior_samples", "output_covariance", "SampledPredictor", "describe_samples",
           "DEFAULT_SAMPLES"]

#: posterior samples drawn by default (``etgnn phonons --samples``): the std of a std is about
#: 1/sqrt(2 N), 12 % at 32
DEFAULT_SAMPLES = 32


def weight_samples(covariance: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` draws from ``N(0, covariance)``: (n, P) float64 on the CPU.

    Uses the eigendecomposition (not Cholesky), so a singular or zero covariance is fine (its
    draws are exactly 0).  Deterministic for a given ``seed``.
    """
    cov = covariance.detach().to("cpu", torch.float64)
    cov = 0.5 * (cov + cov.T)
    vals, vecs = torch.linalg.eigh(cov)
    root = vecs * vals.clamp(min=0.0).sqrt()  # cov = root @ root.T
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n), cov.shape[0], generator=gen, dtype=torch.float64)
    return z @ root.T


def _require_uncertainty(model, what: str | None = None):
    """``model.uncertainty``; with ``what``, it must be LLPR (``what`` names the use that needs it)."""
    from ..errors import EtgnnError

    unc = getattr(model, "uncertainty", None)
    if unc is None:
        raise EtgnnError("this model has no uncertainty: add it with `etgnn calibrate CHECKPOINT -o MODEL.pt` "
                         "(or train with training.uncertainty: llpr or training.ensemble: N)")
    if what is not None and unc.method != "llpr":
        raise EtgnnError(f"{what} needs the last-layer posterior of LLPR (etgnn calibrate); this model's "
                         f"uncertainty is a {unc.method}")
    return unc


def _require_llpr(model):
    return _require_uncertainty(model, "the output covariance")


def describe_samples(model, n_samples: int) -> str:
    """What the samples of :func:`posterior_samples` are, for messages: ``"32 posterior samples of the
    model (LLPR)"`` or ``"the 4 members of the deep ensemble"``."""
    unc = _require_uncertainty(model)
    if unc.method == "ensemble":
        return f"the {unc.size} members of the deep ensemble"
    return f"{n_samples} posterior samples of the model (LLPR)"


def _warn_unseen(llpr, model, batch) -> None:
    if unseen_rows(model, batch) is not None:
        warn("a structure holds an element absent from the training data: its posterior samples do not include "
             "the floor etgnn puts on its sigma (the last layer cannot know how wrong an untrained element is)",
             UnseenElementWarning)


def posterior_samples(model, frames, n_samples: int = DEFAULT_SAMPLES, *, seed: int = 0,
                      targets: list[str] | None = None, batch_size: int = 16):
    """The prediction and ``n_samples`` posterior samples of each target, for every frame.

    Args:
        model: an :class:`etgnn.ETGNN` with ``model.uncertainty`` (``etgnn calibrate``, or a deep
            ensemble, ``training.ensemble``).
        frames: ``ase.Atoms`` (a list; a trajectory's frames share each weight draw).
        n_samples: weight draws per target (LLPR; a deep ensemble's samples are its members,
            whatever ``n_samples``).
        seed: seed of the draws (target ``k`` of the model's LLPR uses ``seed + k``; unused by an
            ensemble).
        targets: targets to sample (default: every target of the uncertainty layer).
        batch_size: structures per forward pass.

    Returns:
        ``(predictions, samples)``: per frame ``{target: array}`` as :meth:`etgnn.ETGNN.predict`
        gives, and per frame ``{target: (n_samples, *shape)}`` float64 (training units).  With a
        zero posterior covariance every sample equals the prediction exactly.  A deep ensemble
        gives ``(N, *shape)``: the prediction (the members' mean) plus each member's deviation from
        it times the calibration scale, i.e. the members themselves when the scale is 1.
    """
    unc = _require_uncertainty(model)
    names = list(unc.targets) if targets is None else list(targets)
    missing = [n for n in names if n not in unc.targets]
    if missing:
        raise KeyError(f"no uncertainty for target(s) {', '.join(missing)}; it has {', '.join(unc.targets)}")
    if unc.method == "ensemble":
        deviations = lambda batch: unc.deviations(model, batch, names)  # noqa: E731
    else:
        order = list(unc.posteriors)
        draws = {n: weight_samples(unc.posteriors[n].covariance(), n_samples, seed + order.index(n)) for n in names}
        deviations = lambda batch: _llpr_deviations(unc, model, batch, draws)  # noqa: E731
    frames = list(frames)
    preds, samples = [], []
    for start in range(0, len(frames), max(1, int(batch_size))):
        chunk = frames[start:start + batch_size]
        graphs = [model.graph(a, where=f"structure {start + i}") for i, a in enumerate(chunk)]
        model._check_elements(graphs, [f"structure {start + i}" for i in range(len(chunk))])
        batch = to_device(collate(graphs, dtype=model.dtype), model.device)
        _warn_unseen(unc, model, batch)
        out, delta = deviations(batch)
        bounds = np.concatenate([[0], np.cumsum(batch[K.N_ATOMS].cpu().numpy())])
        arrays = {n: v.detach().cpu().double().numpy() for n, v in out.items()}
        delta = {n: d.cpu().numpy().reshape(d.shape[0], *arrays[n].shape) for n, d in delta.items()}
        for g in range(len(chunk)):
            target = model.targets
            preds.append({n: target[n].split(v, bounds, g) for n, v in arrays.items()})
            samples.append({n: preds[-1][n][None] + np.stack([target[n].split(d, bounds, g) for d in delta[n]])
                            for n in names})
    return preds, samples


def _llpr_deviations(llpr, model, batch, draws: dict[str, Tensor]):
    """``(model(batch), {target: (S, rows, C) float64 J d})`` for the weight draws ``d`` of each target."""
    out = model(batch)  # as ETGNN.predict_graphs (a gradient_of target needs autograd)
    jac = llpr.features(model, batch)
    delta = {}
    for n, dr in draws.items():
        post, j = llpr.posteriors[n], jac[n].to("cpu", torch.float64)
        j = j.masked_fill(post.negligible(j).unsqueeze(-1), 0.0)  # forbidden components: no spread
        delta[n] = torch.einsum("rcp,sp->src", j, dr)  # (S, rows, C)
    return out, delta


def output_covariance(model, atoms, target: str) -> np.ndarray:
    """Joint covariance of every output component of ``target`` for one structure.

    ``J Sigma J^T`` over the flattened prediction (row-major, e.g. ``(n_atoms * 9, n_atoms * 9)``
    for Born charges), float64: what linear propagation gives for any linear observable ``w . T``,
    ``var = w^T C w``.  Its diagonal is :meth:`etgnn.uncertainty.LLPR.std` squared (for elements
    seen in training).
    """
    llpr = _require_llpr(model)
    post = llpr.posteriors[target]
    batch = to_device(collate([model.graph(atoms)], dtype=model.dtype), model.device)
    j = llpr.features(model, batch)[target].to("cpu", torch.float64)
    j = j.masked_fill(post.negligible(j).unsqueeze(-1), 0.0).reshape(-1, post.n_features)
    return (j @ post.covariance() @ j.T).numpy()


class SampledPredictor:
    """Stands in for a model where code calls ``model.predict(frames, batch_size=...)`` (e.g.
    :func:`etgnn.observables.timeseries.predict_series`): every target of the uncertainty layer
    comes back with a leading axis of ``1 + n_samples``, the prediction first, then the posterior
    samples (a deep ensemble: ``1 + N``, its members).  The weight draws are the same on every call
    (fixed ``seed``), so a trajectory predicted chunk by chunk sees one model per sample throughout.
    """

    def __init__(self, model, n_samples: int = DEFAULT_SAMPLES, seed: int = 0):
        _require_uncertainty(model)
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.model, self.n_samples, self.seed = model, int(n_samples), int(seed)
        self.config = model.config

    def predict(self, frames, batch_size: int = 16, **_ignored) -> list[dict[str, np.ndarray]]:
        preds, samples = posterior_samples(self.model, list(frames), self.n_samples, seed=self.seed,
                                           batch_size=batch_size)
        return [{n: np.concatenate([p[n][None], s[n]]) for n in s} for p, s in zip(preds, samples)]
