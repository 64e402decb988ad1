"""Every head is exactly equivariant: O(3) rotations (proper and improper), translations, atom
permutations, batching, no gradient across frames, and independence of the choice of cell.

A rank-M tensor gains one R per index, ``T' = rotate(T, R, M)``; with ``det R = -1`` this is the
polar-tensor rule (odd ranks change sign under inversion).  Each comparison is relative to the
largest |value| of the head, and each test also checks, on the structures without symmetry, that
what it compares is not trivially equal: outputs are O(1), and they change where the transformation
should change them (rotated tensors, odd ranks under inversion, permuted atoms, summed cells) or,
where it should not, they do change under a comparable change that is not a symmetry (one atom
moved, another structure in the batch, another atom of the cell).  A model predicting ~0, an
isotropic constant or anything independent of the geometry cannot pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import make_supercell

from etgnn.data import keys as K
from etgnn.data.batch import collate
from etgnn.tensors import random_rotation, rotate

pytestmark = pytest.mark.usefixtures("single_thread")

#: Structures without symmetry, where every component of every tensor is generically nonzero.
GENERIC = ("CH3OH", "triclinic")


def _transformed(atoms, r, shift=(0.0, 0.0, 0.0)):
    """``atoms`` with positions and cell vectors mapped by ``x -> r x + shift``."""
    out = atoms.copy()
    out.positions = atoms.positions @ r.T + np.asarray(shift)
    out.set_cell(atoms.cell[:] @ r.T, scale_atoms=False)
    return out


def _predict(model, structures: dict) -> dict:
    """``{name: {target: array}}`` for all structures, in one batch."""
    return dict(zip(structures, model.predict(list(structures.values()), batch_size=len(structures))))


def _nonzero(value, what: str) -> None:
    """An O(1) output (the model's outputs are, by construction): ~0 would make a comparison void."""
    assert np.abs(value).max() > 1e-2, f"{what}: prediction is ~0, the test would be void"


#: Backbone variants besides the default (elu, cosine cutoff, Bessel basis).
VARIANTS = {"default": {}, "swish-polynomial-gaussian": {"activation": "swish", "cutoff_function": "polynomial",
                                                         "radial_basis": "gaussian", "num_blocks": 1}}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("improper", [False, True], ids=["proper", "improper"])
def test_rotation(make_model, dtype, tol, structures, improper, variant, assert_close, assert_differs):
    model = make_model(dtype, seed=len(variant), **VARIANTS[variant])
    r = random_rotation(np.random.default_rng(7 + improper + len(variant)), improper=improper)
    assert np.isclose(np.linalg.det(r), -1.0 if improper else 1.0)
    ref = _predict(model, structures)
    got = _predict(model, {name: _transformed(a, r) for name, a in structures.items()})
    for name in structures:
        for key, head in model.heads.items():
            value = ref[name][key]
            expected = rotate(value, r, head.rank)
            assert_close(got[name][key], expected, tol, f"{name} {key} (rank {head.rank}, {head.level})")
            if head.rank and name in GENERIC:  # the rotation must matter, or the test proves nothing
                assert np.abs(value).max() > 1e-2, f"{name} {key}: prediction is ~0, the test would be void"
                assert_differs(expected, value, tol, f"{name} {key} rotated")


def test_inversion_is_parity(model, tol, structures, assert_close, assert_differs):
    """Pure inversion: rank-M outputs gain (-1)^M (odd-rank crystal tensors are polar)."""
    ref = _predict(model, structures)
    got = _predict(model, {name: _transformed(a, -np.eye(3)) for name, a in structures.items()})
    for name in structures:
        for key, head in model.heads.items():
            expected = (-1) ** head.rank * ref[name][key]
            assert_close(got[name][key], expected, tol, f"inverted {name} {key}")
            if name in GENERIC:  # nonzero: a wrong sign shows; odd ranks must flip
                _nonzero(ref[name][key], f"{name} {key}")
                if head.rank % 2:
                    assert_differs(expected, ref[name][key], tol, f"{name} {key} inverted")


def test_translation(model, tol, structures, assert_close, assert_differs):
    shift = np.array([1.7, -3.1, 0.4])
    ref = _predict(model, structures)
    got = _predict(model, {n: _transformed(a, np.eye(3), shift=shift) for n, a in structures.items()})
    one_moved = {}  # not a symmetry: one atom alone moved 0.2 Angstrom along the shift
    for name in GENERIC:
        one_moved[name] = structures[name].copy()
        one_moved[name].positions[0] += 0.2 * shift / np.linalg.norm(shift)
    moved = _predict(model, one_moved)
    for name in structures:
        for key in model.heads:
            assert_close(got[name][key], ref[name][key], tol, f"translated {name} {key}")
            if name in GENERIC:  # the output does depend on where the atoms are
                _nonzero(ref[name][key], f"{name} {key}")
                assert_differs(moved[name][key], ref[name][key], tol, f"{name} {key} with one atom moved")


def test_permutation(model, tol, structures, assert_close, assert_differs):
    rng = np.random.default_rng(1)
    perms = {}
    for name, atoms in structures.items():
        perms[name] = rng.permutation(len(atoms))
        while (perms[name] == np.arange(len(atoms))).all():
            perms[name] = rng.permutation(len(atoms))
    ref = _predict(model, structures)
    got = _predict(model, {name: atoms[perms[name]] for name, atoms in structures.items()})
    for name in structures:
        for key, head in model.heads.items():
            expected = ref[name][key][perms[name]] if head.level == "atom" else ref[name][key]
            assert_close(got[name][key], expected, tol, f"permuted {name} {key}")
            if name in GENERIC:  # atoms carry different tensors: the permutation moves them
                _nonzero(ref[name][key], f"{name} {key}")
                if head.level == "atom":
                    assert_differs(expected, ref[name][key], tol, f"{name} {key} permuted")


def test_batched_equals_single(model, tol, structures, assert_close, assert_differs):
    items = list(structures.values())
    batched = model.predict(items, batch_size=len(items))
    for name, atoms, b in zip(structures, items, batched):
        single = model.predict(atoms)[0]
        for key in model.heads:
            assert_close(b[key], single[key], tol, f"batched {name} {key}")
    # the structures of the batch differ (first atoms, structure tensors): a mix-up would show
    a, b = batched[list(structures).index("CH3OH")], batched[list(structures).index("triclinic")]
    for key, head in model.heads.items():
        _nonzero(a[key], f"CH3OH {key}")
        assert_differs(b[key][:3] if head.level == "atom" else b[key], a[key][:3] if head.level == "atom" else a[key],
                       tol, f"{key} of CH3OH and triclinic")


def test_no_gradient_across_frames(model, structures):
    """d(output of the middle structure) / d(positions of the others) is exactly zero."""
    frames = [structures["CH3OH"], structures["triclinic"], structures["H2O"]]
    batch = collate([model.graph(a) for a in frames], dtype=model.dtype)
    pos = batch[K.POSITIONS].requires_grad_(True)
    out = model(batch)
    mine = (batch[K.BATCH] == 1).numpy()
    gen = torch.Generator().manual_seed(0)
    for key, head in model.heads.items():
        part = out[key][batch[K.BATCH] == 1] if head.level == "atom" else out[key][1]
        weights = torch.randn(part.shape, generator=gen, dtype=torch.float64).to(part.dtype)
        (grad,) = torch.autograd.grad((part * weights).sum(), pos, retain_graph=True)
        grad = grad.detach().numpy()
        leak = np.abs(grad[~mine]).max()
        assert leak == 0.0, f"{key}: gradient of structure 1 reaches other structures ({leak:.1e})"
        assert np.abs(grad[mine]).max() > 0, f"{key}: structure 1 has no gradient at all"


# ----------------------------------------------------------------------------- cell choice
def _map_to_cell(big, small, tol=1e-6) -> np.ndarray:
    """Index of the atom of ``small`` that each atom of ``big`` is a lattice translate of."""
    frac_big = np.linalg.solve(small.cell[:].T, big.positions.T).T
    frac_small = small.get_scaled_positions(wrap=False)
    diff = frac_big[:, None, :] - frac_small[None, :, :]
    match = np.abs(diff - np.round(diff)).max(axis=-1) < tol
    assert (match.sum(axis=1) == 1).all(), "supercell atoms do not map one-to-one onto the cell"
    return match.argmax(axis=1)


DIAGONAL = 2 * np.eye(3, dtype=int)
NON_DIAGONAL = [[1, 1, 0], [-1, 1, 0], [0, 0, 1]]


@pytest.mark.parametrize(("name", "matrix"), [("triclinic", DIAGONAL), ("triclinic", NON_DIAGONAL),
                                              ("wurtzite", NON_DIAGONAL)],
                         ids=["triclinic-2x2x2", "triclinic-non-diagonal", "wurtzite-non-diagonal"])
def test_supercell(model, tol, structures, name, matrix, assert_close, assert_differs):
    """Per-atom tensors repeat, mean-reduced tensors are unchanged, sums scale with the cells."""
    cell = structures[name]
    big = make_supercell(cell, np.asarray(matrix))
    n_cells = round(abs(np.linalg.det(matrix)))
    assert len(big) == n_cells * len(cell)
    source = _map_to_cell(big, cell)
    ref = model.predict(cell)[0]
    got = model.predict(big)[0]
    for key, head in model.heads.items():
        if head.level == "atom":
            expected = ref[key][source]
        else:
            expected = ref[key] * (n_cells if head.reduce == "sum" else 1)
        assert_close(got[key], expected, tol, f"{name} supercell {matrix} {key}")
        if name in GENERIC:  # sum and mean differ; so do the atoms of the cell
            _nonzero(ref[key], f"{name} {key}")
            if head.level == "atom":
                assert_differs(expected, ref[key][np.roll(source, 1)], tol, f"{name} supercell {key}, atoms shifted")
            else:
                assert_differs(ref[key] * n_cells, ref[key], tol, f"{name} supercell {key}, sum vs mean")
