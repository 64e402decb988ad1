"""Invariant DimeNet++-style backbone with edge messages and a triplet-feature stream.

Produces rotation-invariant features per atom, per edge and per triplet; the tensor heads in
:mod:`etgnn.nn.heads` turn them into coefficients of the edge expansion.

Cost control (see ``benchmarks/``): triplets exist only for edges shorter than
``triplet_cutoff``; every linear map of edge features is applied once per edge and the result
gathered onto triplets, so the per-triplet work is gathers, element-wise products and one
``triplet_channels x triplet_channels`` map per block.  The edge maps that only feed triplets
(the angular message and the triplet gate) are applied only to the edges that belong to a
triplet, typically a third to a half of the edges of the 6 Angstrom graph.  Gathers use
``index_select`` (several times faster than advanced indexing on CPU, same values).
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from ..data import keys as K
from .basis import legendre, make_activation, make_cutoff, make_radial_basis
from .normalize import MAX_Z, NeighbourCounts
from .scatter import scatter_sum

__all__ = ["Backbone", "BackboneOutput", "MAX_Z"]



class BackboneOutput(dict):
    """Features produced by :class:`Backbone`.

    Keys: ``atom`` (n_atoms, hidden), ``edge`` (n_edges, hidden), ``triplet`` (n_triplets,
    triplet_channels), and the training data's ``edges_per_atom`` and ``triplets_per_atom`` (scalar
    tensors, :class:`etgnn.nn.normalize.NeighbourCounts`) that the heads divide their sums by.
    """


class _Residual(nn.Module):
    def __init__(self, dim: int, act: nn.Module):
        super().__init__()
        self.lin1, self.lin2, self.act = nn.Linear(dim, dim), nn.Linear(dim, dim), act

    def forward(self, x: Tensor) -> Tensor:
        return x + self.act(self.lin2(self.act(self.lin1(x))))


class _Embedding(nn.Module):
    """Initial edge messages from the two atom embeddings and the radial basis."""

    def __init__(self, hidden: int, num_radial: int, act: nn.Module):
        super().__init__()
        self.emb = nn.Embedding(MAX_Z + 1, hidden)
        self.lin_rbf = nn.Linear(num_radial, hidden)
        self.lin_centre = nn.Linear(hidden, hidden)
        self.lin_neigh = nn.Linear(hidden, hidden, bias=False)
        self.lin_edge = nn.Linear(hidden, hidden, bias=False)
        self.act = act

    def forward(self, numbers: Tensor, rbf: Tensor, i: Tensor, j: Tensor) -> Tensor:
        x = self.emb(numbers)
        # the linear map of concat([x_i, x_j, rbf]) split so that atom work is done per atom
        return self.act(self.lin_centre(x).index_select(0, i) + self.lin_neigh(x).index_select(0, j)
                        + self.lin_edge(self.act(self.lin_rbf(rbf))))


class _Interaction(nn.Module):
    """One block: angle-dependent edge messages plus the triplet-feature update."""

    def __init__(self, hidden: int, trip: int, int_emb: int, basis_emb: int, num_radial: int,
                 num_sbf: int, act: nn.Module):
        super().__init__()
        self.act = act
        self.lin_rbf = nn.Sequential(nn.Linear(num_radial, basis_emb, bias=False),
                                     nn.Linear(basis_emb, hidden, bias=False))
        self.lin_sbf = nn.Sequential(nn.Linear(num_sbf, basis_emb, bias=False),
                                     nn.Linear(basis_emb, int_emb, bias=False))
        self.lin_self = nn.Linear(hidden, hidden)
        self.lin_nb = nn.Linear(hidden, hidden)
        self.lin_down = nn.Linear(hidden, int_emb, bias=False)
        self.lin_up = nn.Linear(int_emb, hidden, bias=False)
        self.lin_trip_msg = nn.Linear(trip, int_emb, bias=False)
        self.before = _Residual(hidden, act)
        self.lin_mid = nn.Linear(hidden, hidden)
        self.after = nn.Sequential(_Residual(hidden, act), _Residual(hidden, act))
        # triplet stream
        self.lin_ta = nn.Linear(hidden, trip, bias=False)
        self.lin_tb = nn.Linear(hidden, trip, bias=False)
        self.lin_tt = nn.Linear(trip, trip)

    def forward(self, m: Tensor, t: Tensor, rbf: Tensor, sbf: Tensor, ta: Tensor, tb: Tensor,
                gab: Tensor, sel: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One block.

        Args:
            m: (n_edges, hidden) edge messages.
            t: (n_triplets, trip) triplet features.
            rbf: (n_sel, num_radial) radial basis of the triplet edges ``sel`` (of all edges if
                ``sel`` is None).
            sbf: (n_triplets, num_spherical * num_radial) angular basis.
            ta, tb: (n_triplets,) int64 indices of each triplet's two edges into ``sel`` (into
                all edges if ``sel`` is None).
            gab: (n_triplets,) ``g(r_a) g(r_b)``, the triplet cutoff function of both edges: every
                triplet message is damped by it, so that nothing jumps when an atom crosses
                ``triplet_cutoff``.
            sel: (n_sel,) int64 edges that belong to at least one triplet, or None for all.

        Returns:
            new ``m`` (n_edges, hidden) and ``t`` (n_triplets, trip).
        """
        act = self.act
        x_self = act(self.lin_self(m))
        m_sel = m if sel is None else m.index_select(0, sel)
        x_nb = act(self.lin_nb(m_sel)) * self.lin_rbf(rbf)
        x_nb = act(self.lin_down(x_nb))  # (n_sel, int_emb), per edge
        msg = x_nb.index_select(0, tb) * (self.lin_sbf(sbf) + self.lin_trip_msg(t))  # (n_triplets, int_emb)
        msg = msg * gab.unsqueeze(-1)
        up = act(self.lin_up(scatter_sum(msg, ta, m_sel.shape[0])))
        # an edge outside every triplet aggregates nothing, and act(lin_up(0)) = act(0) = 0
        # (lin_up has no bias; Backbone only passes ``sel`` when act(0) = 0)
        h = x_self + up if sel is None else x_self.index_add(0, sel, up)
        h = act(self.lin_mid(self.before(h))) + m
        m_new = self.after(h)
        # triplet features see both (updated) edges; the edge maps are applied per edge
        m_sel = m_new if sel is None else m_new.index_select(0, sel)
        gate = self.lin_ta(m_sel).index_select(0, ta) + self.lin_tb(m_sel).index_select(0, tb)
        t_new = t + act(self.lin_tt(t * gate))
        return m_new, t_new


