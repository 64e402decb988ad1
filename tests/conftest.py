"""Shared fixtures of the physics tests: random-weight models, test structures, tolerances.

Models get random weights and then every parameter is perturbed (and the output ``scale`` and
per-element ``element_shift`` buffers of each head set to random O(1) values), so predictions are
O(1) and no test passes because an untrained model happens to predict ~0.  Every test that uses
the ``dtype`` fixture runs in float32 and float64, each with its own relative tolerance (the e3nn
habit).  Helpers reach tests as fixtures (``make_model``, ``assert_close``, ``perturb``) rather
than by importing this file.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

import etgnn

#: Relative tolerance of an exact symmetry, per dtype (errors are relative to the largest |value|).
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}
#: Conservative forces sum the energy's derivative over every atom in the receptive field, so their
#: float32 round-off is a few times that of a head's own output (measured: 1.7e-5 in SiO2-HP).
GRADIENT_ROUNDOFF = {"float32": 4.0, "float64": 1.0}

#: One head of every kind: per-atom ranks 1-4, structure ranks 0-4 with mean and sum
#: reductions, symmetry formulas, the sum rule, unconstrained twins of the constrained heads, and
#: conservative forces (minus the gradient of the energy head).
TARGETS = {
    "forces": {"key": "forces", "level": "atom", "rank": 1},
    "bec": {"key": "bec", "level": "atom", "rank": 2, "sum_rule": True},
    "atom_rank2": {"key": "atom_rank2", "level": "atom", "rank": 2},
    "atom_rank3": {"key": "atom_rank3", "level": "atom", "rank": 3},
    "atom_rank4": {"key": "atom_rank4", "level": "atom", "rank": 4},
    "energy": {"key": "energy", "level": "structure", "rank": 0, "reduce": "sum"},
    "conservative_forces": {"key": "conservative_forces", "level": "atom", "rank": 1, "gradient_of": "energy"},
    "scalar_mean": {"key": "scalar_mean", "level": "structure", "rank": 0, "reduce": "mean"},
    "dipole": {"key": "dipole", "level": "structure", "rank": 1, "reduce": "sum"},
    "polarization": {"key": "polarization", "level": "structure", "rank": 1, "reduce": "mean"},
    "dielectric": {"key": "dielectric", "level": "structure", "rank": 2, "symmetry": "ij=ji"},
    "rank2_sum": {"key": "rank2_sum", "level": "structure", "rank": 2, "reduce": "sum"},
    "piezo": {"key": "piezo", "level": "structure", "rank": 3, "symmetry": "ijk=ikj"},
    "rank3_sum": {"key": "rank3_sum", "level": "structure", "rank": 3, "reduce": "sum"},
    "elastic": {"key": "elastic", "level": "structure", "rank": 4, "symmetry": "ijkl=jikl=ijlk=klij"},
    "rank4_sum": {"key": "rank4_sum", "level": "structure", "rank": 4, "reduce": "sum"},
}

#: Small backbone: fast on 2 CPU cores, still two interaction blocks and every term of the heads.
SMALL_MODEL = {"hidden_channels": 16, "triplet_channels": 8, "num_blocks": 2, "int_emb_size": 8,
               "basis_emb_size": 4, "num_spherical": 4, "cutoff": 4.5, "triplet_cutoff": 3.3}


def perturb_(model: torch.nn.Module, seed: int = 0, noise: float = 0.2) -> torch.nn.Module:
    """Make a random-weight model's predictions O(1) and anisotropic, in place.

    Adds Gaussian noise (std ``noise``) to every parameter, sets each head's output ``scale`` to a
    random value in [2, ~4.5] and its per-element isotropic ``element_shift`` to N(0, 1), and raises
    the edge and triplet normalisations (which training would fit) eightfold, so that the two- and
    three-body terms are not drowned by the isotropic ones.
    """
    gen = torch.Generator().manual_seed(10_000 + seed)

    def randn(shape):
        return torch.randn(shape, generator=gen, dtype=torch.float64)

    with torch.no_grad():
        for p in model.parameters():
            p.add_((noise * randn(p.shape)).to(p.dtype))
        for head in model.heads.values():
            head.scale.copy_(2.0 + randn(()).abs())
            shift = head.normalizer.element_shift
            shift.copy_(randn(shift.shape).to(shift.dtype))
        model.backbone.counts.edges_per_atom.div_(8.0)
        model.backbone.counts.triplets_per_atom.div_(8.0)
    return model


@functools.lru_cache(maxsize=None)
def _cached_model(dtype: str, seed: int, overrides: tuple, targets: tuple) -> etgnn.ETGNN:
    config = {"model": {**SMALL_MODEL, **dict(overrides), "dtype": dtype, "seed": seed},
              "targets": {name: TARGETS[name] for name in targets}}
    return perturb_(etgnn.build_model(config), seed).eval()


def make_model(dtype: str = "float64", seed: int = 0, targets=None, **overrides) -> etgnn.ETGNN:
    """Perturbed random-weight model with the heads ``targets`` (default: all of :data:`TARGETS`).

    Models are cached per arguments: tests must not modify them.
    """
    names = tuple(targets) if targets is not None else tuple(TARGETS)
    return _cached_model(dtype, seed, tuple(sorted(overrides.items())), names)


# ----------------------------------------------------------------------------- structures
def triclinic_crystal(seed: int = 0) -> Atoms:
    """Low-symmetry crystal: random triclinic cell, four species, randomly placed atoms (P1)."""
    rng = np.random.default_rng(seed)
    cell = np.diag([4.3, 4.6, 4.9]) + rng.uniform(-0.8, 0.8, size=(3, 3))
    while True:
        atoms = Atoms("LiOSiZn", scaled_positions=rng.uniform(size=(4, 3)), cell=cell, pbc=True)
        d = atoms.get_all_distances(mic=True) + 10 * np.eye(4)
        if d.min() > 1.6:
            return atoms


def ideal_crystal() -> Atoms:
    """Wurtzite ZnO: an ideal, polar (non-centrosymmetric) crystal."""
    return bulk("ZnO", "wurtzite", a=3.25, c=5.2)


def build_structures() -> dict[str, Atoms]:
    """Molecules (H2O, CH3OH), a rattled triclinic crystal and an ideal crystal."""
    tri = triclinic_crystal()
    tri.rattle(0.05, seed=3)
    return {"H2O": molecule("H2O"), "CH3OH": molecule("CH3OH"), "triclinic": tri, "wurtzite": ideal_crystal()}


# ----------------------------------------------------------------------------- comparisons
#: Smallest reference magnitude of a comparison.  Outputs are O(1) by construction (perturb_), and a
#: tensor that symmetry makes small (forces in wurtzite) is a residue of cancelling O(1) terms:
#: its round-off is set by those terms, so it is compared on the O(1) scale, not on its own size.
MIN_SCALE = 1.0


def assert_close(actual, expected, tol: float, what: str, scale: float | None = None) -> None:
    """``max |actual - expected| <= tol * max(max |expected|, MIN_SCALE)``, naming ``what``.

    ``scale`` replaces the reference magnitude (for expected values that vanish by symmetry).
    """
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all(), f"{what}: non-finite values"
    err = float(np.abs(actual - expected).max(initial=0.0))
    ref = scale if scale is not None else max(float(np.abs(expected).max(initial=0.0)), MIN_SCALE)
    assert err <= tol * ref, f"{what}: largest error {err:.3e} > {tol:.0e} x {ref:.3e}"


def assert_differs(a, b, tol: float, what: str) -> None:
    """``a`` and ``b`` differ by 10x what :func:`assert_close` tolerates: the check it pairs with can fail."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(np.abs(a - b).max(initial=0.0))
    ref = max(float(np.abs(b).max(initial=0.0)), MIN_SCALE)
    assert diff > 10 * tol * ref, f"{what}: differs by only {diff:.3e} (<= 10 x {tol:.0e} x {ref:.3e})"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(params=["float32", "float64"])
