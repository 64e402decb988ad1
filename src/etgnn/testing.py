"""Reusable physics checks for etgnn models and for anyone who adds a head.

Symmetry of any model (for users who add a head; the project's own tests use them too):
:func:`equivariance_errors` (rotation, improper rotation, translation), :func:`permutation_errors`,
:func:`batch_errors` (batched == one by one), :func:`supercell_errors` (a crystal and its
supercell describe the same material), and :func:`assert_symmetric_model`, all of them at once.
Each returns ``{target: largest error relative to the largest |value|}``.

Continuity: :func:`cutoff_steps` moves one atom across a cutoff sphere and returns how much
every prediction changes; for a continuous model with a bounded derivative the change vanishes
with the move.

Completeness of the tensor expansion (issue: "every component a site's symmetry allows"):

- :func:`site_rotations` / :func:`point_group_rotations`: the Cartesian operations of an atom's
  site group or a crystal's point group, from spglib.
- :func:`invariant_projector` / :func:`allowed_dimension`: the projector onto rank-M tensors that
  a group leaves invariant (group average of ``R (x) ... (x) R``, times the index-symmetry
  projector), and its dimension: how many independent components the symmetry allows.
- :func:`sample_head_outputs` / :func:`spanned_dimension`: the tensors one head can produce at a
  site, sampled over random head weights with the backbone features fixed, and the dimension of
  their span.  A head is *complete* at a site when the spanned dimension equals the allowed one
  and every sample lies in the allowed subspace (no forbidden component).

>>> import etgnn
>>> from ase.build import molecule
>>> model = etgnn.build_model({"model": {"hidden_channels": 16, "triplet_channels": 8, "num_blocks": 1,
...                                      "dtype": "float64"},
...                            "targets": {"beta": {"key": "beta", "level": "structure", "rank": 3}}})
>>> water = molecule("H2O")                      # plane yz, C2 axis z: point group C2v
>>> ops = [np.diag(d) for d in ((1, 1, 1), (-1, -1, 1), (-1, 1, 1), (1, -1, 1))]
>>> allowed_dimension(ops, 3), spanned_dimension(model, water, "beta")
(7, 7)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import spglib
import torch
from ase import Atoms

from .data import keys as K
from .tensors import parse_symmetry

__all__ = [
    "site_rotations",
    "point_group_rotations",
    "invariant_projector",
    "allowed_dimension",
    "sample_head_outputs",
    "spanned_dimension",
    "numerical_rank",
    "SYMMORPHIC_GROUPS",
    "point_group_crystal",
    "molecule_rotations",
    "cutoff_steps",
    "equivariance_errors",
    "permutation_errors",
    "batch_errors",
    "supercell_errors",
    "assert_symmetric_model",
]


def _spg_cell(atoms: Atoms):
    return (np.asarray(atoms.cell[:]), atoms.get_scaled_positions(), atoms.numbers)


def _cartesian(rotations: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Fractional rotations (n, 3, 3) -> Cartesian ``R = L^T r L^-T`` (``L``: cell vectors as rows)."""
    lt = cell.T
    return np.einsum("ab,nbc,cd->nad", lt, rotations, np.linalg.inv(lt))


def site_rotations(atoms: Atoms, index: int, symprec: float = 1e-4) -> np.ndarray:
    """Cartesian rotations (n_ops, 3, 3) of the site group of atom ``index`` of a crystal (spglib).

    An operation ``x -> r x + t`` belongs to the site group when it maps the atom onto itself
    modulo a lattice vector.
    """
    data = spglib.get_symmetry_dataset(_spg_cell(atoms), symprec=symprec)
    x = atoms.get_scaled_positions()[index]
    moved = np.einsum("nab,b->na", data.rotations, x) + data.translations - x
    keep = np.abs(moved - np.round(moved)).max(axis=1) < 10 * symprec
    return _cartesian(data.rotations[keep].astype(float), np.asarray(atoms.cell[:]))


def point_group_rotations(atoms: Atoms, symprec: float = 1e-4) -> np.ndarray:
    """Cartesian rotations (n_ops, 3, 3) of a crystal's point group (spglib), duplicates removed."""
    data = spglib.get_symmetry_dataset(_spg_cell(atoms), symprec=symprec)
    unique = np.unique(data.rotations.reshape(-1, 9), axis=0).reshape(-1, 3, 3)
    return _cartesian(unique.astype(float), np.asarray(atoms.cell[:]))


