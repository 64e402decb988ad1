"""Site symmetry of real crystals: predictions obey every space-group operation found by spglib.

For an operation ``x -> R x + t`` that maps atom ``i`` onto atom ``g(i)``, an exactly equivariant
model predicts ``T_g(i) = R . T_i`` (one ``R`` per index) for per-atom tensors and ``T = R . T``
for crystal tensors; ``R_cart = L^T R_frac L^-T`` with ``L`` the cell vectors as rows.  As a
consequence a tensor that the point group forbids vanishes: no rank-3 (piezoelectric-like) tensor
in a centrosymmetric crystal, no force on a site whose symmetry fixes no vector (paper Table S1).
The non-centrosymmetric crystals show the same checks can fail: there these tensors are nonzero.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import spglib
from ase import Atoms
from ase.build import bulk
from ase.spacegroup import crystal
from ase.spacegroup.symmetrize import refine_symmetry

from etgnn.tensors import rotate

pytestmark = pytest.mark.usefixtures("single_thread")

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "phonopy_born"


def _rutile():
    return crystal(["Ti", "O"], basis=[(0, 0, 0), (0.305, 0.305, 0)], spacegroup=136,
                   cellpar=[4.594, 4.594, 2.959, 90, 90, 90])


def _cubic_batio3():
    return crystal(["Ba", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)], spacegroup=221,
                   cellpar=[4.0, 4.0, 4.0, 90, 90, 90])


def _tetragonal_batio3():
    """P4mm: Ti and O displaced along c (the ferroelectric phase)."""
    return crystal(["Ba", "Ti", "O", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.515), (0.5, 0.5, 0.975), (0.5, 0, 0.48)],
                   spacegroup=99, cellpar=[3.99, 3.99, 4.03, 90, 90, 90])


def _quartz():
    """alpha-quartz, P3_221 (Si-O 1.61 Angstrom)."""
    return crystal(["Si", "O"], basis=[(0.4697, 0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)], spacegroup=154,
                   cellpar=[4.916, 4.916, 5.405, 90, 90, 120])


#: name -> (builder, centrosymmetric)
BUILT = {
    "NaCl": (lambda: bulk("NaCl", "rocksalt", a=5.64), True),
    "wurtzite ZnO": (lambda: bulk("ZnO", "wurtzite", a=3.25, c=5.2), False),
    "rutile TiO2": (_rutile, True),
    "cubic BaTiO3": (_cubic_batio3, True),
    "tetragonal BaTiO3": (_tetragonal_batio3, False),
    "alpha-quartz": (_quartz, False),
}
#: phonopy example unit cells (read when the shared data folder exists) -> centrosymmetric
FILES = {"ZnO": False, "SnO2": True, "TiO2-anatase": True, "MgO": True, "SiO2-HP": True}
CASES = [pytest.param(name, id=name) for name in BUILT] + [
    pytest.param(f"file:{name}", id=f"phonopy {name}",
                 marks=pytest.mark.skipif(not (DATA / f"{name}.POSCAR-unitcell").exists(),
                                          reason=f"{DATA} not available"))
    for name in FILES
]


def _crystal(name: str) -> tuple[Atoms, bool]:
    """The structure, symmetrised to machine precision, and whether it is centrosymmetric."""
    if name.startswith("file:"):
        from ase.io import read

        stem = name[len("file:"):]
        atoms, centro = read(DATA / f"{stem}.POSCAR-unitcell", format="vasp"), FILES[stem]
    else:
        builder, centro = BUILT[name]
        atoms = builder()
    refine_symmetry(atoms, symprec=1e-3)  # POSCAR coordinates carry only a few digits
    return atoms, centro


def _operations(atoms: Atoms) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every space-group operation as (Cartesian rotation (3, 3), atom map ``g`` (n_atoms,))."""
    frac = atoms.get_scaled_positions()
    data = spglib.get_symmetry_dataset((atoms.cell[:], frac, atoms.numbers), symprec=1e-5)
    lat = atoms.cell[:]
    ops = []
    for rot, trans in zip(data.rotations, data.translations):
        r_cart = lat.T @ rot @ np.linalg.inv(lat.T)
        assert np.allclose(r_cart @ r_cart.T, np.eye(3), atol=1e-10), "spglib rotation is not orthogonal"
        image = frac @ rot.T + trans
        diff = image[:, None, :] - frac[None, :, :]
        match = (np.abs(diff - np.round(diff)).max(-1) < 1e-6) & (atoms.numbers[:, None] == atoms.numbers)
        assert (match.sum(1) == 1).all(), "an operation does not permute the atoms"
        ops.append((r_cart, match.argmax(1)))
    return ops


