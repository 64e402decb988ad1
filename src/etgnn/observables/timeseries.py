"""Stream a trajectory through a model and keep only the time series a spectrum needs.

Frames are read one at a time with ``ase.io.iread`` (extxyz, ASE ``.traj``, anything ASE reads),
predicted in chunks of ``batch_size`` and reduced at once to a few numbers per frame (the 3
components of a current or a dipole, the 9 of a polarizability), so memory stays flat in
``n_atoms x n_frames``.

Velocities: the ``momenta`` of a frame (ASE units, as ASE writes extxyz and .traj) or, if absent,
a per-atom ``velocities`` array in ``velocity_unit`` (``"ase"``: Angstrom / (Angstrom sqrt(amu/eV))
as ``Atoms.get_velocities``; ``"A/fs"``); they are returned in Angstrom/fs.

Kinetic temperature: ``T = 2 K_int / (f k_B)`` averaged over the frames, where ``K_int`` is the
kinetic energy left after removing the centre-of-mass motion and, for a molecule (no periodic
direction), the rigid rotation ``L . I^-1 . L / 2`` of each frame, and ``f`` counts the remaining
degrees of freedom: ``3N - 3`` for a crystal, ``3N - 6`` for a molecule (``3N - 5`` if linear).
The removed motions are either conserved (NVE with zero total momentum or a molecule that does
not rotate: counting them would lower ``T`` by ``f / 3N``, 3x for H2O) or, in a canonical run,
projections of Gaussian velocities onto a fixed subspace with exactly ``k_B T / 2`` each, so the
estimate is unbiased both ways. Other constraints (fixed atoms, rigid bonds) cannot be seen in a
trajectory: give the temperature yourself there.

Time between frames: every frame may carry ``time_fs`` in its info (``etgnn.qm.md`` writes it);
:attr:`Series.times` then holds it and the spectra commands take the timestep from it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
from ase import units

from ..errors import ConfigError, DataError
from .born import DEFAULT_NAMES
from .spectra import polarization_current

__all__ = ["Series", "select_target", "frame_velocities", "internal_kinetic_energy", "degrees_of_freedom",
           "predict_series", "VELOCITY_UNITS", "KINDS", "TIME_KEY"]

VELOCITY_UNITS = ("ase", "A/fs")
#: kind of series -> (target level, target rank, what it is)
KINDS = {"current": ("atom", 2, "Born charges"), "dipole": ("structure", 1, "dipole"),
         "polarizability": ("structure", 2, "polarizability")}
#: per-frame info key holding the time of the frame, fs
TIME_KEY = "time_fs"


@dataclass
class Series:
    """What :func:`predict_series` keeps of a trajectory.

    Attributes:
        values: (n_frames, 3) current (e Angstrom/fs) or dipole, or (n_frames, 3, 3) polarizability,
            in the units of the model's target (times Angstrom/fs for the current).
        target: the model target used.
        volume: mean cell volume in Angstrom^3, None for molecules.
        temperature: mean kinetic temperature in K over ``dof`` degrees of freedom (module
            docstring), None without velocities or without internal degrees of freedom.
        n_atoms: atoms per frame.
        dof: degrees of freedom the temperature counts, None without velocities.
        dof_note: how ``dof`` was counted, e.g. ``"3N - 6 = 3: centre-of-mass motion and rotation removed"``.
        times: (n_frames,) the frames' ``time_fs`` (fs) if every frame has it, else None.
        unit: the target's declared ``unit`` (``""`` if it declares none).
    """

    values: np.ndarray
    target: str
    volume: float | None
    temperature: float | None
    n_atoms: int
    dof: int | None = None
    dof_note: str = ""
    times: np.ndarray | None = None
    unit: str = ""


def select_target(model, name: str | None, level: str, rank: int, what: str) -> str:
    """The target ``name`` of ``model``, or its only target of this level and rank; among several,
    the one named as a shipped model's default output (:data:`etgnn.observables.born.DEFAULT_NAMES`:
    ``born_charges``, ``epsilon``), as ``etgnn phonons`` chooses.

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
    preferred = [n for n in found if n in DEFAULT_NAMES]
    if len(found) > 1 and len(preferred) == 1:
        return preferred[0]
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