#: Each of the 32 crystallographic point groups (Hermann-Mauguin) -> a symmorphic space group
#: with that point group, whose origin (Wyckoff 1a) has the whole point group as site symmetry.
SYMMORPHIC_GROUPS: dict[str, int] = {
    "1": 1, "-1": 2, "2": 3, "m": 6, "2/m": 10, "222": 16, "mm2": 25, "mmm": 47, "4": 75, "-4": 81,
    "4/m": 83, "422": 89, "4mm": 99, "-42m": 111, "4/mmm": 123, "3": 143, "-3": 147, "32": 150,
    "3m": 156, "-3m": 164, "6": 168, "-6": 174, "6/m": 175, "622": 177, "6mm": 183, "-6m2": 187,
    "6/mmm": 191, "23": 195, "m-3": 200, "432": 207, "-43m": 215, "m-3m": 221,
}

#: Two points in general position (fractional), chosen so that no two atoms of any of the
#: crystals of :func:`point_group_crystal` (before scaling) are closer than 0.6 Angstrom.
_GENERAL_POSITIONS = ((0.120, 0.395, 0.267), (0.077, 0.309, 0.197))


def point_group_crystal(point_group: str, radius: float = 3.0, neighbours: int = 14) -> Atoms:
    """A crystal whose point group, and the site group of its atom 0, is ``point_group``.

    Si at the origin of the symmorphic space group :data:`SYMMORPHIC_GROUPS` ``[point_group]``, O
    and N on the orbits of two general positions (one O and one N per operation; a single orbit
    at one distance often has more symmetry than the group), in a cell of the right crystal
    system, scaled down in steps of 5 % until atom 0 (site group ``point_group``) and atom 1 (site
    group 1) each have at least ``neighbours`` neighbours within ``radius`` Angstrom, and, for
    the 11 chiral groups, atom 0 has neighbours at two distances at least (the pseudoscalar of a
    single chiral orbit nearly vanishes): an
    environment that is generic within a model's triplet cutoff, not only in the infinite crystal
    (a site whose few nearby neighbours happen to have more symmetry than the crystal cannot carry
    the components that only the crystal's lower symmetry allows).
    """
    from ase.neighborlist import neighbor_list
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    sg = SYMMORPHIC_GROUPS[point_group]
    if sg <= 2:
        lattice = Lattice.from_parameters(5.1, 5.6, 6.0, 81, 76, 68)
    elif sg <= 15:
        lattice = Lattice.from_parameters(5.1, 5.6, 6.0, 90, 103, 90)
    elif sg <= 74:
        lattice = Lattice.from_parameters(5.1, 5.6, 6.0, 90, 90, 90)
    elif sg <= 142:
        lattice = Lattice.from_parameters(5.6, 5.6, 6.3, 90, 90, 90)
    elif sg <= 194:
        lattice = Lattice.from_parameters(6.0, 6.0, 6.4, 90, 90, 120)
    else:
        lattice = Lattice.cubic(7.0)
    structure = Structure.from_spacegroup(sg, lattice, ["Si", "O", "N"], [[0, 0, 0], *map(list, _GENERAL_POSITIONS)])
    atoms = AseAtomsAdaptor.get_atoms(structure)
    chiral = all(np.linalg.det(r) > 0 for r in spglib.get_symmetry_dataset(_spg_cell(atoms)).rotations)

    def poor(atoms):
        i, d = neighbor_list("id", atoms, radius)
        shells = np.unique(np.round(d[i == 0], 3)).size
        return np.bincount(i, minlength=2)[:2].min() < neighbours or (chiral and shells < 2)

    while poor(atoms):
        atoms.set_cell(atoms.cell[:] * 0.95, scale_atoms=True)
    return atoms


