"""Periodic neighbour graphs with triplets, built once per structure (numpy, vectorised).

Every cell is validated first (:func:`check_cell`).  Edges come from vesin (a maintained
neighbour-list library), or from ASE's for the rare geometry vesin's cell list cannot take; every
neighbour inside ``cutoff`` is kept unless ``max_neighbors`` is given.  See :mod:`etgnn.data.keys`
for the edge direction and triplet conventions.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ..errors import DataError
from . import keys as K

__all__ = ["build_graph", "check_cell", "cell_heights", "effective_pbc", "MIN_DISTANCE", "MAX_CELL_CUTOFFS"]

#: Interatomic distances below this (Angstrom) are rejected as overlapping atoms.
MIN_DISTANCE = 0.1
#: A periodic cell vector longer than this many cutoffs is refused by :func:`check_cell`.
MAX_CELL_CUTOFFS = 1e4
#: Above this many cutoff-sized bins (an estimate from the cell heights and the atoms' extent) the
#: neighbour list is ASE's instead of vesin's: vesin 0.6 caps its cell list at 1e5 bins by shrinking
#: every direction alike and divides by zero (SIGFPE) when a thin direction drops to 0 bins (a
#: 2000 x 2000 x 3 Angstrom slab, a flat molecule 2000 Angstrom wide).
_MAX_VESIN_BINS = 1e4


def effective_pbc(atoms: Atoms, where: str = "structure") -> np.ndarray:
    """Periodic flags that are meaningful for ``atoms`` (:func:`check_cell` without a cutoff)."""
    return check_cell(atoms, None, where)


def cell_heights(periodic_vectors: np.ndarray) -> np.ndarray:
    """Distance between the opposite faces of a (possibly 1- or 2-periodic) cell, per periodic vector.

    Args:
        periodic_vectors: (m, 3) float, the m <= 3 periodic cell vectors (rows), Angstrom.

    Returns:
        (m,) float, Angstrom: the height of each vector over the span of the others (its length
        for m = 1, the parallelogram's heights for m = 2); 0 where the vectors are dependent.
    """
    p = np.asarray(periodic_vectors, dtype=float)
    lengths = np.linalg.norm(p, axis=1)
    if len(p) == 1:
        return lengths
    # the faces: the cross products of the other vectors (m = 3), or the other vector itself (m = 2)
    faces = np.cross(p[[1, 2, 0]], p[[2, 0, 1]]) if len(p) == 3 else p[::-1]
    size = abs(np.linalg.det(p)) if len(p) == 3 else np.linalg.norm(np.cross(p[0], p[1]))  # volume / area
    if size <= 1e-12 * np.prod(lengths):
        return np.zeros(len(p))
    return size / np.linalg.norm(faces, axis=1)


def check_cell(atoms: Atoms, cutoff: float | None = None, where: str = "structure") -> np.ndarray:
    """Validate the cell of ``atoms`` before a neighbour list; returns its meaningful periodic flags.

    The one check every structure passes through (:func:`build_graph`, hence training data,
    ``predict``, the ASE calculator, spectra and phonon commands).  An all-zero cell means a
    molecule, whatever the pbc flags say (a common extxyz quirk).  Refused, naming ``where``:

    - a cell with a non-finite entry;
    - a periodic direction whose cell vector is zero, or periodic vectors that are linearly
      dependent (zero volume / area);
    - a periodic direction thinner than :data:`MIN_DISTANCE` (every atom would overlap its own
      periodic image);
    - with ``cutoff``: a periodic vector longer than :data:`MAX_CELL_CUTOFFS` cutoffs (a unit
      error or a placeholder length; no vacuum gap needs it).

    Returns:
        (3,) bool.

    Raises:
        DataError: naming ``where``, the cell and what to do.
    """
    cell = np.asarray(atoms.cell[:], dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool).copy()
    if not np.isfinite(cell).all():
        raise DataError(f"{where}: the cell has non-finite entries (cell={cell.tolist()}); give a finite cell, "
                        "or none for a molecule")
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
    if not pbc.any():
        return pbc
    axes = np.flatnonzero(pbc)
    heights = cell_heights(cell[axes])
    if not heights.any():
        raise DataError(f"{where}: periodic cell has zero volume: its periodic vectors "
                        f"{', '.join('abc'[k] for k in axes)} are linearly dependent (cell={cell.tolist()})")
    thin = heights < MIN_DISTANCE
    if thin.any():
        k = int(np.flatnonzero(thin)[0])
        raise DataError(f"{where}: cell height along {'abc'[axes[k]]!r} is {heights[k]:.3g} Angstrom < {MIN_DISTANCE}: "
                        f"every atom overlaps its own periodic image (cell={cell.tolist()})")
    if cutoff is not None:
        long = lengths[axes] > MAX_CELL_CUTOFFS * cutoff
        if long.any():
            k = int(axes[np.flatnonzero(long)[0]])
            raise DataError(f"{where}: cell vector {'abc'[k]!r} is {lengths[k]:.3g} Angstrom long, more than "
                            f"{MAX_CELL_CUTOFFS:.0e} times the cutoff ({cutoff} Angstrom): not a sensible cell "
                            "(a unit error?); set pbc False along it for an isolated direction")
    return pbc


def _bins(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> float:
    """Upper estimate of the number of cutoff-sized bins of a cell list over this structure."""
    extent = np.full(3, float(np.ptp(pos, axis=0).max()) if len(pos) else 0.0)  # open directions
    if pbc.any():
        extent[pbc] = cell_heights(cell[pbc])
    return float(np.prod(np.maximum(1.0, np.floor(extent / cutoff))))


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
        DataError: non-finite positions, unknown elements, overlapping atoms or a bad cell
            (:func:`check_cell`).
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
    pbc = check_cell(atoms, cutoff, where)
    cell = np.asarray(atoms.cell[:], dtype=np.float64) if pbc.any() else np.zeros((3, 3))

    if _bins(pos, cell, pbc, cutoff) > _MAX_VESIN_BINS:
        from ase.neighborlist import primitive_neighbor_list

        i, j, shift_int, dist = primitive_neighbor_list("ijSd", pbc, cell, pos, float(cutoff), self_interaction=False)
    else:
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
