"""Reference geometries of small molecules and the deterministic structure sample.

Reference geometries (Angstrom, centred on the centroid) are built from rounded experimental
bond lengths and angles (NIST CCCBDB, listed below); they are *not* optimised with the labelling
method, so the forces at the reference geometry are small but non-zero. The methyl group of
CH3OH is idealised (tetrahedral, staggered with respect to the O-H bond).

    ========  ==========================================================
    molecule  internal coordinates
    ========  ==========================================================
    H2O       r(OH) 0.958, angle(HOH) 104.5
    NH3       r(NH) 1.012, angle(HNH) 106.7
    CH4       r(CH) 1.087, tetrahedral
    CH2O      r(CO) 1.205, r(CH) 1.111, angle(HCH) 116.1
    HF        r(HF) 0.917
    CO2       r(CO) 1.162, linear
    CH3OH     r(CO) 1.427, r(OH) 0.956, r(CH) 1.094, angle(COH) 108.9
    ========  ==========================================================

Sampling: structure ``sample`` of molecule ``name`` is the reference geometry plus independent
Gaussian Cartesian displacements (standard deviation ``sigma`` per component, Angstrom), then
re-centred on its centroid and rotated by a uniformly random rotation, so the set is not
aligned. Its random stream depends only on ``(seed, name, sample)``, so adding molecules or
samples never changes the structures already drawn (which makes resuming runs safe).
"""

from __future__ import annotations

import difflib
import zlib
from dataclasses import dataclass

import numpy as np

from etgnn.errors import ConfigError

__all__ = [
    "MOLECULES",
    "REFERENCE_GEOMETRIES",
    "SampleSpec",
    "reference_geometry",
    "random_rotation",
    "sample_geometry",
    "sample_plan",
]

#: name -> (chemical symbols, positions (n_atoms, 3) in Angstrom)
REFERENCE_GEOMETRIES: dict[str, tuple[tuple[str, ...], tuple[tuple[float, float, float], ...]]] = {
    "H2O": (
        ("O", "H", "H"),
        ((0.000000, -0.391003, 0.000000), (0.757481, 0.195501, 0.000000),
         (-0.757481, 0.195501, 0.000000)),
    ),
    "NH3": (
        ("N", "H", "H", "H"),
        ((0.000000, 0.000000, -0.285771), (0.937530, 0.000000, 0.095257),
         (-0.468765, 0.811924, 0.095257), (-0.468765, -0.811924, 0.095257)),
    ),
    "CH4": (
        ("C", "H", "H", "H", "H"),
        ((0.000000, 0.000000, 0.000000), (0.627580, 0.627580, 0.627580),
         (0.627580, -0.627580, -0.627580), (-0.627580, 0.627580, -0.627580),
         (-0.627580, -0.627580, 0.627580)),
    ),
    "CH2O": (
        ("C", "O", "H", "H"),
        ((0.000000, 0.000000, -0.007291), (0.000000, 0.000000, 1.197709),
         (0.942695, 0.000000, -0.595209), (-0.942695, 0.000000, -0.595209)),
    ),
    "HF": (
        ("F", "H"),
        ((0.000000, 0.000000, -0.458500), (0.000000, 0.000000, 0.458500)),
    ),
    "CO2": (
        ("C", "O", "O"),
        ((0.000000, 0.000000, 0.000000), (0.000000, 0.000000, 1.162000),
         (0.000000, 0.000000, -1.162000)),
    ),
    "CH3OH": (
        ("C", "O", "H", "H", "H", "H"),
        ((-0.344944, -0.150743, 0.000000), (1.082056, -0.150743, 0.000000),
         (-0.709611, -1.182176, 0.000000), (-0.709611, 0.364974, 0.893247),
         (-0.709611, 0.364974, -0.893247), (1.391721, 0.753715, 0.000000)),
    ),
}

#: default molecule order of the shipped dataset
MOLECULES: tuple[str, ...] = tuple(REFERENCE_GEOMETRIES)


@dataclass(frozen=True)
class SampleSpec:
    """Identity of one structure of the deterministic sample list.

    Attributes:
        index: position ``k`` in the sample list (molecule-major order).
        molecule: molecule name, a key of :data:`REFERENCE_GEOMETRIES`.
        sample: replica number ``j`` of this molecule, ``0 <= j < n_per_molecule``.
    """

    index: int
    molecule: str
    sample: int