def molecule_rotations(atoms: Atoms, tol: float = 1e-3) -> tuple[Atoms, np.ndarray]:
    """A molecule made exactly symmetric, and the operations (n_ops, 3, 3) of its point group.

    Non-linear molecules: the operations found by pymatgen's ``PointGroupAnalyzer`` are refined
    together with the positions (Procrustes fit of each operation to the atom permutation it
    induces, then the positions averaged over the group, repeated) until both are exact to
    round-off; tabulated geometries are often symmetric only to 1e-7.  A linear molecule's group is
    infinite; it is represented by rotations of ``2 pi k / 12`` about the axis and the mirror
    planes containing it (plus the inversion when the molecule is centrosymmetric), which leave
    invariant exactly the tensors of rank < 6 that C_inf_v (D_inf_h) leaves invariant.

    Returns:
        the symmetrised copy of ``atoms`` (centre of mass at the origin) and its operations.
    """
    atoms = atoms.copy()
    atoms.positions -= atoms.get_center_of_mass()
    pos = atoms.positions
    axis = pos[np.argmax(np.linalg.norm(pos, axis=1))]
    if np.allclose(np.cross(pos, axis), 0.0, atol=tol):
        z = axis / np.linalg.norm(axis)
        atoms.positions = np.outer(pos @ z, z)
        x = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0])
        x /= np.linalg.norm(x)
        frame = np.stack([x, np.cross(z, x), z])  # rows: local axes
        ops = []
        for k in range(12):
            c, s = np.cos(np.pi * k / 6), np.sin(np.pi * k / 6)
            rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
            for extra in (np.eye(3), np.diag([1.0, -1.0, 1.0])):
                ops.append(frame.T @ rot @ extra @ frame)
        ops = np.array(ops)
        if _permutation(-np.eye(3), atoms.positions, atoms.numbers, tol) is not None:
            ops = np.concatenate([ops, -ops])
        return atoms, ops
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import PointGroupAnalyzer

    analyzer = PointGroupAnalyzer(AseAtomsAdaptor.get_molecule(atoms), tolerance=0.1)
    ops = np.array([op.rotation_matrix for op in analyzer.get_symmetry_operations()])
    for _ in range(20):
        pos = atoms.positions
        perms = [_permutation(op, pos, atoms.numbers, 0.05) for op in ops]
        if any(p is None for p in perms):
            raise AssertionError("an operation does not map the molecule onto itself")
        # Procrustes: the orthogonal R minimising |pos R^T - pos[perm]| (improper allowed), pulled
        # towards the current R so that directions the positions leave free (the normal of a
        # planar molecule) keep it; an exact R is a fixed point
        ops = np.array([_polar(pos[perm].T @ pos + 1e-3 * op) for op, perm in zip(ops, perms)])
        atoms.positions = np.mean([pos[perm] @ op for op, perm in zip(ops, perms)], axis=0)
    return atoms, ops


