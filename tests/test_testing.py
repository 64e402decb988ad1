"""etgnn.testing's reusable symmetry checks pass on every head of a random model and catch a head
that breaks the symmetry (so that a user who adds a head can rely on them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from etgnn import testing

pytestmark = pytest.mark.usefixtures("single_thread")


def test_checks_pass_on_every_head(make_model, structures):
    model = make_model("float64")
    testing.assert_symmetric_model(model, molecule("CH3OH"), structures["wurtzite"], tol=1e-10)


def test_checks_catch_a_broken_head(make_model, structures):
    model = make_model("float64", seed=5)
    head = model.heads["forces"]
    original = head.forward

    def broken(feats, geo, raw=None):  # adds a fixed vector: not equivariant
        out = original(feats, geo, raw)
        return out + torch.tensor([0.3, 0.0, 0.0], dtype=out.dtype)

    head.forward = broken
    try:
        with pytest.raises(AssertionError, match="rotation .*forces"):
            testing.assert_symmetric_model(model, molecule("CH3OH"), structures["wurtzite"], tol=1e-10)
        errors = testing.equivariance_errors(model, molecule("H2O"), np.diag([-1.0, 1.0, 1.0]))
        assert errors["forces"] > 0.1 and errors["bec"] < 1e-10
    finally:
        del head.forward
