"""Per-target normalisation fitted on the training part only.

For each head: an isotropic shift (per element for per-atom targets and extensive structure
targets, one global value for intensive structure targets), an output scale (RMS per component of what remains) and the
``1 / (mean edges per atom)`` and ``1 / (mean triplets per atom)`` factors of the edge sums.
The shift only uses isotropic tensors, so equivariance is untouched.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import keys as K
from ..nn.backbone import MAX_Z
from ..data.labels import labelled
from .metrics import training_baselines

__all__ = ["fit_normalization"]


def _iso_coefficients(y: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of ``y`` (n, 3**M) on the isotropic basis (n_iso, 3**M)."""
    gram = basis @ basis.T
    return np.linalg.solve(gram, basis @ y.T).T  # (n, n_iso)


def fit_normalization(model, train, ridge: float = 1e-6) -> dict:
    """Set every head's ``scale``, ``element_shift``, ``edge_norm`` and ``triplet_norm`` from data.

    Also sets ``model.baselines`` (the metrics' constant predictors, fitted on ``train``).

    Args:
        model: an :class:`etgnn.model.ETGNN`.
        train: the training :class:`etgnn.data.dataset.GraphDataset`.
        ridge: Tikhonov regulariser of the per-element least squares (structure targets).

    Returns:
        ``{target: {"scale": float, "shift": {Z: [...]}}}`` plus ``edges_per_atom`` and
        ``triplets_per_atom``.
    """
    n_atoms = train.n_atoms()
    n_edges = sum(g[K.EDGE_INDEX].shape[1] for g in train.graphs)
    n_trip = sum(g[K.TRIPLET_A].shape[0] for g in train.graphs)
    edges_per_atom = max(n_edges / max(n_atoms, 1), 1.0)
    trip_per_atom = max(n_trip / max(n_atoms, 1), 1.0)
    numbers = [g[K.NUMBERS] for g in train.graphs]
    stats: dict = {"edges_per_atom": edges_per_atom, "triplets_per_atom": trip_per_atom}
    if hasattr(model, "elements_seen"):
        model.elements_seen.zero_()
        model.elements_seen[torch.as_tensor(np.unique(np.concatenate(numbers)))] = True
    for name, head in model.heads.items():
        size = 3**head.rank
        basis = head.iso_basis.detach().cpu().double().numpy()
        shift = np.zeros((MAX_Z + 1, max(head.n_iso, 1)))
        if head.level == "atom":
            y = np.concatenate([lab[name].reshape(-1, size) for lab in train.labels])
            z = np.concatenate(numbers)
            keep = labelled(y)  # labelled atoms only
            y, z = y[keep], z[keep]
            present = np.unique(z)
            if head.n_iso:
                coef = _iso_coefficients(y, basis)
                for el in np.unique(z):
                    shift[el, : head.n_iso] = coef[z == el].mean(axis=0)
                y = y - shift[z, : head.n_iso] @ basis
        else:
            y = np.stack([lab[name].reshape(size) for lab in train.labels])
            keep = labelled(y)  # labelled structures only
            y = y[keep]
            kept = [n for n, k in zip(numbers, keep) if k]
            present = np.unique(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)
            if head.n_iso and head.reduce == "mean":
                # intensive: one global isotropic shift.  A per-element fit on composition
                # fractions over-fits (64 elements, ~1000 crystals) and was measured to hurt the
                # dielectric tensor of phonondb_bec_eps (docs/model.md).
                coef = _iso_coefficients(y, basis).mean(axis=0)
                shift[:, : head.n_iso] = coef
                y = y - coef @ basis
            elif head.n_iso:
                # extensive: additive per-element shifts (counts), ridge-regularised least squares
                coef = _iso_coefficients(y, basis)
                elements = np.unique(np.concatenate(kept))
                comp = np.zeros((len(kept), len(elements)))
                owner = np.repeat(np.arange(len(kept)), [len(z) for z in kept])
                np.add.at(comp, (owner, np.searchsorted(elements, np.concatenate(kept))), 1.0)
                a = comp.T @ comp + ridge * np.eye(len(elements))
                sol = np.linalg.solve(a, comp.T @ coef)
                shift[elements, : head.n_iso] = sol
                y = y - (comp @ sol) @ basis
        scale = float(np.sqrt(np.mean(y**2))) if y.size else 1.0
        if not np.isfinite(scale) or scale < 1e-12:
            scale = 1.0
        dtype = head.scale.dtype
        head.scale.copy_(torch.tensor(scale, dtype=dtype))
        head.element_shift.copy_(torch.as_tensor(shift, dtype=dtype))
        head.edge_norm.copy_(torch.tensor(1.0 / edges_per_atom, dtype=dtype))
        head.triplet_norm.copy_(torch.tensor(1.0 / trip_per_atom, dtype=dtype))
        stats[name] = {"scale": scale, "shift": {int(el): shift[el, : head.n_iso].tolist() for el in present}}
    model.baselines = training_baselines(train, model.config.targets)
    return stats