def _polar(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    return u @ vt


def _permutation(op: np.ndarray, pos: np.ndarray, numbers: np.ndarray, tol: float):
    """``perm`` with ``op @ pos[i] = pos[perm[i]]`` (same element), or None."""
    moved = pos @ op.T
    d = np.linalg.norm(moved[:, None, :] - pos[None, :, :], axis=-1) + 1e6 * (numbers[:, None] != numbers[None, :])
    perm = d.argmin(axis=1)
    return perm if d[np.arange(len(pos)), perm].max() < tol and len(set(perm)) == len(perm) else None


def _kron_power(r: np.ndarray, rank: int) -> np.ndarray:
    out = np.ones((1, 1))
    for _ in range(rank):
        out = np.kron(out, r)
    return out


def invariant_projector(rotations: Sequence[np.ndarray], rank: int, symmetry: str | None = None) -> np.ndarray:
    """Orthogonal projector onto rank-``rank`` tensors invariant under ``rotations``.

    Args:
        rotations: the (3, 3) Cartesian matrices of a finite group (proper and improper); a tensor
            transforms with one ``R`` per index (a polar tensor).
        rank: tensor rank M.
        symmetry: index-symmetry formula (``"ij=ji"``, ``"ijk=ikj"``, ...) the tensors must obey too.

    Returns:
        (3**M, 3**M) projector acting on row-major flattened tensors.
    """
    n = 3**rank
    group = np.mean([_kron_power(np.asarray(r, dtype=float), rank) for r in rotations], axis=0)
    perms = parse_symmetry(symmetry, rank)
    idx = np.arange(n).reshape((3,) * rank) if rank else np.arange(1)
    perm = np.zeros((n, n))
    for p in perms:
        perm[np.arange(n), np.transpose(idx, p).reshape(-1) if rank else idx] += 1.0 / len(perms)
    return group @ perm if rank else group


def numerical_rank(matrix: np.ndarray, rtol: float = 1e-8, reference: float | None = None) -> int:
    """Number of singular values above ``rtol`` times ``reference`` (default: the largest one)."""
    s = np.linalg.svd(np.atleast_2d(matrix), compute_uv=False)
    ref = s.max(initial=0.0) if reference is None else reference
    return int((s > rtol * ref).sum()) if ref > 0 else 0


def allowed_dimension(rotations: Sequence[np.ndarray], rank: int, symmetry: str | None = None) -> int:
    """How many independent rank-M tensor components the group (and index symmetry) allows."""
    return numerical_rank(invariant_projector(rotations, rank, symmetry), 1e-9, reference=1.0)


@torch.no_grad()
def sample_head_outputs(model, atoms: Atoms, target: str, n_samples: int | None = None, seed: int = 0,
                        std: float = 1.0) -> np.ndarray:
    """Tensors one head produces for ``atoms`` over random head weights, backbone features fixed.

    The head's parameters are redrawn ``n_samples`` times (normal, ``std``) and restored afterwards;
    ``scale`` and the edge/triplet normalisations are kept, so every term takes part.

    Args:
        model: an :class:`etgnn.ETGNN`.
        atoms: the structure.
        target: the head's name.
        n_samples: number of weight draws (default ``3**rank + 20``).

    Returns:
        ``(samples, reference)``: samples (n_samples, n_rows, 3**rank) float64 row-major flattened
        tensors, ``n_rows`` the number of atoms for per-atom targets and 1 for structure targets;
        ``reference`` the largest component of any atom's tensor before pooling, the O(1) scale on
        which a component that symmetry forbids is round-off.
    """
    from .data.batch import collate

    head = model.heads[target]
    n_samples = n_samples or 3**head.rank + 20
    batch = collate([model.graph(atoms)], dtype=model.dtype)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    geo = model.geometry(batch)
    feats = model.backbone(geo)
    saved = [p.detach().clone() for p in head.parameters()]
    gen = torch.Generator().manual_seed(seed)
    rows, reference = [], 0.0
    try:
        for _ in range(n_samples):
            for p in head.parameters():
                p.copy_((std * torch.randn(p.shape, generator=gen, dtype=torch.float64)).to(p.dtype))
            raw = head.atom_tensors(feats, geo)  # once: the output and the reference both come from it
            out = head(None, geo, raw=raw)
            rows.append(out.reshape(out.shape[0], -1).double().cpu().numpy())
            reference = max(reference, float(raw.abs().max()) * float(head.scale))
    finally:
        for p, s in zip(head.parameters(), saved):
            p.copy_(s)
    return np.stack(rows), reference


def spanned_dimension(model, atoms: Atoms, target: str, index: int | None = None, rtol: float = 1e-7,
                      **kwargs) -> int:
    """Dimension of the span of the tensors a head produces at atom ``index`` (per-atom targets)
    or for the structure, over random head weights (:func:`sample_head_outputs`).

    Singular values count when above ``rtol`` times the largest output component of any atom:
    a tensor that the symmetry forbids is a residue of round-off, not a direction.
    """
    samples, reference = sample_head_outputs(model, atoms, target, **kwargs)
    return numerical_rank(samples[:, index or 0], rtol, reference)


def cutoff_steps(model, atoms: Atoms, moving: int, partner: int, radius: float,
                 deltas: Sequence[float] = (1e-3, 1e-5, 1e-7)) -> np.ndarray:
    """Largest change of any prediction when atom ``moving`` crosses the sphere of ``radius``
    around atom ``partner``.

    The atom is put at distances ``radius - delta`` and ``radius + delta`` along the
    partner-to-moving direction and every target of ``model`` is predicted at both.

    Returns:
        (len(deltas),) the largest absolute change over all targets and components, per delta.
        Continuous outputs with a bounded derivative give changes proportional to ``delta`` (or
        smaller); a jump gives the same change for every delta.
    """
    direction = atoms.positions[moving] - atoms.positions[partner]
    direction = direction / np.linalg.norm(direction)
    steps = []
    for delta in deltas:
        out = []
        for r in (radius - delta, radius + delta):
            a = atoms.copy()
            a.positions[moving] = a.positions[partner] + r * direction
            out.append(model.predict(a)[0])
        steps.append(max(float(np.abs(out[0][k] - out[1][k]).max()) for k in out[0]))
    return np.array(steps)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max(initial=0.0) / max(np.abs(b).max(initial=0.0), 1e-30))


