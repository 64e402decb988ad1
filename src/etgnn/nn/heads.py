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

import numpy as np
import torch
from torch import Tensor, nn

from ..data import keys as K
from ..tensors import (delta_placements, index_patterns, isotropic_tensors, levi_civita, outer_power, outer_product,
                       parse_symmetry, placement_matrix, project_permutations)
from .backbone import BackboneOutput
from .basis import make_activation
from .normalize import ScaleShift
from .scatter import scatter_mean, scatter_sum

__all__ = ["TensorHead"]


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
        mixed: rank >= 3: products of edge vectors with Kronecker deltas in every index placement
            (``e_i delta_jk``, ``e_j delta_ik``, ``e_k delta_ij``; rank 4 ``e e delta`` from two- and
            three-body clusters), without which planar and linear sites miss allowed components.
        chiral: rank 3: the term ``p epsilon_ijk`` with a pseudoscalar ``p`` built from triplets,
            the one component that products of two edge vectors cannot give (chiral sites only).
        four_body: feed the three-body coefficients the scalars ``e_b . V_a`` with
            ``V_a = sum_c d_ac e_c`` (a sum over the triplets of edge ``a``), which tell the ordered
            triplet ``(a, b)`` from ``(b, a)`` when the two edges are symmetry-equivalent; without
            them sites on a rotation axis miss the antisymmetric part of rank-2 tensors.
        symmetry: index-symmetry formula (e.g. ``"ij=ji"``) enforced exactly, or None (parsed
            once, here, into its permutation group).
        sum_rule: per-atom tensors of each structure sum exactly to zero.
        scale, shift: the normaliser's output scale and ``{Z: isotropic coefficients}`` shift
            (:class:`etgnn.nn.normalize.ScaleShift`, from :func:`etgnn.data.statistics.compute_statistics`).
    """

    #: channels of the four-body vectors ``V_a`` (shared by the four-body scalars and the chiral term)
    N_QUAD = 4

    def __init__(self, rank: int, level: str = "structure", reduce: str = "mean", hidden_channels: int = 128,
                 triplet_channels: int = 128, activation: str = "elu", isotropic: bool = True,
                 two_body: bool = True, three_body: bool = True, symmetry: str | None = None,
                 sum_rule: bool = False, mixed: bool = True, chiral: bool = True, four_body: bool = True,
                 scale: float = 1.0, shift: dict | None = None):
        super().__init__()
        self.rank, self.level, self.reduce = rank, level, reduce
        self.symmetry, self.sum_rule = symmetry, sum_rule
        self.permutations = parse_symmetry(symmetry, rank)
        iso = isotropic_tensors(rank, dtype=torch.float32) if (isotropic or rank == 0) else torch.zeros(0, *(3,) * rank)
        self.register_buffer("iso_basis", iso.reshape(iso.shape[0], 3**rank))
        self.n_iso = iso.shape[0]
        self.patterns = index_patterns(rank) if three_body else []
        # mixed terms, grouped by the number k of free (vector) slots: two-body e_a^(x)k and
        # three-body patterns over (a, b) on the free slots, deltas on the others
        self.mixed2, self.mixed3 = [], []  # (k, n placements) and (k, n placements, pattern)
        placements = delta_placements(rank) if mixed else []
        for k in sorted({len(free) for _, free in placements}):
            group = [(pairs, free) for pairs, free in placements if len(free) == k]
            mats = torch.as_tensor(np.stack([placement_matrix(pr, fr, rank) for pr, fr in group]), dtype=torch.float32)
            self.register_buffer(f"place_{k}", mats)  # (n_placements, 3**k, 3**rank)
            if two_body:
                self.mixed2.append((k, len(group)))
            if three_body:
                self.mixed3.extend((k, len(group), pat) for pat in index_patterns(k))
        self.chiral = bool(chiral and three_body and rank == 3)
        if self.chiral:
            self.register_buffer("epsilon", levi_civita(torch.float32).reshape(27))
        n_edge = 1 + sum(n for _, n in self.mixed2)
        n_trip = len(self.patterns) + sum(n for _, n, _ in self.mixed3) + self.N_QUAD * self.chiral
        self.four_body = bool(four_body and n_trip)
        self.lin_quad = nn.Linear(triplet_channels, self.N_QUAD, bias=False) if (self.four_body or self.chiral) else None
        self.iso_mlp = _mlp(hidden_channels, self.n_iso, activation) if self.n_iso else None
        self.edge_mlp = _mlp(hidden_channels, n_edge, activation) if two_body else None
        n_in = triplet_channels + self.N_QUAD * self.four_body
        self.trip_mlp = nn.Sequential(nn.Linear(n_in, triplet_channels), make_activation(activation),
                                      nn.Linear(triplet_channels, n_trip)) if n_trip else None
        self.normalizer = ScaleShift(rank, self.iso_basis, scale, shift)

    @property
    def scale(self) -> Tensor:
        """The normaliser's output scale (a buffer: data units per model unit)."""
        return self.normalizer.scale

    def _placed(self, k: int, coeff: Tensor, vectors: Tensor, centre: Tensor, n_atoms: int) -> Tensor:
        """Sum over edges/triplets of ``coeff`` (n, P) x ``vectors`` (n, 3**k) on the P placements
        with ``k`` free slots, deltas added per atom: (n_atoms, 3**rank)."""
        n, p = coeff.shape
        per_atom = scatter_sum((coeff.unsqueeze(-1) * vectors.unsqueeze(1)).reshape(n, -1), centre, n_atoms)
        place = getattr(self, f"place_{k}").to(coeff.dtype)
        return torch.einsum("apk,pkm->am", per_atom.reshape(n_atoms, p, -1), place)

    def atom_tensors(self, feats: BackboneOutput, batch: dict[str, Tensor]) -> Tensor:
        """Raw per-atom tensors (before scale, shift and constraints): (n_atoms, 3**rank).

        ``feats`` from the backbone (``n_atoms`` = rows of ``feats["atom"]``); ``batch`` gives the
        geometry fields (unit vectors, both cutoffs), the edge index (centres) and the triplets.
        """
        n_atoms = feats["atom"].shape[0]
        dtype = feats["atom"].dtype
        edge_norm = 1.0 / feats["edges_per_atom"]
        triplet_norm = 1.0 / feats["triplets_per_atom"]
        out = feats["atom"].new_zeros(n_atoms, 3**self.rank)
        if self.iso_mlp is not None:
            out = out + self.iso_mlp(feats["atom"]) @ self.iso_basis.to(dtype)
        unit, centre = batch[K.EDGE_UNIT], batch[K.EDGE_INDEX][0]
        if self.edge_mlp is not None and unit.shape[0]:
            c = self.edge_mlp(feats["edge"]) * (batch[K.EDGE_CUTOFF] * edge_norm).unsqueeze(-1)
            term = c[:, :1] * outer_power(unit, self.rank).reshape(unit.shape[0], -1)
            out = out + scatter_sum(term, centre, n_atoms)
            col = 1
            for k, n in self.mixed2:
                out = out + self._placed(k, c[:, col : col + n], outer_power(unit, k).reshape(unit.shape[0], -1),
                                         centre, n_atoms)
                col += n
        ta, tb = batch[K.TRIPLET_A], batch[K.TRIPLET_B]
        if self.trip_mlp is not None and ta.shape[0]:
            g = batch[K.EDGE_TRIPLET_CUTOFF]
            gab = g.index_select(0, ta) * g.index_select(0, tb)
            ea, eb = unit.index_select(0, ta), unit.index_select(0, tb)
            t = feats["triplet"]
            if self.lin_quad is not None:
                quad = self._quad_vectors(t, gab, eb, ta, unit.shape[0], edge_norm / triplet_norm)
                if self.four_body:
                    t = torch.cat([t, (quad * eb.unsqueeze(1)).sum(-1)], dim=-1)
            c = self.trip_mlp(t) * (gab * triplet_norm).unsqueeze(-1)
            tcentre = centre.index_select(0, ta)
            n_t = ta.shape[0]
            if self.patterns:
                term = sum(c[:, k : k + 1] * outer_product([eb if q else ea for q in pat]).reshape(n_t, -1)
                           for k, pat in enumerate(self.patterns))
                out = out + scatter_sum(term, tcentre, n_atoms)
            col = len(self.patterns)
            for k, n, pat in self.mixed3:
                vec = outer_product([eb if q else ea for q in pat]).reshape(n_t, -1)
                out = out + self._placed(k, c[:, col : col + n], vec, tcentre, n_atoms)
                col += n
            if self.chiral:
                det = (torch.linalg.cross(ea, eb).unsqueeze(1) * quad).sum(-1)  # (n_triplets, N_QUAD)
                p = scatter_sum((c[:, col:] * det).sum(-1, keepdim=True), tcentre, n_atoms)
                out = out + p * self.epsilon.to(dtype)
        return out

    def _quad_vectors(self, t: Tensor, gab: Tensor, eb: Tensor, ta: Tensor, n_edges: int,
                      triplets_per_edge: Tensor) -> Tensor:
        """``V_(a,b)^h = V_a^h = sum_(a,c) d_ac^h e_c`` gathered onto each triplet: (n_triplets, N_QUAD, 3).

        ``d = lin_quad(t)`` damped by the triplet cutoffs and divided by the mean number of
        triplets per edge.  ``e_b . V_a`` are four-body scalars that differ between ``(a, b)`` and
        ``(b, a)``; ``det(e_a, e_b, V_a)`` are pseudoscalars (sign flip under improper rotations),
        nonzero only on chiral sites.
        """
        d = (self.lin_quad(t) * gab.unsqueeze(-1)).unsqueeze(-1) * eb.unsqueeze(1)  # (n_triplets, h, 3)
        v = scatter_sum(d.reshape(d.shape[0], -1), ta, n_edges) / triplets_per_edge
        return v.index_select(0, ta).reshape(-1, self.N_QUAD, 3)

    def forward(self, feats: BackboneOutput | None, batch: dict[str, Tensor], raw: Tensor | None = None) -> Tensor:
        """Target tensors: (n_atoms, 3, ...) for per-atom targets, (n_graphs, 3, ...) for structures.

        ``raw``: :meth:`atom_tensors` computed elsewhere (e.g. chunk by chunk), then ``feats`` is unused.
        """
        raw = self.atom_tensors(feats, batch) if raw is None else raw
        out = self.normalizer(raw, batch[K.NUMBERS])
        owner, n_graphs = batch[K.BATCH], batch[K.N_ATOMS].shape[0]
        if self.level == "atom":
            if self.sum_rule:
                out = out - scatter_mean(out, owner, n_graphs)[owner]
        else:
            pool = scatter_mean if self.reduce == "mean" else scatter_sum
            out = pool(out, owner, n_graphs)
        out = out.reshape(out.shape[0], *(3,) * self.rank)
        return project_permutations(out, self.permutations, self.rank)
