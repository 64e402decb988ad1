"""What to compute next: greedy selection of the pool structures whose labels would help most.

Each target's last layer is a Bayesian linear model on the features ``f`` (LLPR,
:mod:`etgnn.uncertainty.posterior`) with weight covariance ``S = (F^T F + lambda I)^-1`` in units
of the label noise ``alpha^2``.  The score of a structure is the summed posterior variance of all
its output components (every target, each in units of its own noise), ``sum_c f_c^T S f_c``:
how much its prediction is still unknown.  The greedy loop picks the structure with the largest
score, then conditions ``S`` on that structure's labels as if they had been computed (Woodbury:
``S <- S - S J^T (e I + J S J^T)^-1 J S``, a rank-m update for its ``m`` components, with
``e`` = :data:`LABEL_NOISE` the labels' variance relative to the model's calibrated error) and
updates every other structure's score by the same low-rank term.  A structure similar to one
already picked loses most of its variance (an exact duplicate keeps ``e a / (e + a)`` of each
eigenvalue ``a``, less than ``e``), so the picks stay diverse in the last-layer feature space.  This is the
greedy maximum-variance (uncertainty sampling with batch diversity) rule of Bayesian experimental
design; the labels themselves never enter, only where the features are.

Vectorised: the pool's features are stacked once per target, each pick costs one
``(rows x P) @ (P x m)`` product; the Python loop runs over the ``K`` picks only.

Structures holding elements absent from the training data are picked first: the last layer
cannot measure what the model does not know about an element it never saw.  Among them the pick
is a greedy cover of the unseen elements (each pick adds the most elements not yet covered, ties
broken by the largest score), so one structure per new element suffices before the variance
takes over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..data import keys as K
from ..data.batch import collate, to_device
from ..errors import ConfigError

__all__ = ["Selection", "greedy_select", "pool_features", "select_structures"]


@dataclass
class Selection:
    """Result of :func:`select_structures`.

    Attributes:
        indices: pool indices of the picks, in the order picked.
        scores: summed posterior variance of each pick when it was picked (units of the label
            noise alpha^2, summed over components and targets; ``inf`` for an unseen element).
        initial_scores: (n_pool,) the same before any pick.
        unseen: (n_pool,) bool, structures holding an element absent from the training data.
        targets: the targets whose posteriors were used.
    """

    indices: list[int]
    scores: list[float]
    initial_scores: np.ndarray
    unseen: np.ndarray
    targets: list[str] = field(default_factory=list)


def _stack(blocks, t: int) -> tuple[Tensor, Tensor]:
    mats = [torch.as_tensor(b[t], dtype=torch.float64).reshape(-1, torch.as_tensor(b[t]).shape[-1]) for b in blocks]
    owner = torch.repeat_interleave(torch.arange(len(mats)), torch.tensor([m.shape[0] for m in mats]))
    return torch.cat(mats), owner


#: variance of a label, relative to the calibrated noise alpha^2, assumed when a pick is
#: conditioned on: DFT labels are far more precise than the model's error, so a picked structure
#: becomes (almost) known and a duplicate of it keeps at most this much per component
LABEL_NOISE = 1e-2


def greedy_select(blocks, covariances, k: int, *, first=(), noise: float = LABEL_NOISE) -> tuple[list[int], list[float]]:
    """Greedy maximisation of the posterior variance with low-rank updates after each pick.

    Args:
        blocks: per structure, per target, its features ``(m, P_t)`` (one row per output
            component; ``m`` may be 0).
        covariances: per target, the prior weight covariance ``(P_t, P_t)`` in noise units
            (``(F^T F + lambda I)^-1``).
        k: picks (``1 <= k <= len(blocks)``).
        first: indices picked before any other (in this order; their score reported is ``inf``).
        noise: variance of a picked structure's labels in the covariances' units
            (:data:`LABEL_NOISE`); 1 is the Bayesian update with the calibrated noise.

    Returns:
        ``(picked, scores)``: indices in the order picked and each one's summed variance when picked.
    """
    return _greedy(blocks, covariances, k, first, noise)[:2]


def _greedy(blocks, covariances, k, first=(), noise: float = LABEL_NOISE):
    n = len(blocks)
    if not noise > 0:
        raise ValueError(f"label noise must be > 0, got {noise!r}")
    if not 1 <= k <= n:
        raise ConfigError(f"cannot pick {k} structures from a pool of {n}")
    stacked = [_stack(blocks, t) for t in range(len(covariances))]
    covs = [torch.as_tensor(c, dtype=torch.float64).clone() for c in covariances]
    variances = [((f @ s) * f).sum(-1).clamp(min=0.0) for (f, _), s in zip(stacked, covs)]

    def totals() -> np.ndarray:
        out = torch.zeros(n, dtype=torch.float64)
        for (_, owner), v in zip(stacked, variances):
            out.index_add_(0, owner, v)
        return out.numpy()

    initial = totals()
    picked, scores = [], []
    queue = [int(i) for i in first]
    available = np.ones(n, dtype=bool)
    while len(picked) < k:
        score = totals()
        if queue:
            best, value = queue.pop(0), float("inf")
        else:
            masked = np.where(available, score, -np.inf)
            best = int(np.argmax(masked))  # ties: the first in pool order (deterministic)
            value = float(score[best])
        picked.append(best)
        scores.append(value)
        available[best] = False
        for t, ((f, owner), s) in enumerate(zip(stacked, covs)):
            j = f[owner == best]
            if j.shape[0] == 0:
                continue
            b = s @ j.T  # (P, m)
            chol = torch.linalg.cholesky(noise * torch.eye(j.shape[0], dtype=torch.float64) + j @ b)
            w = torch.linalg.solve_triangular(chol, b.T, upper=False)  # (m, P): L^-1 J S
            covs[t] = s - w.T @ w
            a = torch.linalg.solve_triangular(chol, (f @ b).T, upper=False)  # (m, rows)
            variances[t] = (variances[t] - (a**2).sum(0)).clamp(min=0.0)
    return picked, scores, initial


def pool_features(model, frames, *, targets=None, batch_size: int = 8, progress: bool = False):
    """Per structure, per target, the last-layer features of its output components.

    Returns:
        ``(blocks, names, new_elements)``: ``blocks[i][t]`` (m, P_t) float64 with the components a
        symmetry forbids left out; ``names`` the targets; ``new_elements[i]`` the atomic numbers of
        structure ``i`` absent from the training data (a frozenset, empty when none).
    """
    from tqdm.auto import tqdm

    llpr = model.uncertainty
    from ..errors import EtgnnError

    if llpr is None:
        raise EtgnnError("this model has no uncertainty: add it with `etgnn calibrate CHECKPOINT -o MODEL.pt` "
                         "(or train with training.uncertainty: llpr)")
    if llpr.method != "llpr":
        raise EtgnnError(f"selection needs the last-layer posterior of LLPR (its Woodbury updates); this model's "
                         f"uncertainty is a {llpr.method}: add LLPR to it with `etgnn calibrate MODEL -o MODEL_LLPR.pt`")
    names = list(llpr.posteriors) if targets is None else list(targets)
    for n in names:
        if n not in llpr.posteriors:
            raise ConfigError(f"no uncertainty for target {n!r}; the model has it for {', '.join(llpr.posteriors)}")
    frames = list(frames)
    seen = model.elements_seen.cpu()
    blocks, new_elements = [], []
    for start in tqdm(range(0, len(frames), batch_size), desc="features", unit="batch", disable=None if progress else True):
        chunk = frames[start:start + batch_size]
        graphs = [model.graph(a, where=f"pool structure {start + i}") for i, a in enumerate(chunk)]
        batch = to_device(collate(graphs, dtype=model.dtype), model.device)
        jac = llpr.features(model, batch)
        n_atoms = batch[K.N_ATOMS].cpu().numpy()
        bounds = np.concatenate([[0], np.cumsum(n_atoms)])
        numbers = batch[K.NUMBERS].cpu()
        for g in range(len(chunk)):
            z = numbers[bounds[g]:bounds[g + 1]]
            new_elements.append(frozenset(int(x) for x in z[~seen[z]].tolist()) if bool(seen.any()) else frozenset())
            per = []
            for n in names:
                post, j = llpr.posteriors[n], jac[n].to("cpu", torch.float64)
                rows = j[bounds[g]:bounds[g + 1]] if model.heads[n].level == "atom" else j[g:g + 1]
                rows = rows.reshape(-1, post.n_features)
                per.append(rows[~post.negligible(rows)])
            blocks.append(per)
    return blocks, names, new_elements


def select_structures(model, frames, k: int, *, targets=None, batch_size: int = 8, noise: float = LABEL_NOISE,
                      progress: bool = False) -> Selection:
    """Pick ``k`` structures of ``frames`` whose labels would help ``model`` most (module docstring).

    Raises:
        ConfigError: ``k`` < 1 or larger than the pool; a target without uncertainty.
        EtgnnError: the model has no uncertainty (``etgnn calibrate``).
    """
    frames = list(frames)
    if not 1 <= int(k) <= len(frames):
        raise ConfigError(f"-n {k}: the pool holds {len(frames)} structure(s); choose 1 <= n <= {len(frames)}")
    blocks, names, new_elements = pool_features(model, frames, targets=targets, batch_size=batch_size,
                                                progress=progress)
    covs = []
    for n in names:
        post = model.uncertainty.posteriors[n]
        covs.append(post.covariance() / post.alpha2)  # (F^T F + lambda I)^-1: noise units
    initial = _greedy(blocks, covs, 1, (), noise)[2]
    first = _cover(new_elements, initial)[: int(k)]
    picked, scores, initial = _greedy(blocks, covs, int(k), first, noise)
    return Selection(picked, scores, initial, np.array([bool(e) for e in new_elements]), names)


def _cover(new_elements: list[frozenset], score: np.ndarray) -> list[int]:
    """Greedy set cover of the unseen elements: each pick adds the most not yet covered (ties: the
    largest score, then pool order)."""
    covered, order = set(), []
    while True:
        gains = np.array([len(e - covered) if i not in order else 0 for i, e in enumerate(new_elements)])
        if gains.size == 0 or gains.max() == 0:
            return order
        best = int(np.lexsort((-np.asarray(score), -gains))[0])
        order.append(best)
        covered |= new_elements[best]
