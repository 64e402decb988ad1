"""Pure tensor math: Voigt forms, a known piezoelectric tensor, symmetrisation, isotropic tensors,
index-symmetry formulas, rotations; and the doctests of :mod:`etgnn.tensors`."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
import torch

import etgnn.tensors as T
from etgnn.errors import ShapeError

RNG = np.random.default_rng(0)
FORMULAS = {2: "ij=ji", 3: "ijk=ikj", 4: "ijkl=jikl=ijlk=klij"}


def _rotation_about_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_doctests():
    result = doctest.testmod(T, verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("order", sorted(T.VOIGT_ORDERS))
@pytest.mark.parametrize("rank", [2, 3, 4])
def test_voigt_round_trips(rank, order):
    shape = {2: (6,), 3: (3, 6), 4: (6, 6)}[rank]
    v = RNG.normal(size=shape)
    if rank == 4:
        v = v + v.T  # the elastic tensor has major symmetry
    full = T.voigt_to_full(v, rank, order)
    np.testing.assert_array_equal(T.full_to_voigt(full, rank, order), v)
    np.testing.assert_array_equal(T.voigt_to_full(T.full_to_voigt(full, rank, order), rank, order), full)
    sym = T.symmetrize(torch.as_tensor(full), FORMULAS[rank], rank).numpy()
    np.testing.assert_allclose(sym, full, atol=1e-15)  # Voigt forms are exactly the symmetric tensors
    np.testing.assert_array_equal(T.to_cartesian(v.reshape(-1), rank, order), full)


def test_known_piezoelectric_tensor_of_wurtzite():
    """ZnO (6mm): e33 = 1.32, e31 = -0.57, e15 = -0.48 C/m^2, in both Voigt orders."""
    e33, e31, e15 = 1.32, -0.57, -0.48
    standard = np.zeros((3, 6))  # xx yy zz yz xz xy
    standard[2, :3] = [e31, e31, e33]
    standard[0, 4] = standard[1, 3] = e15
    vasp = np.zeros((3, 6))  # xx yy zz xy yz zx
    vasp[2, :3] = [e31, e31, e33]
    vasp[0, 5] = vasp[1, 4] = e15
    full = T.voigt_to_full(standard, 3, "standard")
    np.testing.assert_array_equal(T.voigt_to_full(vasp, 3, "vasp"), full)
    assert full[2, 2, 2] == e33 and full[2, 0, 0] == full[2, 1, 1] == e31
    assert full[0, 0, 2] == full[0, 2, 0] == full[1, 1, 2] == full[1, 2, 1] == e15
    assert np.count_nonzero(full) == 7
    # invariant under the 6mm point group (sixfold axis along z, mirror x -> -x), but polar:
    for r in (_rotation_about_z(np.pi / 3), np.diag([-1.0, 1.0, 1.0])):
        np.testing.assert_allclose(T.rotate(full, r, 3), full, atol=1e-15)
    np.testing.assert_allclose(T.rotate(full, -np.eye(3), 3), -full)


def test_cubic_elastic_tensor():
    c11, c12, c44 = 165.0, 64.0, 79.0  # silicon, GPa
    v = np.zeros((6, 6))
    v[:3, :3] = c12
    np.fill_diagonal(v[:3, :3], c11)
    v[3, 3] = v[4, 4] = v[5, 5] = c44
    full = T.voigt_to_full(v, 4)
    assert full[0, 0, 0, 0] == c11 and full[0, 0, 1, 1] == c12
    assert full[1, 2, 1, 2] == full[2, 1, 1, 2] == full[1, 2, 2, 1] == c44  # no factor 2 in C_IJ
    np.testing.assert_allclose(T.rotate(full, _rotation_about_z(np.pi / 2), 4), full, atol=1e-12)
    assert np.abs(T.rotate(full, _rotation_about_z(np.pi / 4), 4) - full).max() > 1.0  # anisotropic


@pytest.mark.parametrize("rank", [2, 3, 4])
def test_symmetrize_is_an_idempotent_projection_commuting_with_rotations(rank):
    formula = FORMULAS[rank]
    t = torch.as_tensor(RNG.normal(size=(5,) + (3,) * rank))  # leading batch axis
    s = T.symmetrize(t, formula, rank)
    torch.testing.assert_close(T.symmetrize(s, formula, rank), s, rtol=0, atol=1e-14)
    for perm in T.parse_symmetry(formula, rank):
        torch.testing.assert_close(s.permute(0, *(1 + p for p in perm)), s, rtol=0, atol=1e-14)
    assert (s - t).abs().max() > 0.1  # a random tensor is not symmetric: the projection acts
    # orthogonal projection: the removed part is orthogonal to every symmetric tensor
    assert abs(float(((t - s) * s).sum())) < 1e-12
    r = torch.as_tensor(T.random_rotation(np.random.default_rng(rank), improper=True))
    torch.testing.assert_close(T.symmetrize(T.rotate(t, r, rank), formula, rank), T.rotate(s, r, rank),
                               rtol=0, atol=1e-13)
    assert T.symmetrize(t, None, rank) is t


@pytest.mark.parametrize(("rank", "count"), [(0, 1), (1, 0), (2, 1), (3, 0), (4, 3), (5, 0), (6, 15)])
def test_isotropic_tensors_are_rotation_invariant(rank, count):
    iso = T.isotropic_tensors(rank)
    assert iso.shape == (count,) + (3,) * rank
    if count == 0 or rank == 0:
        return
    for improper in (False, True):
        r = torch.as_tensor(T.random_rotation(np.random.default_rng(rank), improper=improper))
        torch.testing.assert_close(T.rotate(iso, r, rank), iso, rtol=0, atol=1e-13)
    assert torch.linalg.matrix_rank(iso.reshape(count, -1)) == count  # linearly independent


def test_isotropic_rank2_and_rank4():
    np.testing.assert_array_equal(T.isotropic_tensors(2)[0].numpy(), np.eye(3))
    d = np.eye(3)
    expected = {np.einsum("ab,cd->abcd", d, d).tobytes(), np.einsum("ac,bd->abcd", d, d).tobytes(),
                np.einsum("ad,bc->abcd", d, d).tobytes()}
    assert {t.numpy().tobytes() for t in T.isotropic_tensors(4)} == expected


@pytest.mark.parametrize(("formula", "rank", "size"), [
    ("ij=ji", 2, 2), ("ijk=ikj", 3, 2), ("ijk=jki", 3, 3), ("ijk=jik=ikj", 3, 6),
    ("ijkl=jikl=ijlk=klij", 4, 8), (None, 2, 1), ("", 3, 1),
])
def test_parse_symmetry_groups(formula, rank, size):
    group = T.parse_symmetry(formula, rank)
    assert len(group) == size and tuple(range(rank)) in group
    for g, h in itertools.product(group, repeat=2):  # closed under composition
        assert tuple(g[h[k]] for k in range(rank)) in group


@pytest.mark.parametrize(("formula", "rank", "match"), [
    ("ij=ji", 3, r"symmetry formula 'ij=ji': 'ij' must name 3 distinct indices"),
    ("iij=iji", 3, r"'iij' must name 3 distinct indices"),
    ("ijk=ikl", 3, r"'ikl' is not a permutation of 'ijk'"),
    ("ijk=ij", 3, r"'ij' is not a permutation of 'ijk'"),
])
def test_parse_symmetry_errors(formula, rank, match):
    with pytest.raises(ShapeError, match=match):
        T.parse_symmetry(formula, rank)


def test_voigt_errors():
    with pytest.raises(ShapeError, match=r"Voigt form of a rank-3 tensor must have shape \(3, 6\), got \(6,\)"):
        T.voigt_to_full(np.zeros(6), 3)
    with pytest.raises(ShapeError, match=r"unknown Voigt order 'abaqus'"):
        T.voigt_to_full(np.zeros(6), 2, "abaqus")
    with pytest.raises(ShapeError, match=r"a rank-2 tensor needs 9 \(full, row-major\) or 6 \(Voigt\) values, got 5"):
        T.to_cartesian(np.zeros(5), 2)


def test_to_cartesian_is_row_major():
    np.testing.assert_array_equal(T.to_cartesian(np.arange(9.0), 2), np.arange(9.0).reshape(3, 3))


@pytest.mark.parametrize("rank", [0, 1, 2, 3, 4])
def test_rotate_composes_and_matches_einsum(rank):
    rng = np.random.default_rng(rank)
    r1, r2 = T.random_rotation(rng), T.random_rotation(rng, improper=True)
    for r in (r1, r2):
        assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(abs(np.linalg.det(r)), 1.0)
    assert np.linalg.det(r2) < 0
    t = rng.normal(size=(4,) + (3,) * rank)
    np.testing.assert_allclose(T.rotate(T.rotate(t, r1, rank), r2, rank), T.rotate(t, r2 @ r1, rank), atol=1e-13)
    np.testing.assert_allclose(T.rotate(t, -np.eye(3), rank), (-1) ** rank * t, atol=0)  # polar tensor
    np.testing.assert_allclose(T.rotate(torch.as_tensor(t), torch.as_tensor(r1), rank).numpy(),
                               T.rotate(t, r1, rank), atol=1e-13)
    if rank == 2:
        np.testing.assert_allclose(T.rotate(t, r1, 2), r1 @ t @ r1.T, atol=1e-13)
    if rank == 3:
        np.testing.assert_allclose(T.rotate(t, r1, 3), np.einsum("ai,bj,ck,nijk->nabc", r1, r1, r1, t), atol=1e-13)


def test_outer_products_keep_index_order():
    a, b = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.5, -1.0, 4.0]])
    np.testing.assert_array_equal(T.outer_product([a, b])[0].numpy(), np.outer(a[0], b[0]))
    np.testing.assert_array_equal(T.outer_product([a, b, a])[0].numpy(), np.einsum("i,j,k->ijk", a[0], b[0], a[0]))
    assert T.outer_power(a, 0).shape == (1,)
    assert T.index_patterns(3) == [(0, 0, 1), (0, 1, 0), (0, 1, 1)]
