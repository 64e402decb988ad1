"""Exact constraints of the heads: the per-atom sum rule and index symmetries.

Each constraint is checked on a batch of several structures, and the unconstrained twin head of
the same model is checked to violate it, so the tests could fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from etgnn.tensors import full_to_voigt, voigt_to_full

pytestmark = pytest.mark.usefixtures("single_thread")

#: Structures without symmetry, where an unconstrained tensor is generically not symmetric.
GENERIC = ("CH3OH", "triclinic")

#: constrained head, its unconstrained twin, the index permutations that must leave it unchanged
INDEX_SYMMETRIES = [
    ("dielectric", "rank2_sum", {"ij=ji": (1, 0)}),
    ("piezo", "rank3_sum", {"ijk=ikj": (0, 2, 1)}),
    ("elastic", "rank4_sum", {"ijkl=jikl (minor)": (1, 0, 2, 3), "ijkl=ijlk (minor)": (0, 1, 3, 2),
                              "ijkl=klij (major)": (2, 3, 0, 1)}),
]


def _predict(model, structures):
    return dict(zip(structures, model.predict(list(structures.values()), batch_size=len(structures))))


def test_sum_rule_in_a_batch(model, tol, structures, assert_close, assert_differs):
    """Per-atom rank-2 tensors with ``sum_rule`` add up to zero in every structure of a batch."""
    preds = _predict(model, structures)
    for name, p in preds.items():
        bec, free = p["bec"], p["atom_rank2"]
        assert np.abs(bec).max() > 0.1, f"{name}: Born charges ~0, the sum rule would hold trivially"
        scale = len(bec) * max(np.abs(bec).max(), 1.0)  # round-off grows with the number of terms
        assert_close(bec.sum(axis=0), np.zeros((3, 3)), tol, f"{name}: sum of bec over atoms", scale=scale)
        assert_differs(free.sum(axis=0), np.zeros((3, 3)), tol, f"{name}: sum of unconstrained rank 2")


def test_sum_rule_on_one_atom_gives_zero(make_model, dtype):
    """A single atom's tensor equals the structure mean, so the sum rule leaves exactly zero."""
    from ase import Atoms

    pred = make_model(dtype).predict(Atoms("Na", cell=[4.0, 4.0, 4.0], pbc=True))[0]
    assert np.abs(pred["bec"]).max() <= 1e-6 * max(np.abs(pred["atom_rank2"]).max(), 1.0)


@pytest.mark.parametrize(("key", "free", "perms"), INDEX_SYMMETRIES, ids=[s[0] for s in INDEX_SYMMETRIES])
def test_index_symmetry(model, tol, structures, key, free, perms, assert_close, assert_differs):
    preds = _predict(model, structures)
    for name, p in preds.items():
        value = p[key]
        assert np.abs(value).max() > 1e-2 or name not in GENERIC, f"{name} {key}: ~0"
        for formula, perm in perms.items():
            assert_close(value.transpose(perm), value, tol, f"{name} {key} {formula}")
        if name in GENERIC:
            worst = max(np.abs(p[free].transpose(perm) - p[free]).max() for perm in perms.values())
            assert_differs(worst, 0.0, tol, f"{name} unconstrained {free}: index symmetry")


def test_symmetric_tensors_round_trip_through_voigt(model, tol, structures, assert_close):
    """Constrained outputs are exactly representable in Voigt form (no information lost)."""
    for name, p in _predict(model, structures).items():
        for key, rank in (("dielectric", 2), ("piezo", 3), ("elastic", 4)):
            back = voigt_to_full(full_to_voigt(p[key], rank), rank)
            assert_close(back, p[key], tol, f"{name} {key} through Voigt")
