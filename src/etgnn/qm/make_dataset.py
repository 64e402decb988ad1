"""``etgnn make-dataset``: label sampled small molecules with PySCF and write extended XYZ.

Each finished structure is appended to the output file at once (one write, flush, fsync), so an
interrupted run loses at most the structures still being computed. Re-running the same command
resumes: structures already in the file (identified by ``molecule`` and ``sample`` number, see
:func:`etgnn.qm.molecules.sample_plan`) are skipped, a partially written last frame is cut
off, and when everything is done the frames are put back into plan order.

Frame layout (one frame per structure, no cell, ``pbc`` False):

* per-atom arrays: ``forces`` (n_atoms, 3) eV/Angstrom; ``apt`` (n_atoms, 9) e, row-major
  ``apt[A, 3 * i + j] = d mu_i / d R_{A,j}`` (first index field, second displacement);
* info: ``energy`` eV, ``dipole`` (3,) e*Angstrom, ``polarizability`` (9,) row-major
  Angstrom^3, ``molecule``, ``sample``, ``method`` (e.g. ``"RHF/def2-SVP"``), ``seed``,
  ``sigma`` (Angstrom), ``units`` (:data:`UNITS`).

ASE's reader moves ``energy``, ``forces`` and ``dipole`` to a ``SinglePointCalculator``
(``atoms.get_potential_energy()``, ``get_forces()``, ``get_dipole_moment()``); ``apt`` and
``polarizability`` stay in ``atoms.arrays`` / ``atoms.info``.
"""

from __future__ import annotations

import io
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from etgnn.errors import ConfigError, DataError, EtgnnError
from etgnn.qm.labels import (
    DEFAULT_BASIS,
    DEFAULT_FIELD_AU,
    DEFAULT_METHOD,
    METHODS,
    compute_labels,
    require_pyscf,
)
from etgnn.qm.molecules import MOLECULES, SampleSpec, sample_geometry, sample_plan

__all__ = ["UNITS", "labels_to_atoms", "read_done", "make_dataset", "add_parser", "run_from_args"]

#: units string stored in every frame's info
UNITS = "energy:eV forces:eV/Angstrom dipole:e*Angstrom polarizability:Angstrom^3 apt:e"
#: info keys that must agree between an existing file and a resumed run
_RUN_KEYS = ("method", "seed", "sigma")


def labels_to_atoms(symbols, positions, labels, spec: SampleSpec, seed: int, sigma: float):
    """One extxyz frame.

    Args:
        symbols: ``n_atoms`` chemical symbols.
        positions: (n_atoms, 3) positions, Angstrom.
        labels: :class:`etgnn.qm.labels.Labels` of this structure.
        spec: identity of the structure in the sample plan.
        seed: global seed used to sample it.
        sigma: displacement standard deviation used to sample it, Angstrom.

    Returns:
        ``ase.Atoms`` with the arrays and info keys described in the module docstring.
    """
    from ase import Atoms

    atoms = Atoms(symbols=symbols, positions=positions, pbc=False)
    atoms.new_array("forces", np.asarray(labels.forces, dtype=np.float64))
    atoms.new_array("apt", np.asarray(labels.apt, dtype=np.float64).reshape(len(atoms), 9))
    atoms.info.update(
        energy=float(labels.energy),
        dipole=np.asarray(labels.dipole, dtype=np.float64),
        polarizability=np.asarray(labels.polarizability, dtype=np.float64).reshape(9),
        molecule=spec.molecule,
        sample=int(spec.sample),
        method=labels.method,
        seed=int(seed),
        sigma=float(sigma),
        units=UNITS,
    )
    return atoms


def _frame_blocks(path: Path) -> tuple[list[bytes], int]:
    """Split an extxyz file into complete frames.

    Returns:
        ``(blocks, end)``: the raw bytes of each complete frame and the byte offset where the
        complete frames end (smaller than the file size if the last frame was cut off).
    """
    lines = path.read_bytes().splitlines(keepends=True)
    blocks, end, i = [], 0, 0
    while i < len(lines):
        try:
            n_atoms = int(lines[i].strip())
        except ValueError:
            break
        block = lines[i : i + n_atoms + 2]
        if len(block) < n_atoms + 2 or not block[-1].endswith(b"\n"):
            break
        blocks.append(b"".join(block))
        end += len(blocks[-1])
        i += n_atoms + 2
    return blocks, end


