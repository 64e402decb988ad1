"""Periodic neighbour graphs with triplets, built once per structure (numpy, vectorised).

Edges come from vesin (a maintained neighbour-list library); every neighbour inside ``cutoff``
is kept unless ``max_neighbors`` is given.  See :mod:`etgnn.data.keys` for the edge direction and
triplet conventions.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ..errors import DataError
from . import keys as K

__all__ = ["build_graph", "effective_pbc", "MIN_DISTANCE"]

#: Interatomic distances below this (Angstrom) are rejected as overlapping atoms.
MIN_DISTANCE = 0.1


def effective_pbc(atoms: Atoms, where: str = "structure") -> np.ndarray:
    """Periodic flags that are meaningful for ``atoms``.

    An all-zero cell means a molecule, whatever the pbc flags say (a common extxyz quirk).  A
    periodic direction whose cell vector is zero, or a singular periodic cell, is an error.

    Returns:
        (3,) bool.

    Raises:
        DataError: naming ``where`` when the cell cannot be periodic as flagged.
    """
    cell = np.asarray(atoms.cell[:], dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool).copy()
    if not np.any(cell):
        return np.zeros(3, dtype=bool)
    lengths = np.linalg.norm(cell, axis=1)
    bad = pbc & (lengths < 1e-8)
    if bad.any():
        axes = "".join("abc"[k] for k in np.flatnonzero(bad))
        raise DataError(
            f"{where}: periodic along {axes!r} but that cell vector is zero; "
            "give a full cell or set pbc False along it"
        )
    if pbc.all() and abs(np.linalg.det(cell)) < 1e-8:
        raise DataError(f"{where}: periodic cell has zero volume (cell={cell.tolist()})")
    return pbc


def _triplets(center: np.ndarray, dist: np.ndarray, triplet_cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs of distinct edges with a common centre, both shorter than the cutoff.

    ``center`` must be sorted.  Returns (triplet_a, triplet_b) int64 edge indices.
    """
    short = np.flatnonzero(dist < triplet_cutoff)
    if short.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    c = center[short]
    # group boundaries of the (sorted) centres among short edges
    _, start, count = np.unique(c, return_index=True, return_counts=True)
    group_of = np.repeat(np.arange(len(start)), count)
    n_per = count[group_of]  # partners of each short edge, itself included
    a_local = np.repeat(np.arange(short.size), n_per)
    block_start = np.repeat(np.cumsum(n_per) - n_per, n_per)
    b_local = start[group_of][a_local] + (np.arange(a_local.size) - block_start)
    keep = a_local != b_local
    return short[a_local[keep]].astype(np.int64), short[b_local[keep]].astype(np.int64)


def build_graph(
    atoms: Atoms,
    cutoff: float = 6.0,
    triplet_cutoff: float = 4.0,
    max_neighbors: int | None = None,
    where: str = "structure",
) -> dict[str, np.ndarray]:
    """Neighbour graph of one structure.

    Args:
        atoms: the structure (positions in Angstrom).
        cutoff: edge cutoff radius, Angstrom.
        triplet_cutoff: only edges shorter than this form triplets, Angstrom (``<= cutoff``).
        max_neighbors: keep only the nearest ``max_neighbors`` of each atom.  Off by default: a
            fixed-count truncation picks arbitrarily among equidistant neighbours and so breaks the
            exact site symmetry of the edge expansion.
        where: how errors name the structure, e.g. ``"train.xyz structure 12"``.

    Returns:
        dict with the structural keys of :mod:`etgnn.data.keys` as numpy arrays (one structure,
        no batch axis; ``_cell`` is (3, 3)).  Edges are sorted by centre atom.

    Raises:
        DataError: non-finite positions, unknown elements, overlapping atoms or a bad cell.
    """
    if not 0 < triplet_cutoff <= cutoff:
        raise DataError(f"triplet_cutoff={triplet_cutoff} must be in (0, cutoff={cutoff}]")
    pos = np.asarray(atoms.positions, dtype=np.float64)
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    if len(numbers) == 0:
        raise DataError(f"{where}: structure has no atoms")
    if not np.isfinite(pos).all():
        bad = int(np.flatnonzero(~np.isfinite(pos).all(axis=1))[0])
        raise DataError(f"{where}: atom {bad} has non-finite coordinates {pos[bad].tolist()}")
    if numbers.min() < 1 or numbers.max() > 118:
        bad = int(np.flatnonzero((numbers < 1) | (numbers > 118))[0])
        raise DataError(f"{where}: atom {bad} has unknown atomic number {numbers[bad]} (expected 1-118)")
    pbc = effective_pbc(atoms, where)
    cell = np.asarray(atoms.cell[:], dtype=np.float64) if pbc.any() else np.zeros((3, 3))

    from vesin import NeighborList

    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shift_int, dist = nl.compute(pos, cell, pbc.tolist() if pbc.any() else False, "ijSd")
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    shift_int = shift_int.astype(np.float64)
    close = dist < MIN_DISTANCE
    if close.any():
        k = int(np.flatnonzero(close)[0])
        raise DataError(
            f"{where}: atoms {i[k]} and {j[k]} overlap (distance {dist[k]:.3g} Angstrom < {MIN_DISTANCE})"
        )
    order = np.lexsort((dist, i))  # by centre, nearest first
    i, j, shift_int, dist = i[order], j[order], shift_int[order], dist[order]
    if max_neighbors is not None:
        _, start, count = np.unique(i, return_index=True, return_counts=True)
        rank_in_group = np.arange(i.size) - np.repeat(start, count)
        keep = rank_in_group < max_neighbors
        i, j, shift_int, dist = i[keep], j[keep], shift_int[keep], dist[keep]
    shift = shift_int @ cell
    ta, tb = _triplets(i, dist, triplet_cutoff)
    return {
        K.POSITIONS: pos,
        K.NUMBERS: numbers,
        K.CELL: cell,
        K.PBC: pbc,
        K.EDGE_INDEX: np.stack([i, j]),
        K.EDGE_SHIFT: shift,
        K.TRIPLET_A: ta,
        K.TRIPLET_B: tb,
    }
