"""Pure tensor math: edge outer powers, isotropic tensors, index symmetries, Voigt, rotations.

All functions are stateless; torch functions accept any float dtype and keep it.  A rank-``M``
Cartesian tensor is stored with ``M`` trailing axes of length 3.  Inside etgnn every tensor is full
Cartesian; Voigt forms exist only at the input/output boundary.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from .errors import ShapeError

__all__ = [
    "outer_power",
    "outer_product",
    "isotropic_tensors",
    "parse_symmetry",
    "symmetrize",
    "project_permutations",
    "rotate",
    "random_rotation",
    "VOIGT_ORDERS",
    "voigt_to_full",
    "full_to_voigt",
    "to_cartesian",
    "index_patterns",
    "delta_placements",
    "placement_matrix",
    "levi_civita",
]


def outer_power(e: Tensor, m: int) -> Tensor:
    """``m``-fold outer power of vectors.

    Args:
        e: (n, 3) vectors.
        m: power, ``m >= 0``.

    Returns:
        (n, 3, ..., 3) with ``m`` axes of length 3; ``m = 0`` gives ones of shape (n,).

    >>> outer_power(torch.tensor([[1.0, 2.0, 0.0]]), 2)[0]
    tensor([[1., 2., 0.],
            [2., 4., 0.],
            [0., 0., 0.]])
    """
    return outer_product([e] * m, n=e.shape[0], like=e)


def outer_product(vectors: list[Tensor], n: int | None = None, like: Tensor | None = None) -> Tensor:
    """Ordered outer product ``v1 (x) v2 (x) ... (x) vm`` of lists of (n, 3) vectors.

    Args:
        vectors: list of ``m`` tensors of shape (n, 3).
        n, like: size and dtype/device template used when ``vectors`` is empty.

    Returns:
        (n, 3, ..., 3) with ``m`` axes; index ``k`` of the result belongs to ``vectors[k]``.
    """
    if not vectors:
        return like.new_ones(n)
    out = vectors[0]
    for v in vectors[1:]:
        out = out.unsqueeze(-1) * v.reshape(v.shape[0], *([1] * (out.dim() - 1)), 3)
    return out


def _pairings(idx: tuple[int, ...]):
    if not idx:
        yield ()
        return
    first, rest = idx[0], idx[1:]
    for k in range(len(rest)):
        for p in _pairings(rest[:k] + rest[k + 1 :]):
            yield ((first, rest[k]),) + p


@lru_cache(maxsize=None)
def _isotropic_np(rank: int) -> np.ndarray:
    if rank % 2 or rank == 0:
        return np.zeros((0,) + (3,) * rank) if rank else np.ones((1,))
    out = []
    for pairing in _pairings(tuple(range(rank))):
        t = np.ones((3,) * rank)
        grids = np.indices((3,) * rank)
        for a, b in pairing:
            t = t * (grids[a] == grids[b])
        out.append(t)
    return np.stack(out)


def isotropic_tensors(rank: int, dtype=torch.float64, device=None) -> Tensor:
    """Basis of O(3)-invariant (isotropic) Cartesian tensors of a given rank.

    Products of Kronecker deltas over all pairings of the indices: none for odd rank, ``delta_ab``
    for rank 2, the three ``delta delta`` products for rank 4, 15 for rank 6.  Rank 0 gives ``[1]``.

    Returns:
        (n_iso, 3, ..., 3).

    >>> isotropic_tensors(4).shape
    torch.Size([3, 3, 3, 3, 3])
    """
    return torch.as_tensor(_isotropic_np(rank), dtype=dtype, device=device)


def parse_symmetry(formula: str | None, rank: int) -> tuple[tuple[int, ...], ...]:
    """Permutation group of index symmetries given by a formula like ``"ijk=ikj"``.

    The formula lists equal index orders separated by ``=`` (e3nn/NequIP notation): ``"ij=ji"``
    symmetric rank 2, ``"ijk=ikj"`` piezoelectric, ``"ijkl=jikl=ijlk=klij"`` elastic.

    Returns:
        All permutations ``p`` (tuples) of the generated group; ``T`` is symmetric when
        ``T == T.permute(p)`` for each.

    Raises:
        ShapeError: on a malformed formula or one whose length is not ``rank``.
    """
    if not formula:
        return (tuple(range(rank)),)
    parts = [p.strip() for p in formula.split("=")]
    base = parts[0]
    if len(base) != rank or len(set(base)) != rank:
        raise ShapeError(f"symmetry formula {formula!r}: {base!r} must name {rank} distinct indices")
    gens = []
    for p in parts[1:]:
        if sorted(p) != sorted(base):
            raise ShapeError(f"symmetry formula {formula!r}: {p!r} is not a permutation of {base!r}")
        gens.append(tuple(base.index(c) for c in p))
    group = {tuple(range(rank))}
    frontier = list(group)
    while frontier:
        g = frontier.pop()
        for h in gens:
            comp = tuple(g[h[k]] for k in range(rank))
            if comp not in group:
                group.add(comp)
                frontier.append(comp)
    return tuple(sorted(group))


def symmetrize(t: Tensor, formula: str | None, rank: int) -> Tensor:
    """Project ``t`` (..., 3^rank as ``rank`` axes) onto tensors with the index symmetry ``formula``.

    The projection averages over the permutation group, so it is exact, idempotent and commutes
    with rotations.
    """
    return project_permutations(t, parse_symmetry(formula, rank), rank)


def project_permutations(t: Tensor, group, rank: int) -> Tensor:
    """Average of ``t`` (..., 3^rank as ``rank`` axes) over the index permutations ``group``
    (a group from :func:`parse_symmetry`, parsed once by the caller)."""
    if len(group) == 1:
        return t
    lead = t.dim() - rank
    acc = torch.zeros_like(t)
    for p in group:
        acc = acc + t.permute(*range(lead), *(lead + q for q in p))
    return acc / len(group)


def rotate(t, r, rank: int):
    """Apply the orthogonal matrix ``r`` (3, 3) to every index of a rank-``rank`` tensor.

    ``t'_{a b ...} = r_{a a'} r_{b b'} ... t_{a' b' ...}``; leading batch axes are kept.  Works on
    numpy arrays and torch tensors.  With ``det(r) = -1`` this is the polar-tensor transformation
    (a rank-``M`` tensor gains ``(-1)^M`` under inversion).

    >>> rotate(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), 1)
    tensor([0., 1., 0.])
    """
    out = t
    lead = t.ndim - rank
    if isinstance(t, Tensor):  # torch.tensordot names its argument dims, numpy's axes
        r = torch.as_tensor(r, dtype=t.dtype, device=t.device)
        for k in range(rank):
            out = torch.moveaxis(torch.tensordot(out, r, dims=([lead + k], [1])), -1, lead + k)
        return out
    for k in range(rank):
        out = np.moveaxis(np.tensordot(out, r, axes=([lead + k], [1])), -1, lead + k)
    return out


def random_rotation(rng: np.random.Generator, improper: bool = False) -> np.ndarray:
    """Uniformly random rotation matrix (3, 3); times ``-1`` (an improper rotation) if ``improper``."""
    q, rr = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(rr))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if improper else q


#: Voigt index orders: ``standard`` (xx, yy, zz, yz, xz, xy) and ``vasp`` (xx, yy, zz, xy, yz, zx).
VOIGT_ORDERS: dict[str, tuple[tuple[int, int], ...]] = {
    "standard": ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)),
    "vasp": ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0)),
}


def voigt_to_full(v: np.ndarray, rank: int, order: str = "standard") -> np.ndarray:
    """Expand a Voigt array to the full Cartesian tensor (no factors of 2).

    Supported: rank 2 from (6,) (symmetric tensor); rank 3 from (3, 6)
    (``e_ijk = e_iJ``, e.g. piezoelectric stress tensor, C/m^2); rank 4 from (6, 6)
    (``C_ijkl = C_IJ``, elastic tensor).  ``order`` picks the Voigt index order.

    Raises:
        ShapeError: if the shape does not fit ``rank`` or ``order`` is unknown.
    """
    if order not in VOIGT_ORDERS:
        raise ShapeError(f"unknown Voigt order {order!r}; expected one of {sorted(VOIGT_ORDERS)}")
    pairs = VOIGT_ORDERS[order]
    v = np.asarray(v, dtype=float)
    expected = {2: (6,), 3: (3, 6), 4: (6, 6)}.get(rank)
    if expected is None or v.shape != expected:
        raise ShapeError(f"Voigt form of a rank-{rank} tensor must have shape {expected}, got {v.shape}")
    full = np.zeros((3,) * rank)
    if rank == 2:
        for p, (a, b) in enumerate(pairs):
            full[a, b] = full[b, a] = v[p]
    elif rank == 3:
        for p, (a, b) in enumerate(pairs):
            full[:, a, b] = full[:, b, a] = v[:, p]
    else:
        for p, (a, b) in enumerate(pairs):
            for q, (c, d) in enumerate(pairs):
                for x, y in ((a, b), (b, a)):
                    for z, w in ((c, d), (d, c)):
                        full[x, y, z, w] = v[p, q]
    return full


def full_to_voigt(t: np.ndarray, rank: int, order: str = "standard") -> np.ndarray:
    """Inverse of :func:`voigt_to_full` (takes the upper-triangle component of each pair)."""
    pairs = VOIGT_ORDERS[order]
    t = np.asarray(t, dtype=float)
    if rank == 2:
        return np.array([t[a, b] for a, b in pairs])
    if rank == 3:
        return np.stack([t[:, a, b] for a, b in pairs], axis=1)
    if rank == 4:
        return np.array([[t[a, b, c, d] for c, d in pairs] for a, b in pairs])
    raise ShapeError(f"no Voigt form for rank {rank}")


def to_cartesian(values, rank: int, voigt_order: str = "standard") -> np.ndarray:
    """Interpret ``values`` as one rank-``rank`` Cartesian tensor and return shape (3,)*rank.

    Accepts the full array, the row-major flattened form (``3**rank`` numbers, ``T[a, b]`` at
    ``3 * a + b``) and, for ranks 2-4, the Voigt forms of :func:`voigt_to_full`.

    Raises:
        ShapeError: when the number of values fits none of these forms.
    """
    a = np.asarray(values, dtype=float)
    full_shape = (3,) * rank
    if a.shape == full_shape:
        return a
    if a.size == 3**rank:
        return a.reshape(full_shape)
    voigt_size = {2: 6, 3: 18, 4: 36}.get(rank)
    if voigt_size is not None and a.size == voigt_size:
        shape = {2: (6,), 3: (3, 6), 4: (6, 6)}[rank]
        return voigt_to_full(a.reshape(shape), rank, voigt_order)
    forms = f"{3**rank} (full, row-major)" + (f" or {voigt_size} (Voigt)" if voigt_size else "")
    raise ShapeError(f"a rank-{rank} tensor needs {forms} values, got {a.size} (shape {a.shape})")


def n_components(rank: int) -> int:
    """Number of Cartesian components ``3**rank``."""
    return int(math.prod((3,) * rank))


def index_patterns(rank: int) -> list[tuple[int, ...]]:
    """Three-body index patterns: which of the two triplet edges (0 = a, 1 = b) each index uses.

    For a triplet of edges ``(a, b)`` the rank-``M`` three-body terms are
    ``e_{p_1} (x) ... (x) e_{p_M}``.  Because triplets are ordered (both ``(a, b)`` and ``(b, a)``
    occur) patterns related by swapping ``a`` and ``b`` give the same sum, so one of each pair is
    kept (the one starting with ``a``), and the pure pattern ``a...a`` (a two-body shape) is dropped.
    Rank 2 gives ``[(0, 1)]`` (``e_a (x) e_b``); rank 3 gives ``(0,0,1), (0,1,0), (0,1,1)``; ranks 0
    and 1 give none.

    >>> index_patterns(0), index_patterns(1), index_patterns(2)
    ([], [], [(0, 1)])
    """
    # rank 0 has the single empty pattern, which has no first index: no three-body terms
    return [p for p in itertools.product((0, 1), repeat=rank) if p and p[0] == 0 and any(p)]


def delta_placements(rank: int) -> list[tuple[tuple[tuple[int, int], ...], tuple[int, ...]]]:
    """Mixed-term placements: Kronecker deltas on some pairs of slots, vectors on the others.

    A placement is ``(pairs, free)``: ``delta`` on each pair of slots in ``pairs`` (at least one)
    and edge vectors on the ``free`` slots (at least one; with no free slot the tensor is an
    isotropic one, :func:`isotropic_tensors`).  Rank 3 gives the three placements of
    ``e_i delta_jk``, ``e_j delta_ik``, ``e_k delta_ij``; rank 4 the six of ``e e delta``; ranks 0-2
    give none.

    >>> delta_placements(3)
    [(((0, 1),), (2,)), (((0, 2),), (1,)), (((1, 2),), (0,))]
    >>> len(delta_placements(4)), len(delta_placements(5))
    (6, 25)
    """
    out = []

    def walk(slots, pairs, free):
        if not slots:
            if pairs and free:
                out.append((tuple(pairs), tuple(sorted(free))))
            return
        first, rest = slots[0], slots[1:]
        for k, partner in enumerate(rest):
            walk(rest[:k] + rest[k + 1 :], pairs + [(first, partner)], free)
        walk(rest, pairs, free + [first])

    walk(list(range(rank)), [], [])
    return sorted(out)


@lru_cache(maxsize=None)
def _placement_np(pairs: tuple, free: tuple, rank: int) -> np.ndarray:
    grid = np.indices((3,) * rank).reshape(rank, -1)  # (rank, 3**rank): the index of every slot
    keep = np.ones(grid.shape[1], dtype=bool)
    for a, b in pairs:
        keep &= grid[a] == grid[b]
    row = np.zeros(grid.shape[1], dtype=np.int64)
    for slot in free:
        row = 3 * row + grid[slot]
    mat = np.zeros((3 ** len(free), 3**rank))
    mat[row[keep], np.flatnonzero(keep)] = 1.0
    return mat


def placement_matrix(pairs, free, rank: int) -> np.ndarray:
    """Linear map that puts a tensor on the ``free`` slots and deltas on ``pairs``.

    For a placement of :func:`delta_placements` and ``x`` of shape (n, 3**len(free)) (row-major,
    the free slots in increasing order), ``x @ placement_matrix(pairs, free, rank)`` is the
    (n, 3**rank) row-major tensor ``x_{free} * prod_pairs delta``.

    Returns:
        (3**len(free), 3**rank) array of zeros and ones.

    >>> m = placement_matrix(((1, 2),), (0,), 3)          # e_i delta_jk
    >>> (np.array([[1.0, 2.0, 3.0]]) @ m).reshape(3, 3, 3)[1]
    array([[2., 0., 0.],
           [0., 2., 0.],
           [0., 0., 2.]])
    """
    return _placement_np(tuple(map(tuple, pairs)), tuple(free), rank).copy()


def levi_civita(dtype=torch.float64, device=None) -> Tensor:
    """The Levi-Civita symbol ``epsilon_ijk`` (3, 3, 3): +1 for even permutations of (0, 1, 2)."""
    eps = torch.zeros(3, 3, 3, dtype=dtype, device=device)
    for (i, j, k), sign in (((0, 1, 2), 1), ((1, 2, 0), 1), ((2, 0, 1), 1),
                            ((0, 2, 1), -1), ((2, 1, 0), -1), ((1, 0, 2), -1)):
        eps[i, j, k] = sign
    return eps
