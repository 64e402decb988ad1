"""Stream a trajectory through a model and keep only the time series a spectrum needs.

Frames are read one at a time with ``ase.io.iread`` (extxyz, ASE ``.traj``, anything ASE reads),
predicted in chunks of ``batch_size`` and reduced at once to a few numbers per frame (the 3
components of a current or a dipole, the 9 of a polarizability), so memory stays flat in
``n_atoms x n_frames``.

Velocities: the ``momenta`` of a frame (ASE units, as ASE writes extxyz and .traj) or, if absent,
a per-atom ``velocities`` array in ``velocity_unit`` (``"ase"``: Angstrom / (Angstrom sqrt(amu/eV))
as ``Atoms.get_velocities``; ``"A/fs"``); they are returned in Angstrom/fs.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
from ase import units

from ..errors import ConfigError, DataError
from .spectra import polarization_current

__all__ = ["Series", "select_target", "frame_velocities", "predict_series", "VELOCITY_UNITS", "KINDS"]

VELOCITY_UNITS = ("ase", "A/fs")
#: kind of series -> (target level, target rank, what it is)
KINDS = {"current": ("atom", 2, "Born charges"), "dipole": ("structure", 1, "dipole"),
         "polarizability": ("structure", 2, "polarizability")}


@dataclass
class Series:
    """What :func:`predict_series` keeps of a trajectory.

    Attributes:
        values: (n_frames, 3) current (e Angstrom/fs) or dipole, or (n_frames, 3, 3) polarizability,
            in the units of the model's target (times Angstrom/fs for the current).
        target: the model target used.
        volume: mean cell volume in Angstrom^3, None for molecules.
        temperature: mean kinetic temperature in K (3 N degrees of freedom), None without velocities.
        n_atoms: atoms per frame.
    """

    values: np.ndarray
    target: str
    volume: float | None
    temperature: float | None
    n_atoms: int


def select_target(model, name: str | None, level: str, rank: int, what: str) -> str:
    """The target ``name`` of ``model``, or its only target of this level and rank.

    Raises:
        ConfigError: naming the model's targets when ``name`` is unknown or the choice is not unique.
    """
    targets = model.config.targets
    listing = ", ".join(f"{n} ({t.level} rank {t.rank})" for n, t in targets.items())
    if name is not None:
        if name not in targets:
            raise ConfigError(f"the model has no target {name!r}; its targets: {listing}")
        t = targets[name]
        if (t.level, t.rank) != (level, rank):
            raise ConfigError(f"target {name!r} is {t.level} rank {t.rank}, but {what} need a target of "
                              f"level {level} and rank {rank}; the model's targets: {listing}")
        return name
    found = [n for n, t in targets.items() if (t.level, t.rank) == (level, rank)]
    if len(found) != 1:
        how = "no target" if not found else "several targets"
        raise ConfigError(f"the model has {how} of level {level} and rank {rank} for {what}; choose "
                          f"one with the target option; its targets: {listing}")
    return found[0]


def frame_velocities(atoms, velocity_unit: str = "ase", where: str = "") -> np.ndarray | None:
    """(n_atoms, 3) velocities of a frame in Angstrom/fs, or None if it has none."""
    if velocity_unit not in VELOCITY_UNITS:
        raise ConfigError(f"velocity unit must be one of {', '.join(VELOCITY_UNITS)}; got {velocity_unit!r}")
    if "momenta" in atoms.arrays:
        return atoms.get_velocities() * units.fs
    if "velocities" in atoms.arrays:
        v = np.asarray(atoms.arrays["velocities"], dtype=float)
        if v.shape != (len(atoms), 3):
            raise DataError(f"{where}: 'velocities' has shape {v.shape}, expected ({len(atoms)}, 3)")
        return v * units.fs if velocity_unit == "ase" else v
    return None


def _frames(path, index, fmt):
    import ase.io
    from ase.io.formats import UnknownFileTypeError

    if not os.path.isfile(path):
        raise DataError(f"trajectory not found: {path}")
    try:
        yield from ase.io.iread(path, index=index, format=fmt)
    except (OSError, ValueError, KeyError, IndexError, UnknownFileTypeError) as exc:
        raise DataError(f"{path}: cannot read the trajectory with ase.io ({type(exc).__name__}: {exc})") from exc


def predict_series(model, path: str | os.PathLike, kind: str, target: str | None = None,
                   batch_size: int = 32, velocity_unit: str = "ase", index: str = ":",
                   fmt: str | None = None, progress: bool | None = None) -> Series:
    """Predict ``kind`` ("current", "dipole" or "polarizability") for every frame of ``path``.

    Args:
        model: an etgnn model (``predict(list_of_atoms, batch_size)``).
        path: trajectory file.  target: model target (default: the unique one of the right kind).
        batch_size: frames per prediction chunk.  index, fmt: passed to ``ase.io.iread``.
        progress: progress bar; default only when stderr is a terminal.

    Returns:
        :class:`Series`.
    """
    if kind not in KINDS:
        raise ConfigError(f"series kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    path = os.fspath(path)
    name = select_target(model, target, *KINDS[kind])
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit="frame", desc=f"{kind} series")
    values, volumes, temps, chunk, vel = [], [], [], [], []
    n_atoms = None

    def flush():
        preds = model.predict(chunk, batch_size=batch_size)
        for p, v in zip(preds, vel):
            x = p[name]
            values.append(polarization_current(x, v) if kind == "current" else x)
        if bar is not None:
            bar.update(len(chunk))
        chunk.clear()
        vel.clear()

    try:
        for i, atoms in enumerate(_frames(path, index, fmt)):
            where = f"{path} frame {i}"
            if n_atoms is None:
                n_atoms = len(atoms)
            elif len(atoms) != n_atoms:
                raise DataError(f"{where}: {len(atoms)} atoms, but frame 0 has {n_atoms}; a spectrum needs "
                                "one system throughout")
            v = frame_velocities(atoms, velocity_unit, where)
            if v is None and kind == "current":
                raise DataError(f"{where}: no velocities or momenta; the current route needs them "
                                "(or use the dipole route)")
            if v is not None:
                temps.append(float(np.sum(atoms.get_masses()[:, None] * (v / units.fs) ** 2))
                             / (3 * len(atoms) * units.kB))
            volumes.append(atoms.get_volume() if atoms.cell.rank == 3 else np.nan)
            chunk.append(atoms)
            vel.append(v)
            if len(chunk) == batch_size:
                flush()
        if chunk:
            flush()
    finally:
        if bar is not None:
            bar.close()
    if not values:
        raise DataError(f"{path}: no frames")
    volume = float(np.mean(volumes)) if not np.isnan(volumes).any() else None
    temperature = float(np.mean(temps)) if len(temps) == len(values) else None
    return Series(np.asarray(values, dtype=float), name, volume, temperature, n_atoms)
