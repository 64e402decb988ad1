"""Normalisation modules, built from training-set statistics (:mod:`etgnn.data.statistics`).

``ScaleShift`` turns a head's raw per-atom tensors into data units: ``scale * raw`` plus an
isotropic per-element shift; ``NeighbourCounts`` holds the mean numbers of edges and triplets
per atom that the heads' sums over neighbours are divided by.  Both are plain buffers in the
model's ``state_dict`` (the one place a model file keeps its statistics) with a readable
``repr``; neither changes under rotations (the shift uses isotropic tensors only).

>>> import torch
>>> from etgnn.tensors import isotropic_tensors
>>> ScaleShift(2, isotropic_tensors(2).reshape(1, 9), scale=0.5, shift={8: [-1.0]})
ScaleShift(rank=2, scale=0.5, shift={O: [-1]})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..data.statistics import DEFAULT_EDGES_PER_ATOM, DEFAULT_TRIPLETS_PER_ATOM

__all__ = ["ScaleShift", "NeighbourCounts", "MAX_Z", "DEFAULT_EDGES_PER_ATOM", "DEFAULT_TRIPLETS_PER_ATOM"]

#: Largest atomic number with a row of per-element parameters.
MAX_Z = 118


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z)


class ScaleShift(nn.Module):
    """``out = scale * raw + shift[Z] @ iso_basis``, per atom.

    Args:
        rank: tensor rank of the target.
        iso_basis: (n_iso, 3**rank) the isotropic tensors the shift is expanded on (n_iso may be 0).
        scale: output scale (data units per model unit).
        shift: ``{Z: [n_iso coefficients]}`` per-element isotropic shift (missing elements: 0).
    """

    def __init__(self, rank: int, iso_basis: Tensor, scale: float = 1.0,
                 shift: Mapping[int, Sequence[float]] | None = None):
        super().__init__()
        self.rank, self.n_iso = int(rank), int(iso_basis.shape[0])
        self.register_buffer("iso_basis", iso_basis.clone(), persistent=False)
        # float64 until the model is cast to its dtype, so float64 models keep the statistics exactly
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))
        self.register_buffer("element_shift", torch.zeros(MAX_Z + 1, max(self.n_iso, 1), dtype=torch.float64))
        for z, coef in (shift or {}).items():
            self.element_shift[int(z), : self.n_iso] = torch.as_tensor(coef, dtype=torch.float64)

    def forward(self, raw: Tensor, numbers: Tensor) -> Tensor:
        """raw: (n_atoms, 3**rank), numbers: (n_atoms,) -> (n_atoms, 3**rank) in data units."""
        out = self.scale.to(raw.dtype) * raw
        if self.n_iso:
            out = out + self.element_shift.to(raw.dtype)[numbers, : self.n_iso] @ self.iso_basis.to(raw.dtype)
        return out

    def shifts(self) -> dict[int, list[float]]:
        """``{Z: coefficients}`` of the elements with a nonzero shift."""
        table = self.element_shift[:, : self.n_iso].detach().cpu().double()
        return {int(z): table[z].tolist() for z in torch.nonzero(table.abs().sum(1) > 0).flatten().tolist()}

    def extra_repr(self) -> str:
        table = self.shifts()
        values = list(table.values())
        if len(values) > 10 and all(v == values[0] for v in values):  # an intensive target's global shift
            return f"rank={self.rank}, scale={float(self.scale):.4g}, shift=[{', '.join(f'{c:.4g}' for c in values[0])}] for every element"
        shifts = ", ".join(f"{_symbol(z)}: [{', '.join(f'{c:.4g}' for c in v)}]" for z, v in table.items())
        return f"rank={self.rank}, scale={float(self.scale):.4g}, shift={{{shifts}}}"


class NeighbourCounts(nn.Module):
    """Mean edges and triplets per atom of the training data (divide the heads' neighbour sums)."""

    def __init__(self, edges_per_atom: float = DEFAULT_EDGES_PER_ATOM,
                 triplets_per_atom: float = DEFAULT_TRIPLETS_PER_ATOM):
        super().__init__()
        self.register_buffer("edges_per_atom", torch.tensor(float(edges_per_atom), dtype=torch.float64))
        self.register_buffer("triplets_per_atom", torch.tensor(float(triplets_per_atom), dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"edges_per_atom={float(self.edges_per_atom):.4g}, triplets_per_atom={float(self.triplets_per_atom):.4g}"
