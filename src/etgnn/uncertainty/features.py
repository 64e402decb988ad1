"""Last-layer features of a tensor head: the gradient of every output component with respect to
the weights of the head's last linear layers.

A :class:`etgnn.nn.heads.TensorHead` builds its tensor as a sum over clusters of invariant
coefficients times fixed outer products of unit edge vectors; the coefficients come from three
small MLPs (``iso_mlp``, ``edge_mlp``, ``trip_mlp``) whose last layer is an ``nn.Linear``.
Everything after those layers (cutoffs, outer products, sums over edges and triplets, the
normaliser's scale and shift, the sum rule, the structure mean or sum, the index-symmetry
projection) is linear or constant in their weights, so with the backbone's features fixed

    T[row, c] = T0[row, c] + sum_p J[row, c, p] theta_p        (exactly, any rank)

with ``theta`` the last layers' weights and biases (``P`` numbers).  ``J`` are the
*last-layer features* of LLPR (Bigi, Chong, Ceriotti, Grasselli, "A prediction rigidity
formalism for low-cost uncertainties in trained neural networks", Mach. Learn.: Sci. Technol.
5, 045018 (2024)).  They are computed here by forward-mode differentiation (``torch.func.jvp``)
vectorised over the ``P`` unit tangents with ``torch.func.vmap``: one batched pass of the head,
no loop over atoms, edges or parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

__all__ = ["COEFFICIENT_MLPS", "last_layer_parameters", "n_last_layer", "last_layer_features"]

#: the coefficient MLPs of a tensor head whose last ``nn.Linear`` feeds the expansion linearly
COEFFICIENT_MLPS = ("iso_mlp", "edge_mlp", "trip_mlp")
#: bytes a chunk of tangents may take in the largest intermediate (sets the vmap chunk size)
CHUNK_BYTES = 2.5e8


def last_layer_parameters(head: nn.Module) -> dict[str, Tensor]:
    """``{name in head.state_dict(): parameter}`` of the last linear layers, in a fixed order.

    Raises:
        TypeError: a coefficient MLP whose last module is not an ``nn.Linear`` (the output would
            not be linear in its weights).
    """
    out = {}
    for attr in COEFFICIENT_MLPS:
        mlp = getattr(head, attr, None)
        if mlp is None:
            continue
        last = mlp[-1]
        if not isinstance(last, nn.Linear):
            raise TypeError(f"{type(head).__name__}.{attr} ends in {type(last).__name__}, not nn.Linear: the "
                            "output is not linear in its last layer and LLPR does not apply")
        for pname, p in last.named_parameters():
            out[f"{attr}.{len(mlp) - 1}.{pname}"] = p
    if not out:
        raise TypeError(f"{type(head).__name__} has none of the coefficient MLPs {COEFFICIENT_MLPS}")
    return out


def n_last_layer(head: nn.Module) -> int:
    """``P``: number of last-layer weights and biases of ``head``."""
    return sum(p.numel() for p in last_layer_parameters(head).values())


def last_layer_features(head: nn.Module, feats, batch: dict[str, Tensor], *, chunk_size: int | None = None) -> Tensor:
    """``J[row, c, p] = d T[row, c] / d theta_p`` of one head on one batch.

    Args:
        head: a :class:`etgnn.nn.heads.TensorHead`.
        feats: the backbone's output on ``batch`` (held fixed; computed without gradients).
        batch: a batch with geometry (:meth:`etgnn.model.ETGNN.geometry`).
        chunk_size: tangents per vectorised pass (default: as many as fit in :data:`CHUNK_BYTES`).

    Returns:
        (n_rows, 3**rank, P) in the model's dtype, data units per unit weight; ``n_rows`` is
        ``n_atoms`` for per-atom targets and ``n_graphs`` for structure targets.  Components a
        symmetry formula ties (``ij=ji``) have equal rows; a per-structure row is the mean or sum
        of its atoms' rows, as the prediction is.
    """
    params = {name: p.detach() for name, p in last_layer_parameters(head).items()}
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    theta = torch.cat([params[n].reshape(-1) for n in names])
    n_p = theta.numel()

    def output(flat: Tensor) -> Tensor:
        weights = {n: t.reshape(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        out = functional_call(head, weights, (feats, batch))
        return out.reshape(out.shape[0], -1)

    if chunk_size is None:
        from ..data import keys as K

        n_big = max(batch[K.TRIPLET_A].shape[0], batch[K.EDGE_INDEX].shape[1], 1)
        per_tangent = 4.0 * theta.element_size() * n_big * 3**head.rank
        chunk_size = int(max(1, min(n_p, CHUNK_BYTES // per_tangent)))
    tangents = torch.eye(n_p, dtype=theta.dtype, device=theta.device)
    with torch.no_grad():
        jac = vmap(lambda t: jvp(output, (theta,), (t,))[1], chunk_size=chunk_size)(tangents)
    return jac.permute(1, 2, 0)  # (n_rows, C, P)
