"""Response targets: quantities that are derivatives of another target, not expansions of their own.

A target with ``gradient_of: energy`` is ``-dE/dR``: minus the gradient of the energy target (a
scalar per structure, the sum of per-atom scalars) with respect to the atom positions, i.e.
conservative forces.  The gradient itself is taken in one place,
:meth:`etgnn.model.ETGNN.forward`; :class:`NegativeGradient` is the head that stands for such a
target in the model (its normaliser's scale, the RMS of the labels, divides the target in the
loss, as for every other target).

Why conservative forces: they are the exact derivative of an energy, so molecular dynamics
conserves the total energy, the forces of a structure sum to zero, and energies and forces train
the same function.  They are equivariant and respect site symmetry for any weights like every
other etgnn output (the energy is an invariant).  A direct rank-1 head (no ``gradient_of``) is
the ETGNN paper's force model and is cheaper (no second derivative in training).

>>> import torch
>>> head = NegativeGradient("energy", scale=0.5)
>>> head.of, float(head.scale), head(torch.ones(2, 3))[0].tolist()
('energy', 0.5, [-1.0, -1.0, -1.0])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .normalize import ScaleShift

__all__ = ["NegativeGradient"]


class NegativeGradient(nn.Module):
    """Head of a per-atom vector target that is ``-dE/dR`` of the target named ``of``.

    Args:
        of: name of the energy target (level structure, rank 0, reduce sum).
        scale: RMS of the labels per component (data units), the loss's normalisation.

    Attributes:
        rank, level: 1 and ``"atom"`` (as :class:`etgnn.nn.heads.TensorHead`'s).
        normalizer: a :class:`etgnn.nn.normalize.ScaleShift` holding ``scale`` (no shift: a
            rank-1 tensor has no isotropic part).
    """

    rank = 1
    level = "atom"
    reduce = "mean"
    sum_rule = False

    def __init__(self, of: str, scale: float = 1.0):
        super().__init__()
        self.of = of
        self.normalizer = ScaleShift(1, torch.zeros(0, 3), scale)

    @property
    def scale(self) -> Tensor:
        """The normaliser's scale (a buffer, data units)."""
        return self.normalizer.scale

    def forward(self, gradient: Tensor) -> Tensor:
        """``gradient``: (n_atoms, 3) dE/dR in data units -> (n_atoms, 3) the target, ``-dE/dR``."""
        return -gradient

    def extra_repr(self) -> str:
        return f"of={self.of!r}, scale={float(self.scale):.4g}"