def degrees_of_freedom(atoms) -> tuple[int, str]:
    """Internal degrees of freedom of ``atoms`` and how they were counted (module docstring).

    A structure with any periodic direction loses the 3 centre-of-mass translations; one without
    also loses its rotations: 3, or 2 if its moments of inertia about the centre of mass have rank
    2 (linear), 0 for a single atom.
    """
    n = len(atoms)
    if atoms.pbc.any():
        return 3 * n - 3, f"3N - 3 = {3 * n - 3}: centre-of-mass motion removed"
    r = atoms.positions - atoms.get_center_of_mass()
    moments = np.linalg.eigvalsh(_inertia(atoms.get_masses()[None], r[None])[0])
    rotations = int(np.sum(moments > 1e-8 * max(moments.max(), 1e-300)))
    c = 3 + rotations
    linear = " (linear)" if rotations == 2 else ""
    return max(3 * n - c, 0), f"3N - {c} = {max(3 * n - c, 0)}: centre-of-mass motion and rotation{linear} removed"


def _inertia(m, r):
    """(..., 3, 3) inertia tensors of masses m (..., n) at positions r (..., n, 3) about the origin."""
    r2 = np.einsum("...k,...ki,...ki->...", m, r, r)
    return r2[..., None, None] * np.eye(3) - np.einsum("...k,...ki,...kj->...ij", m, r, r)


def internal_kinetic_energy(masses, positions, velocities, periodic: bool) -> np.ndarray:
    """Kinetic energy without the centre-of-mass motion and (``periodic=False``) the rigid rotation.

    Args:
        masses: (n_atoms,) amu.  positions: (n_frames, n_atoms, 3) Angstrom.
        velocities: (n_frames, n_atoms, 3) Angstrom/fs.  periodic: crystal (no rotation removed).

    Returns:
        (n_frames,) eV.
    """
    m = np.asarray(masses, dtype=float)
    v = np.asarray(velocities, dtype=float) / units.fs  # ASE velocity units: m v^2 in eV
    total = 0.5 * np.einsum("k,fki,fki->f", m, v, v)
    momentum = np.einsum("k,fki->fi", m, v)
    kinetic = total - 0.5 * np.einsum("fi,fi->f", momentum, momentum) / m.sum()
    if periodic:
        return kinetic
    pos = np.asarray(positions, dtype=float)
    r = pos - np.einsum("k,fki->fi", m, pos)[:, None] / m.sum()
    v_rel = v - momentum[:, None] / m.sum()
    ang = np.einsum("k,fki->fi", m, np.cross(r, v_rel))
    omega = np.einsum("fij,fj->fi", np.linalg.pinv(_inertia(np.broadcast_to(m, r.shape[:2]), r), rcond=1e-8, hermitian=True), ang)
    return kinetic - 0.5 * np.einsum("fi,fi->f", omega, ang)


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
    values, volumes, kinetic, times, chunk, vel = [], [], [], [], [], []
    first = None

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
            if first is None:
                first = atoms
            elif len(atoms) != len(first):
                raise DataError(f"{where}: {len(atoms)} atoms, but frame 0 has {len(first)}; a spectrum needs "
                                "one system throughout")
            elif (atoms.numbers != first.numbers).any():
                k = int(np.flatnonzero(atoms.numbers != first.numbers)[0])
                raise DataError(f"{where}: atom {k} is {atoms.get_chemical_symbols()[k]}, but "
                                f"{first.get_chemical_symbols()[k]} in frame 0 ({atoms.get_chemical_formula()} "
                                f"vs {first.get_chemical_formula()}); a spectrum needs the same atoms in the same "
                                "order in every frame")
            v = frame_velocities(atoms, velocity_unit, where)
            if v is None and kind == "current":
                raise DataError(f"{where}: no velocities or momenta; the current route needs them "
                                "(or use the dipole route)")
            if v is not None:
                kinetic.append(float(internal_kinetic_energy(atoms.get_masses(), atoms.positions[None], v[None],
                                                             bool(atoms.pbc.any()))[0]))
            t = atoms.info.get(TIME_KEY)
            times.append(float(t) if isinstance(t, (int, float, np.number)) else np.nan)
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
    temperature = dof = None
    note = ""
    if len(kinetic) == len(values):
        dof, note = degrees_of_freedom(first)
        if dof > 0:
            temperature = 2.0 * float(np.mean(kinetic)) / (dof * units.kB)
    times = None if np.isnan(times).any() else np.asarray(times)
    return Series(np.asarray(values, dtype=float), name, volume, temperature, len(first), dof, note, times,
                  model.config.targets[name].unit or "")
