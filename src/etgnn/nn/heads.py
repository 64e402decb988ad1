"""Tensor heads: the edge-based tensor expansion of ETGNN.

A rank-``M`` tensor on atom ``i`` is

    T_i = scale * [ sum_n s_n(i) I_n                                  (zero-body, isotropic)
                    + w2 * sum_a c_a f(r_a) e_a^(x)M                   (two-body, edges a of i)
                    + w3 * sum_(a,b) sum_p c_ab,p g(r_a) g(r_b) e_p1 (x) ... (x) e_pM ]  (three-body)
          + sum_n shift_n(Z_i) I_n

with invariant coefficients ``s, c`` from the backbone, unit edge vectors ``e`` pointing from atom
``i`` to its neighbours, smooth cutoffs ``f`` (edges) and ``g`` (triplet edges), isotropic tensors
``I_n`` (products of Kronecker deltas) and three-body index patterns ``p`` from
:func:`etgnn.tensors.index_patterns`.  Any weights give an exactly O(3)-equivariant result that
respects each atom's site symmetry.  A structure's tensor is the mean (intensive) or sum
(extensive) over its atoms.  Optional exact constraints: index symmetry (projection onto the
symmetric subspace) and the sum rule (subtract the structure mean from per-atom tensors).

Reference: ETGNN, Zhong et al., "Edge-based Tensor prediction via graph neural networks".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..tensors import index_patterns, isotropic_tensors, outer_power, outer_product, symmetrize
from .backbone import MAX_Z, BackboneOutput
from .basis import make_activation
from .scatter import scatter_mean, scatter_sum

__all__ = ["TensorHead", "Geometry"]


class Geometry(dict):
    """Per-batch geometric quantities shared by all heads.

    Keys: ``unit`` (n_edges, 3), ``centre`` (n_edges,), ``fcut`` (n_edges,), ``fcut_trip`` (n_edges,),
    ``ta``/``tb`` (n_triplets,), ``numbers`` (n_atoms,), ``batch`` (n_atoms,), ``n_graphs`` (int).
    """


def _mlp(n_in: int, n_out: int, activation: str) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_in), make_activation(activation), nn.Linear(n_in, n_out))


class TensorHead(nn.Module):
    """Edge-expansion head for one target.

    Args:
        rank: tensor rank M (0 = scalar).
        level: ``"atom"`` (returns (n_atoms, 3, ...)) or ``"structure"`` (returns (n_graphs, 3, ...)).
        reduce: ``"mean"`` or ``"sum"`` over atoms for structure targets.
        hidden_channels, triplet_channels: widths of the backbone's edge/atom and triplet features.
        activation: activation of the coefficient MLPs.
        isotropic, two_body, three_body: which terms of the expansion to include.
        symmetry: index-symmetry formula (e.g. ``"ij=ji"``) enforced exactly, or None.
        sum_rule: per-atom tensors of each structure sum exactly to zero.
    """

    def __init__(self, rank: int, level: str = "structure", reduce: str = "mean", hidden_channels: int = 128,
                 triplet_channels: int = 128, activation: str = "elu", isotropic: bool = True,
                 two_body: bool = True, three_body: bool = True, symmetry: str | None = None,
                 sum_rule: bool = False):
        super().__init__()
        self.rank, self.level, self.reduce = rank, level, reduce
        self.symmetry, self.sum_rule = symmetry, sum_rule
        iso = isotropic_tensors(rank, dtype=torch.float32) if (isotropic or rank == 0) else torch.zeros(0, *(3,) * rank)
        self.register_buffer("iso_basis", iso.reshape(iso.shape[0], 3**rank))
        self.n_iso = iso.shape[0]
        self.patterns = index_patterns(rank) if three_body else []
        self.iso_mlp = _mlp(hidden_channels, self.n_iso, activation) if self.n_iso else None
        self.edge_mlp = _mlp(hidden_channels, 1, activation) if two_body else None
        self.trip_mlp = _mlp(triplet_channels, len(self.patterns), activation) if self.patterns else None
        # normalisation, set from training data (see etgnn.train): output scale, per-element
        # isotropic shift, and 1 / (mean edges or triplets per atom) for the sums
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("element_shift", torch.zeros(MAX_Z + 1, max(self.n_iso, 1)))
        self.register_buffer("edge_norm", torch.tensor(1.0 / 32.0))
        self.register_buffer("triplet_norm", torch.tensor(1.0 / 128.0))

    def atom_tensors(self, feats: BackboneOutput, geo: Geometry) -> Tensor:
        """Raw per-atom tensors (before scale, shift and constraints): (n_atoms, 3**rank)."""
        numbers = geo["numbers"]
        n_atoms = numbers.shape[0]
        dtype = feats["atom"].dtype
        out = feats["atom"].new_zeros(n_atoms, 3**self.rank)
        if self.iso_mlp is not None:
            out = out + self.iso_mlp(feats["atom"]) @ self.iso_basis.to(dtype)
        unit = geo["unit"]
        if self.edge_mlp is not None and unit.shape[0]:
            c = self.edge_mlp(feats["edge"]).squeeze(-1) * geo["fcut"] * self.edge_norm.to(dtype)
            term = c.unsqueeze(-1) * outer_power(unit, self.rank).reshape(unit.shape[0], -1)
            out = out + scatter_sum(term, geo["centre"], n_atoms)
        ta, tb = geo["ta"], geo["tb"]
        if self.trip_mlp is not None and ta.shape[0]:
            g = geo["fcut_trip"]
            gab = g.index_select(0, ta) * g.index_select(0, tb)
            c = self.trip_mlp(feats["triplet"]) * (gab * self.triplet_norm.to(dtype)).unsqueeze(-1)
            ea, eb = unit.index_select(0, ta), unit.index_select(0, tb)
            term = sum(c[:, k : k + 1] * outer_product([eb if q else ea for q in pat]).reshape(ta.shape[0], -1)
                       for k, pat in enumerate(self.patterns))
            out = out + scatter_sum(term, geo["centre"].index_select(0, ta), n_atoms)
        return out

    def forward(self, feats: BackboneOutput | None, geo: Geometry, raw: Tensor | None = None) -> Tensor:
        """Target tensors: (n_atoms, 3, ...) for per-atom targets, (n_graphs, 3, ...) for structures.

        ``raw``: :meth:`atom_tensors` computed elsewhere (e.g. chunk by chunk), then ``feats`` is unused.
        """
        raw = self.atom_tensors(feats, geo) if raw is None else raw
        dtype = raw.dtype
        out = self.scale.to(dtype) * raw
        if self.n_iso:
            out = out + self.element_shift.to(dtype)[geo["numbers"], : self.n_iso] @ self.iso_basis.to(dtype)
        if self.level == "atom":
            if self.sum_rule:
                out = out - scatter_mean(out, geo["batch"], geo["n_graphs"])[geo["batch"]]
        else:
            pool = scatter_mean if self.reduce == "mean" else scatter_sum
            out = pool(out, geo["batch"], geo["n_graphs"])
        out = out.reshape(out.shape[0], *(3,) * self.rank)
        return symmetrize(out, self.symmetry, self.rank)