def read_done(path: str | os.PathLike, method: str, seed: int, sigma: float) -> set[tuple[str, int]]:
    """Structures already present in an output file, after cutting off a partial last frame.

    Args:
        path: extxyz file written by :func:`make_dataset` (may not exist).
        method: expected ``"METHOD/basis"``; seed, sigma: expected sampling parameters.

    Returns:
        set of ``(molecule, sample)`` already labelled.

    Raises:
        DataError: a frame misses the identity keys or was made with other parameters.
    """
    from ase.io import read

    path = Path(path)
    if not path.exists():
        return set()
    blocks, end = _frame_blocks(path)
    if end < path.stat().st_size:
        warnings.warn(f"{path}: cutting off an incomplete last frame after {len(blocks)} frames")
        with open(path, "r+b") as fh:
            fh.truncate(end)
    if not blocks:
        return set()
    expected = {"method": method, "seed": int(seed), "sigma": float(sigma)}
    done = set()
    for k, atoms in enumerate(read(path, index=":", format="extxyz")):
        if "molecule" not in atoms.info or "sample" not in atoms.info:
            raise DataError(f"{path} frame {k}: no 'molecule'/'sample' info; not written by "
                            "make-dataset, choose another --output")
        for key in _RUN_KEYS:
            got = atoms.info.get(key)
            got = got.item() if isinstance(got, np.generic) else got
            if got != expected[key]:
                raise DataError(
                    f"{path} frame {k} ({atoms.info['molecule']}-{atoms.info['sample']}): "
                    f"{key!r} is {got!r}, this run uses {expected[key]!r}; resume with the "
                    "same --method/--basis/--seed/--sigma or choose another --output"
                )
        done.add((str(atoms.info["molecule"]), int(atoms.info["sample"])))
    return done


def _sort_file(path: Path, plan: list[SampleSpec]) -> None:
    """Rewrite ``path`` with frames in plan order (frames not in the plan go last)."""
    from ase.io import read

    blocks, _ = _frame_blocks(path)
    order = {(s.molecule, s.sample): s.index for s in plan}
    keys = [order.get((a.info["molecule"], a.info["sample"]), len(order) + k)
            for k, a in enumerate(read(path, index=":", format="extxyz"))]
    if keys == sorted(keys):
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(blocks[k] for k in np.argsort(keys, kind="stable")))
    os.replace(tmp, path)


def _init_worker() -> None:
    """Pool initializer: one OpenMP/PySCF thread per worker process."""
    from pyscf import lib

    lib.num_threads(1)


def _label_one(job):
    """Worker: compute one structure; returns ``(spec, symbols, positions, labels|error, s)``."""
    spec, sigma, seed, method, basis, field_au = job
    start = time.perf_counter()
    symbols, positions = sample_geometry(spec.molecule, spec.sample, sigma, seed)
    try:
        result = compute_labels(symbols, positions, method, basis, field_au)
    except EtgnnError as exc:
        result = exc
    return spec, symbols, positions, result, time.perf_counter() - start


def _append(fh, atoms) -> None:
    """Append one frame in a single write, then flush and fsync."""
    from ase.io import write

    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    fh.write(buf.getvalue())
    fh.flush()
    os.fsync(fh.fileno())