def dtype(request) -> str:
    """Run the test in both precisions."""
    return request.param


@pytest.fixture
def tol(dtype) -> float:
    return TOLERANCE[dtype]


@pytest.fixture
def target_tol(dtype, tol):
    """``target_tol(model, name)``: ``tol``, times :data:`GRADIENT_ROUNDOFF` for a gradient target."""
    return lambda model, name: tol * (GRADIENT_ROUNDOFF[dtype] if name in model.gradient_targets else 1.0)


@pytest.fixture
def model(dtype) -> etgnn.ETGNN:
    """Perturbed random-weight model with every head of :data:`TARGETS`."""
    return make_model(dtype)


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread (restored afterwards).

    The test models and structures are tiny, so OpenMP threads only add synchronisation: on a
    loaded 2-core machine the physics tests ran 15-20x slower with two threads than with one.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def structures() -> dict[str, Atoms]:
    """Fresh copies of :func:`build_structures` (tests may modify them)."""
    return build_structures()


@pytest.fixture(name="make_model")
def _make_model_fixture():
    """:func:`make_model`, the factory of perturbed random-weight models (cached; do not modify)."""
    return make_model


@pytest.fixture(name="assert_close")
def _assert_close_fixture():
    """:func:`assert_close`: relative comparison whose message names the quantity."""
    return assert_close


@pytest.fixture(name="assert_differs")
def _assert_differs_fixture():
    """:func:`assert_differs`: the opposite check, so that a symmetry test is shown able to fail."""
    return assert_differs


@pytest.fixture(name="perturb")
def _perturb_fixture():
    """:func:`perturb_`: randomise every parameter and the head buffers of a model in place."""
    return perturb_


@pytest.fixture(autouse=True, scope="session")
def _private_graph_cache(tmp_path_factory):
    """The per-user graph cache (``data.cache_dir: user``) points into a temporary folder in tests."""
    import os

    old = os.environ.get("ETGNN_CACHE_DIR")
    os.environ["ETGNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("etgnn_cache"))
    yield
    if old is None:
        os.environ.pop("ETGNN_CACHE_DIR", None)
    else:
        os.environ["ETGNN_CACHE_DIR"] = old