def _invariant_projector(rotations, rank: int) -> np.ndarray:
    """Projector (3^rank, 3^rank) onto rank-``rank`` tensors invariant under every rotation."""
    eye = np.eye(3**rank).reshape(3**rank, *(3,) * rank)
    return np.mean([rotate(eye, r, rank).reshape(3**rank, -1) for r in rotations], axis=0)


@pytest.mark.parametrize("name", CASES)
def test_space_group_operations(model, target_tol, name, assert_close):
    atoms, _ = _crystal(name)
    ops = _operations(atoms)
    assert len(ops) > 1
    pred = model.predict(atoms)[0]
    for k, (r, g) in enumerate(ops):
        for key, head in model.heads.items():
            value = pred[key]
            if head.level == "atom":  # T_{g(i)} = R . T_i
                assert_close(value[g], rotate(value, r, head.rank), target_tol(model, key),
                             f"{name} op {k} per-atom {key}")
            else:
                assert_close(value, rotate(value, r, head.rank), target_tol(model, key), f"{name} op {k} crystal {key}")


@pytest.mark.parametrize("name", CASES)
def test_forbidden_components_vanish(model, tol, name, assert_close):
    """Tensor components are predicted if and only if the (site or point) group allows them."""
    atoms, _ = _crystal(name)
    ops = _operations(atoms)
    pred = model.predict(atoms)[0]
    for key, head in model.heads.items():
        if head.level == "atom":
            groups = {i: [r for r, g in ops if g[i] == i] for i in range(len(atoms))}
            items = [(f"atom {i}", pred[key][i], groups[i]) for i in groups]
        else:
            items = [("crystal", pred[key], [r for r, _ in ops])]
        for where, value, rotations in items:
            proj = _invariant_projector(rotations, head.rank)
            flat = value.reshape(-1)
            assert_close(flat, proj @ flat, tol, f"{name} {where} {key}: symmetry-forbidden part")
            if not np.abs(proj).max() > 1e-12:
                continue
            # allowed: the model must really predict it, well above round-off (the zero checks can fail)
            assert np.abs(flat).max() > 10 * tol, f"{name} {where} {key}: allowed but ~0"


@pytest.mark.parametrize("name", CASES)
def test_rank3_crystal_tensor_zero_iff_centrosymmetric(model, tol, name, assert_close):
    atoms, centro = _crystal(name)
    has_inversion = any(np.allclose(r, -np.eye(3)) for r, _ in _operations(atoms))
    assert has_inversion == centro, f"{name}: expected centrosymmetric={centro}"
    pred = model.predict(atoms)[0]
    scale = max(np.abs(pred["atom_rank3"]).max(), 1.0)  # size of what cancels in the mean
    for key in ("piezo", "rank3_sum"):
        if centro:
            assert_close(pred[key], np.zeros((3, 3, 3)), tol, f"{name} {key}", scale=scale)
        else:
            assert np.abs(pred[key]).max() > 10 * tol * scale, f"{name} {key}: non-centrosymmetric but ~0"


def test_broken_symmetry_is_detected(model, tol, assert_differs):
    """The operations of the ideal crystal do not hold once its atoms are rattled."""
    atoms, _ = _crystal("rutile TiO2")
    ops = _operations(atoms)
    atoms.rattle(0.02, seed=0)
    pred = model.predict(atoms)[0]["atom_rank2"]
    worst = max(np.abs(pred[g] - rotate(pred, r, 2)).max() for r, g in ops)
    assert_differs(worst, 0.0, tol, "rattled rutile per-atom rank 2 under the ideal operations")