class _Output(nn.Module):
    """Per-atom features from the edge messages (radial filter, sum over each atom's edges)."""

    def __init__(self, hidden: int, num_radial: int, act: nn.Module):
        super().__init__()
        self.lin_rbf = nn.Linear(num_radial, hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), act, nn.Linear(hidden, hidden))

    def forward(self, m: Tensor, rbf: Tensor, i: Tensor, n_atoms: int) -> Tensor:
        return self.mlp(scatter_sum(self.lin_rbf(rbf) * m, i, n_atoms))


class Backbone(nn.Module):
    """DimeNet++-style invariant message passing with a triplet-feature stream.

    Args:
        cutoff: edge cutoff r_c, Angstrom.
        triplet_cutoff: cutoff of the triplet edges, Angstrom.
        hidden_channels: width of atom and edge features.
        triplet_channels: width of triplet features.
        num_blocks: interaction blocks.
        int_emb_size: width of the per-triplet angular messages.
        basis_emb_size: bottleneck of the radial/angular basis projections.
        num_radial: radial basis functions.
        num_spherical: Legendre polynomials ``P_0..P_{L-1}`` of the triplet angle.
        envelope_exponent: exponent of the polynomial envelope.
        activation: ``elu`` | ``swish`` | ``silu`` | ``relu`` | ``tanh``.
        cutoff_function: ``cosine`` | ``polynomial``.
        radial_basis: ``bessel`` | ``gaussian``.
        smooth_triplets: damp every triplet message by ``g(r_a) g(r_b)`` so that the features are
            continuous when an atom crosses ``triplet_cutoff`` (etgnn 0.1.0 did not: its
            checkpoints load with ``False``).
        checkpoint_blocks: in training, recompute each interaction block during backward instead
            of storing its activations (``torch.utils.checkpoint``): less memory, about one more
            forward pass of compute, the same gradients.
    """

    def __init__(self, cutoff: float = 6.0, triplet_cutoff: float = 4.0, hidden_channels: int = 128,
                 triplet_channels: int = 128, num_blocks: int = 4, int_emb_size: int = 64,
                 basis_emb_size: int = 8, num_radial: int = 6, num_spherical: int = 7,
                 envelope_exponent: int = 5, activation: str = "elu", cutoff_function: str = "cosine",
                 radial_basis: str = "bessel", smooth_triplets: bool = True, checkpoint_blocks: bool = False):
        super().__init__()
        self.checkpoint_blocks = bool(checkpoint_blocks)
        self.counts = NeighbourCounts()
        self.cutoff, self.triplet_cutoff = float(cutoff), float(triplet_cutoff)
        self.smooth_triplets = bool(smooth_triplets)
        self.num_spherical = num_spherical
        act = make_activation(activation)
        self.cutoff_fn = make_cutoff(cutoff_function, cutoff, envelope_exponent)
        self.triplet_cutoff_fn = make_cutoff(cutoff_function, triplet_cutoff, envelope_exponent)
        self.rbf = make_radial_basis(radial_basis, num_radial, cutoff, self.cutoff_fn)
        self.trip_rbf = make_radial_basis(radial_basis, num_radial, triplet_cutoff, self.triplet_cutoff_fn)
        num_sbf = num_spherical * num_radial
        # the triplet-only edge maps may skip edges outside every triplet only if act(0) = 0
        self._act_zero_at_zero = bool(act(torch.zeros(1)).item() == 0.0)
        self.embedding = _Embedding(hidden_channels, num_radial, act)
        self.lin_t0 = nn.Linear(num_sbf, triplet_channels)
        self.act = act
        self.blocks = nn.ModuleList(
            _Interaction(hidden_channels, triplet_channels, int_emb_size, basis_emb_size, num_radial, num_sbf, act)
            for _ in range(num_blocks)
        )
        self.outputs = nn.ModuleList(_Output(hidden_channels, num_radial, act) for _ in range(num_blocks + 1))

    def forward(self, batch: dict[str, Tensor]) -> BackboneOutput:
        """Invariant features.

        Args:
            batch: a batch with the geometry fields of :func:`etgnn.nn.geometry.edge_geometry`;
                reads numbers, edge index, triplet indices, edge lengths, unit vectors and both
                cutoff values (:mod:`etgnn.data.keys`).

        Returns:
            :class:`BackboneOutput`.
        """
        numbers, dist, unit = batch[K.NUMBERS], batch[K.EDGE_LENGTH], batch[K.EDGE_UNIT]
        ta, tb = batch[K.TRIPLET_A], batch[K.TRIPLET_B]
        i, j = batch[K.EDGE_INDEX]
        n_atoms = numbers.shape[0]
        g = batch[K.EDGE_TRIPLET_CUTOFF]
        rbf = self.rbf(dist, batch[K.EDGE_CUTOFF])
        cos = (unit.index_select(0, ta) * unit.index_select(0, tb)).sum(-1).clamp(-1.0, 1.0)
        # angular basis: Legendre(angle at the centre) x radial basis of the partner edge
        rbf_b = self.trip_rbf(dist, g).index_select(0, tb)
        if self.smooth_triplets:
            gab = g.index_select(0, ta) * g.index_select(0, tb)
        else:
            gab = dist.new_ones(ta.shape[0])
        sbf = (legendre(cos, self.num_spherical).unsqueeze(-1) * rbf_b.unsqueeze(-2)).flatten(1)
        m = self.embedding(numbers, rbf, i, j)
        t = self.act(self.lin_t0(sbf))
        h = self.outputs[0](m, rbf, i, n_atoms)
        sel, ta_sel, tb_sel, rbf_sel = self._triplet_edges(dist.shape[0], ta, tb, rbf)
        for block, out in zip(self.blocks, self.outputs[1:]):
            m, t = self._run_block(block, m, t, rbf_sel, sbf, ta_sel, tb_sel, gab, sel)
            h = h + out(m, rbf, i, n_atoms)
        return BackboneOutput(atom=h, edge=m, triplet=t, edges_per_atom=self.counts.edges_per_atom.to(h.dtype),
                              triplets_per_atom=self.counts.triplets_per_atom.to(h.dtype))

    def _run_block(self, block: nn.Module, *args):
        """``block(*args)``, checkpointed when asked for and gradients are being recorded."""
        if self.checkpoint_blocks and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _triplet_edges(self, n_edges: int, ta: Tensor, tb: Tensor, rbf: Tensor):
        """Edges that belong to a triplet, ``sel`` (n_sel,), the triplets' edge indices into
        ``sel``, and the radial basis of those edges; ``sel`` None (all edges) when the
        activation does not vanish at zero."""
        if not self._act_zero_at_zero:
            return None, ta, tb, rbf
        used = torch.zeros(n_edges, dtype=torch.bool, device=ta.device)
        used[ta] = True
        used[tb] = True
        sel = used.nonzero().squeeze(1)
        local = torch.empty(n_edges, dtype=ta.dtype, device=ta.device)
        local[sel] = torch.arange(sel.shape[0], dtype=ta.dtype, device=ta.device)
        return sel, local[ta], local[tb], rbf.index_select(0, sel)