def _worst(errors: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    return {k: max(errors.get(k, 0.0), v) for k, v in new.items()}


def equivariance_errors(model, atoms: Atoms, rotation: np.ndarray, shift=(0.0, 0.0, 0.0)) -> dict[str, float]:
    """Largest relative error of ``T(R x + s) = R . T(x)`` per target (one R per tensor index).

    Args:
        rotation: (3, 3) orthogonal, proper or improper (a rank-M tensor then gains ``det^M``).
        shift: (3,) translation, Angstrom.
    """
    from .tensors import rotate

    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + np.asarray(shift)
    moved.set_cell(atoms.cell[:] @ rotation.T, scale_atoms=False)
    ref, got = model.predict([atoms, moved], batch_size=2)
    return {k: _relative(got[k], rotate(ref[k], rotation, model.heads[k].rank)) for k in ref}


def permutation_errors(model, atoms: Atoms, seed: int = 0) -> dict[str, float]:
    """Largest relative error of the predictions under a random permutation of the atoms."""
    perm = np.random.default_rng(seed).permutation(len(atoms))
    ref, got = model.predict([atoms, atoms[perm]], batch_size=2)
    return {k: _relative(got[k], ref[k][perm] if model.heads[k].level == "atom" else ref[k]) for k in ref}


def batch_errors(model, structures: Sequence[Atoms]) -> dict[str, float]:
    """Largest relative error between one batch of all ``structures`` and one structure at a time."""
    together = model.predict(list(structures), batch_size=len(structures))
    errors: dict[str, float] = {}
    for atoms, ref in zip(structures, together):
        alone = model.predict(atoms)[0]
        errors = _worst(errors, {k: _relative(ref[k], alone[k]) for k in ref})
    return errors


def supercell_errors(model, atoms: Atoms, repeat=(2, 2, 1)) -> dict[str, float]:
    """A periodic crystal and its supercell: per-atom tensors repeat, intensive (``mean``)
    structure tensors are equal, extensive (``sum``) ones scale with the number of cells."""
    big = atoms.repeat(repeat)
    n = int(np.prod(repeat))
    ref, got = model.predict([atoms, big], batch_size=2)
    errors = {}
    for k in ref:
        head = model.heads[k]
        if head.level == "atom":
            expected = np.concatenate([ref[k]] * n)  # ase's repeat puts the copies one after another
        else:
            expected = ref[k] * (n if head.reduce == "sum" else 1)
        errors[k] = _relative(got[k], expected)
    return errors


def assert_symmetric_model(model, molecule: Atoms, crystal: Atoms, tol: float, seed: int = 0) -> None:
    """Every check above on a molecule and a periodic crystal; raises AssertionError naming the
    check and the target whose relative error exceeds ``tol`` (1e-10 suits float64, 1e-5 float32)."""
    from .tensors import random_rotation

    rng = np.random.default_rng(seed)
    checks = {}
    for name, atoms in (("molecule", molecule), ("crystal", crystal)):
        checks[f"rotation ({name})"] = equivariance_errors(model, atoms, random_rotation(rng), rng.normal(size=3))
        checks[f"improper rotation ({name})"] = equivariance_errors(model, atoms, random_rotation(rng, improper=True))
        checks[f"permutation ({name})"] = permutation_errors(model, atoms, seed)
    checks["batch"] = batch_errors(model, [molecule, crystal])
    checks["supercell"] = supercell_errors(model, crystal)
    bad = [f"{check}: {k} {err:.1e}" for check, errors in checks.items() for k, err in errors.items() if err > tol]
    if bad:
        raise AssertionError("not symmetric within %.0e: %s" % (tol, "; ".join(bad)))
