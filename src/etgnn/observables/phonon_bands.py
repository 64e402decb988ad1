"""Phonon band structures along high-symmetry paths (phonopy, NAC included) and their plots.

Paths come from ASE's Setyawan-Curtarolo special points of the primitive cell (no seekpath
needed); phonopy takes the q -> 0 limit at Gamma along each segment, so the LO-TO splitting shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .born import to_ase_atoms

__all__ = ["BandStructure", "band_structure", "plot_band_structure"]


@dataclass(frozen=True)
class BandStructure:
    """Phonon bands along a path: ``distances`` (n_q,) 1/Angstrom, ``frequencies`` (n_q, n) THz,
    ``segments`` (list of (start, stop) indices into the q-points), ``ticks`` [(distance, label)]."""

    distances: np.ndarray
    frequencies: np.ndarray
    segments: list
    ticks: list


def band_structure(phonon, path: str | None = None, npoints: int = 51) -> BandStructure:
    """Phonon bands along a high-symmetry path of the primitive cell (NAC included when set).

    Args:
        phonon: ``Phonopy`` with force constants.
        path: ASE path string (``"GXWKGLUWLK,UX"``; ``,`` breaks the path), None for ASE's default
            path of the lattice (Setyawan-Curtarolo).
        npoints: q-points per segment.

    phonopy takes the q -> 0 limit at Gamma along each segment, so the LO-TO splitting shows.
    """
    from ase.dft.kpoints import parse_path_string

    cell = to_ase_atoms(phonon.primitive).cell
    bandpath = cell.bandpath(npoints=0)
    special = bandpath.special_points
    path = path or bandpath.path
    try:
        pieces = parse_path_string(path)
        unknown = sorted({label for piece in pieces for label in piece} - set(special))
    except Exception as exc:
        raise DataError(f"band path {path!r}: {exc}") from exc
    if unknown:
        raise DataError(f"band path {path!r}: unknown points {', '.join(unknown)}; this lattice has "
                        f"{', '.join(special)}")
    segments = [np.linspace(special[a], special[b], npoints) for piece in pieces for a, b in zip(piece, piece[1:])]
    labels = [(a, b) for piece in pieces for a, b in zip(piece, piece[1:])]
    phonon.run_band_structure(segments, with_eigenvectors=False)
    bands = phonon.band_structure
    offset, previous, distances, ticks, bounds, start = 0.0, None, [], [], [], 0
    for d, (a, b) in zip(bands.distances, labels):
        d = np.asarray(d) - d[0] + offset  # phonopy leaves no gap at a break of the path
        if previous is None:
            ticks.append((d[0], a))
        elif previous != a:
            ticks[-1] = (ticks[-1][0], f"{previous}|{a}")
        ticks.append((d[-1], b))
        distances.append(d)
        bounds.append((start, start + len(d)))
        start, offset, previous = start + len(d), d[-1], b
    return BandStructure(np.concatenate(distances), np.concatenate([np.asarray(f) for f in bands.frequencies]),
                         bounds, ticks)


def _pretty(label: str) -> str:
    return "|".join("$\\Gamma$" if x == "G" else x for x in label.split("|"))


def plot_band_structure(curves, path, title: str = "", unit: str = "THz") -> Path:
    """Plot one or several band structures on the same path and write a PNG.

    Args:
        curves: list of ``(label, BandStructure)`` (same path for all); the first sets the ticks.
        path: output PNG.
        title: figure title.
        unit: ``"THz"`` or ``"cm-1"``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from phonopy.physical_units import get_physical_units

    scale = {"THz": 1.0, "cm-1": get_physical_units().THzToCm}[unit]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    styles = [dict(color="k", lw=1.2), dict(color="tab:red", lw=1.0, ls="--"), dict(color="tab:blue", lw=1.0, ls=":")]
    for (label, bands), style in zip(curves, styles * len(curves)):
        for n, (a, b) in enumerate(bands.segments):
            lines = ax.plot(bands.distances[a:b], bands.frequencies[a:b] * scale, **style)
            if n == 0 and label:
                lines[0].set_label(label)
    first = curves[0][1]
    for x, _ in first.ticks:
        ax.axvline(x, color="0.7", lw=0.6)
    ax.set_xticks([x for x, _ in first.ticks], [_pretty(t) for _, t in first.ticks])
    ax.set_xlim(first.distances[0], first.distances[-1])
    ax.axhline(0, color="0.7", lw=0.6)
    ax.set_ylabel(f"frequency ({'cm$^{-1}$' if unit == 'cm-1' else 'THz'})")
    ax.set_title(title, fontsize=10)
    if len(curves) > 1:
        ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    return save_figure(fig, path)


def save_figure(fig, path) -> Path:
    """Lay out ``fig``, write it to ``path`` (its folder made if needed), close it; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
