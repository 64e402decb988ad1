"""Continuity at both cutoffs: no prediction jumps when an atom crosses the edge cutoff or the
triplet cutoff (etgnn 0.1.0 jumped by ~1e-4 at the triplet cutoff: its triplet messages were not
damped by g(r_a) g(r_b)).  Along an MD trajectory a jump is a spike in every spectrum."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

import etgnn
from etgnn.testing import cutoff_steps

pytestmark = pytest.mark.usefixtures("single_thread")

TARGETS = {"forces": {"key": "forces", "level": "atom", "rank": 1},
           "bec": {"key": "bec", "level": "atom", "rank": 2, "sum_rule": True},
           "alpha": {"key": "alpha", "level": "structure", "rank": 2, "symmetry": "ij=ji"},
           "beta": {"key": "beta", "level": "structure", "rank": 3}}


def _model(smooth: bool, cutoff_function: str = "cosine", activation: str = "elu"):
    model = etgnn.build_model({"model": {"hidden_channels": 16, "triplet_channels": 8, "num_blocks": 2, "int_emb_size": 8,
                                         "basis_emb_size": 4, "num_spherical": 4, "cutoff": 5.0, "triplet_cutoff": 3.0,
                                         "dtype": "float64", "smooth_triplets": smooth,
                                         "cutoff_function": cutoff_function, "activation": activation},
                               "targets": TARGETS})
    return model


def _three_atoms():
    # O at the origin, H1 bonded, H2 to be moved along a direction away from both
    return Atoms("OHH", positions=[[0, 0, 0], [0.96, 0.0, 0.0], [-1.0, 1.5, 0.4]])


@pytest.mark.parametrize("cutoff_function, activation", [("cosine", "elu"), ("polynomial", "silu")])
@pytest.mark.parametrize("which", ["triplet", "edge"])
def test_predictions_continuous_at_cutoffs(which, cutoff_function, activation):
    model = _model(True, cutoff_function, activation)
    radius = model.config.model.triplet_cutoff if which == "triplet" else model.config.model.cutoff
    steps = cutoff_steps(model, _three_atoms(), moving=2, partner=0, radius=radius)
    # the change vanishes with the move (proportional to it: a bounded derivative), down to round-off
    assert steps[-1] <= 0.05 * steps[-2] + 1e-12 and steps[-2] <= 0.05 * steps[-3] + 1e-12, steps


def test_etgnn_010_jumps_at_the_triplet_cutoff():
    """The defect the smooth triplet stream fixes: the same step whatever the move."""
    steps = cutoff_steps(_model(False), _three_atoms(), moving=2, partner=0, radius=3.0)
    assert steps[-1] > 1e-6 and steps[-1] > 0.5 * steps[-2], steps