def _check_name(name: str) -> None:
    """Raise :class:`ConfigError` (with the closest valid name) if ``name`` is unknown."""
    if name not in REFERENCE_GEOMETRIES:
        close = difflib.get_close_matches(name, list(REFERENCE_GEOMETRIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown molecule {name!r}: expected one of {', '.join(REFERENCE_GEOMETRIES)}{hint}"
        )


def reference_geometry(name: str) -> tuple[list[str], np.ndarray]:
    """Reference geometry of a molecule.

    Args:
        name: molecule name, e.g. ``"H2O"`` (see :data:`MOLECULES`).

    Returns:
        ``(symbols, positions)``: list of ``n_atoms`` chemical symbols and a float64 array
        (n_atoms, 3) of Cartesian positions in Angstrom, centroid at the origin.

    Raises:
        ConfigError: unknown molecule name.

    >>> symbols, pos = reference_geometry("H2O")
    >>> symbols, pos.shape
    (['O', 'H', 'H'], (3, 3))
    """
    _check_name(name)
    symbols, positions = REFERENCE_GEOMETRIES[name]
    return list(symbols), np.array(positions, dtype=np.float64)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed proper rotation matrix (Haar measure on SO(3)).

    Built from a normalised Gaussian quaternion ``(w, x, y, z)``.

    Args:
        rng: numpy random generator (consumes 4 normal draws).

    Returns:
        (3, 3) float64 orthogonal matrix with determinant +1; a column vector ``v`` rotates
        to ``R @ v`` (row-vector positions rotate as ``pos @ R.T``).

    >>> R = random_rotation(np.random.default_rng(0))
    >>> bool(np.allclose(R @ R.T, np.eye(3))), round(float(np.linalg.det(R)), 6)
    (True, 1.0)
    """
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _stream(seed: int, name: str, sample: int) -> np.random.Generator:
    """Random generator that depends only on ``(seed, name, sample)`` (crc32 of the name)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(sample)])


def sample_geometry(name: str, sample: int, sigma: float, seed: int) -> tuple[list[str], np.ndarray]:
    """Displaced and randomly rotated geometry number ``sample`` of molecule ``name``.

    Args:
        name: molecule name (see :data:`MOLECULES`).
        sample: replica number ``j >= 0``.
        sigma: standard deviation of each Cartesian displacement component, Angstrom (>= 0).
        seed: global seed of the data set.

    Returns:
        ``(symbols, positions)`` with positions (n_atoms, 3) float64 in Angstrom, centroid at
        the origin.

    Raises:
        ConfigError: unknown molecule, negative ``sigma`` or ``sample``.

    >>> _, a = sample_geometry("HF", 3, 0.05, seed=1)
    >>> _, b = sample_geometry("HF", 3, 0.05, seed=1)
    >>> bool(np.array_equal(a, b))
    True
    """
    if sigma < 0 or not np.isfinite(sigma):
        raise ConfigError(f"sigma must be a finite non-negative length in Angstrom, got {sigma}")
    if sample < 0:
        raise ConfigError(f"sample number must be >= 0, got {sample}")
    symbols, ref = reference_geometry(name)
    rng = _stream(seed, name, sample)
    pos = ref + sigma * rng.standard_normal(ref.shape)
    pos -= pos.mean(axis=0)
    return symbols, pos @ random_rotation(rng).T


def sample_plan(molecules: list[str] | tuple[str, ...], n_per_molecule: int) -> list[SampleSpec]:
    """Deterministic list of structures to compute, molecule-major.

    Args:
        molecules: molecule names, no duplicates.
        n_per_molecule: number of structures per molecule (>= 1).

    Returns:
        ``len(molecules) * n_per_molecule`` specs; spec ``k`` has ``index == k``.

    Raises:
        ConfigError: unknown or duplicated molecule, ``n_per_molecule < 1``.

    >>> [(s.index, s.molecule, s.sample) for s in sample_plan(["HF", "H2O"], 2)]
    [(0, 'HF', 0), (1, 'HF', 1), (2, 'H2O', 0), (3, 'H2O', 1)]
    """
    if n_per_molecule < 1:
        raise ConfigError(f"n_per_molecule must be >= 1, got {n_per_molecule}")
    if len(set(molecules)) != len(molecules):
        raise ConfigError(f"duplicated molecule in {list(molecules)}")
    for name in molecules:
        _check_name(name)
    return [
        SampleSpec(k * n_per_molecule + j, name, j)
        for k, name in enumerate(molecules)
        for j in range(n_per_molecule)
    ]