def _results(jobs, workers: int):
    """Iterate over finished jobs, in-process or with a spawn pool (completion order)."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_label_one, jobs)
        return
    import multiprocessing as mp

    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers
    try:
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker)
    finally:
        if old is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = old
    with pool:
        yield from pool.imap_unordered(_label_one, jobs, chunksize=1)


def make_dataset(
    output: str | os.PathLike,
    molecules=MOLECULES,
    n_per_molecule: int = 45,
    sigma: float = 0.06,
    method: str = DEFAULT_METHOD,
    basis: str = DEFAULT_BASIS,
    seed: int = 0,
    workers: int = 1,
    field_au: float = DEFAULT_FIELD_AU,
    progress: bool = True,
) -> int:
    """Label ``len(molecules) * n_per_molecule`` sampled structures into an extxyz file.

    Args:
        output: extxyz path; appended to and resumed if it exists.
        molecules: molecule names (see :data:`etgnn.qm.molecules.MOLECULES`).
        n_per_molecule: structures per molecule.
        sigma: Cartesian displacement standard deviation, Angstrom.
        method: one of :data:`etgnn.qm.labels.METHODS`.
        basis: PySCF basis name.
        seed: global sampling seed.
        workers: parallel worker processes (each single-threaded when > 1).
        field_au: finite-field step, atomic units.
        progress: show a tqdm progress bar.

    Returns:
        number of structures computed by this call (0 if the file was complete).

    Raises:
        ConfigError: bad argument. DataError: existing file made with other parameters.
        EtgnnError: PySCF missing, or some structures failed (all others are written).
    """
    require_pyscf()
    from tqdm import tqdm

    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    method = method.upper()
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    plan = sample_plan(list(molecules), n_per_molecule)
    sample_geometry(plan[0].molecule, 0, sigma, seed)  # validates sigma before any work
    path = Path(output)
    done = read_done(path, f"{method}/{basis}", seed, sigma)
    jobs = [(s, sigma, seed, method, basis, field_au)
            for s in plan if (s.molecule, s.sample) not in done]
    failed, seconds = [], []
    path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(plan), initial=len(plan) - len(jobs), unit="structure",
               disable=not progress, desc="make-dataset")
    with open(path, "a", encoding="utf-8") as fh, bar:
        for spec, symbols, positions, result, wall in _results(jobs, min(workers, len(jobs) or 1)):
            if isinstance(result, Exception):
                failed.append(f"{spec.molecule}-{spec.sample}: {result}")
            else:
                _append(fh, labels_to_atoms(symbols, positions, result, spec, seed, sigma))
                seconds.append(wall)
            bar.update(1)
    if seconds and progress:
        print(f"make-dataset: {len(seconds)} structures, {np.mean(seconds):.2f} s each "
              f"(per worker), file {path}", file=sys.stderr)
    if failed:
        raise EtgnnError(f"{len(failed)} structure(s) failed, others written to {path}; "
                         "re-run to retry:\n" + "\n".join(failed))
    _sort_file(path, plan)
    return len(seconds)


def _molecule_list(text: str) -> list[str]:
    """Parse ``"H2O, NH3"`` into ``["H2O", "NH3"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def run_from_args(args) -> int:
    """Run :func:`make_dataset` from parsed ``make-dataset`` arguments; returns exit code 0."""
    make_dataset(
        output=args.output,
        molecules=_molecule_list(args.molecules),
        n_per_molecule=args.n_per_molecule,
        sigma=args.sigma,
        method=args.method,
        basis=args.basis,
        seed=args.seed,
        workers=args.workers,
        field_au=args.field,
    )
    return 0


def add_parser(subparsers):
    """Register the ``make-dataset`` subcommand on an argparse ``subparsers`` object.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        the new sub-parser; its ``func`` default is :func:`run_from_args`.
    """
    p = subparsers.add_parser(
        "make-dataset",
        help="label sampled small molecules with PySCF (needs pip install 'etgnn[qm]')",
        description="Label sampled small molecules (energy, forces, dipole, polarizability, "
        "atomic polar tensors) with PySCF and write extended XYZ; an existing output is resumed.",
    )
    p.add_argument("-o", "--output", default="molecules.extxyz",
                   help="extxyz output; resumed if it exists (default: %(default)s)")
    p.add_argument("--molecules", default=",".join(MOLECULES),
                   help="comma-separated molecule names (default: %(default)s)")
    p.add_argument("--n-per-molecule", type=int, default=45,
                   help="structures per molecule (default: %(default)s)")
    p.add_argument("--sigma", type=float, default=0.06,
                   help="Gaussian displacement per Cartesian component, Angstrom (default: %(default)s)")
    p.add_argument("--method", type=str.upper, choices=METHODS, default=DEFAULT_METHOD,
                   help="RHF or a restricted Kohn-Sham functional (default: %(default)s)")
    p.add_argument("--basis", default=DEFAULT_BASIS, help="PySCF basis name (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel worker processes, one thread each (default: %(default)s)")
    p.add_argument("--field", type=float, default=DEFAULT_FIELD_AU,
                   help="finite-field step, atomic units (default: %(default)s)")
    p.set_defaults(func=run_from_args)
    return p
