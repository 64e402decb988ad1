"""Radial bases, cutoff functions, angular basis and activations (DimeNet++ building blocks).

Reference: J. Gasteiger et al., "Fast and Uncertainty-Aware Directional Message Passing for
Non-Equilibrium Molecules" (DimeNet++), arXiv:2011.14115.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = [
    "CosineCutoff",
    "PolynomialEnvelope",
    "BesselBasis",
    "GaussianBasis",
    "legendre",
    "make_cutoff",
    "make_radial_basis",
    "make_activation",
    "ACTIVATIONS",
]


class CosineCutoff(nn.Module):
    """``f(r) = 0.5 (cos(pi r / r_c) + 1)`` for ``r < r_c``, else 0.

    Args:
        cutoff: r_c, Angstrom.
    """

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, r: Tensor) -> Tensor:
        """r: (n,) Angstrom -> (n,) dimensionless in [0, 1]."""
        return 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0) * (r < self.cutoff).to(r.dtype)


class PolynomialEnvelope(nn.Module):
    """DimeNet's smooth polynomial envelope ``u(x)``, ``x = r / r_c``, with exponent ``p``.

    ``u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)`` for ``x < 1``, else 0; it
    and its first two derivatives vanish at the cutoff.
    """

    def __init__(self, cutoff: float, exponent: int = 5):
        super().__init__()
        if exponent < 1:
            raise ConfigError(f"envelope_exponent must be >= 1, got {exponent}")
        self.cutoff = float(cutoff)
        self.p = int(exponent)

    def forward(self, r: Tensor) -> Tensor:
        """r: (n,) Angstrom -> (n,) dimensionless in [0, 1]."""
        p = self.p
        x = r / self.cutoff
        a, b, c = -(p + 1) * (p + 2) / 2, p * (p + 2), -p * (p + 1) / 2
        xp = x.pow(p)
        u = 1.0 + a * xp + b * xp * x + c * xp * x * x
        return u * (x < 1).to(r.dtype)


class BesselBasis(nn.Module):
    """``b_n(r) = sqrt(2 / r_c) sin(n pi r / r_c) / r`` times the cutoff function, n = 1..N.

    The frequencies ``n pi`` are trainable, as in DimeNet.

    Args:
        num: N basis functions.
        cutoff: r_c, Angstrom.
        cutoff_fn: smooth cutoff module applied to every function.
    """

    def __init__(self, num: int, cutoff: float, cutoff_fn: nn.Module):
        super().__init__()
        self.cutoff = float(cutoff)
        self.freq = nn.Parameter(torch.arange(1, num + 1, dtype=torch.float32) * math.pi)
        self.cutoff_fn = cutoff_fn

    def forward(self, r: Tensor, fcut: Tensor | None = None) -> Tensor:
        """r: (n,) Angstrom, all > 0 -> (n, num); ``fcut``: the cutoff function at ``r`` when
        already computed (:func:`etgnn.nn.geometry.edge_geometry`), else evaluated here."""
        x = (r / self.cutoff).unsqueeze(-1)
        pref = math.sqrt(2.0 / self.cutoff)
        fcut = self.cutoff_fn(r) if fcut is None else fcut
        return pref * torch.sin(self.freq.to(r.dtype) * x) / r.unsqueeze(-1) * fcut.unsqueeze(-1)


class GaussianBasis(nn.Module):
    """``g_n(r) = exp(-(r - mu_n)^2 / (2 w^2))`` with centres evenly spaced on [0, r_c], times the cutoff."""

    def __init__(self, num: int, cutoff: float, cutoff_fn: nn.Module):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, float(cutoff), num))
        self.width = float(cutoff) / max(num - 1, 1)
        self.cutoff_fn = cutoff_fn

    def forward(self, r: Tensor, fcut: Tensor | None = None) -> Tensor:
        """r: (n,) Angstrom -> (n, num); ``fcut`` as for :class:`BesselBasis`."""
        d = r.unsqueeze(-1) - self.centers.to(r.dtype)
        fcut = self.cutoff_fn(r) if fcut is None else fcut
        return torch.exp(-0.5 * (d / self.width) ** 2) * fcut.unsqueeze(-1)


def legendre(x: Tensor, num: int) -> Tensor:
    """Legendre polynomials ``P_0 .. P_{num-1}`` of ``x = cos(theta)`` (the m = 0 spherical harmonics
    up to normalisation), by Bonnet's recursion.

    Args:
        x: (n,) in [-1, 1].

    Returns:
        (n, num).
    """
    out = [torch.ones_like(x), x]
    for ell in range(1, num - 1):
        out.append(((2 * ell + 1) * x * out[ell] - ell * out[ell - 1]) / (ell + 1))
    return torch.stack(out[:num], dim=-1)


CUTOFFS = {"cosine": CosineCutoff, "polynomial": PolynomialEnvelope}
RADIAL_BASES = {"bessel": BesselBasis, "gaussian": GaussianBasis}
ACTIVATIONS = {"elu": nn.ELU, "swish": nn.SiLU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}


def make_cutoff(name: str, cutoff: float, envelope_exponent: int = 5) -> nn.Module:
    """Cutoff function by name: ``cosine`` or ``polynomial`` (DimeNet envelope)."""
    if name == "cosine":
        return CosineCutoff(cutoff)
    if name == "polynomial":
        return PolynomialEnvelope(cutoff, envelope_exponent)
    raise ConfigError(f"cutoff_function must be one of {sorted(CUTOFFS)}, got {name!r}")


def make_radial_basis(name: str, num: int, cutoff: float, cutoff_fn: nn.Module) -> nn.Module:
    """Radial basis by name: ``bessel`` or ``gaussian``."""
    if name not in RADIAL_BASES:
        raise ConfigError(f"radial_basis must be one of {sorted(RADIAL_BASES)}, got {name!r}")
    return RADIAL_BASES[name](num, cutoff, cutoff_fn)


def make_activation(name: str) -> nn.Module:
    """Activation by name.  ``swish`` and ``silu`` are the same function ``x * sigmoid(x)``."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()
