"""Neighbour graphs: edges and edge vectors against ASE, triplets against a brute-force reference,
periodic images, molecules, bad structures (errors), and isolated atoms."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, graphene, molecule
from ase.neighborlist import neighbor_list

from etgnn.data import keys as K
from etgnn.data.graph import build_graph
from etgnn.errors import DataError
from etgnn.tensors import isotropic_tensors

pytestmark = pytest.mark.usefixtures("single_thread")

CUTOFF, TRIPLET_CUTOFF = 5.0, 3.5


def _triclinic() -> Atoms:
    atoms = Atoms("LiOSiZn", scaled_positions=[[0.1, 0.2, 0.3], [0.6, 0.1, 0.8], [0.3, 0.7, 0.4], [0.8, 0.6, 0.1]],
                  cell=[[4.2, 0.3, -0.4], [0.6, 4.5, 0.2], [-0.5, 0.7, 4.8]], pbc=True)
    atoms.rattle(0.05, seed=1)
    return atoms


STRUCTURES = {
    "triclinic": _triclinic,
    "wurtzite": lambda: bulk("ZnO", "wurtzite", a=3.25, c=5.2),
    "fcc Cu (one atom)": lambda: bulk("Cu", "fcc", a=3.6),
    "graphene (pbc T T F)": lambda: graphene(formula="C2", a=2.46, vacuum=5.0),
    "CH3OH": lambda: molecule("CH3OH"),
}


def _edge_vectors(g) -> np.ndarray:
    i, j = g[K.EDGE_INDEX]
    return g[K.POSITIONS][j] + g[K.EDGE_SHIFT] - g[K.POSITIONS][i]


def _integer_shifts(g) -> np.ndarray:
    if not g[K.PBC].any():
        return np.zeros((g[K.EDGE_INDEX].shape[1], 3), dtype=int)
    shifts = np.linalg.solve(g[K.CELL].T, g[K.EDGE_SHIFT].T).T
    assert np.allclose(shifts, np.round(shifts), atol=1e-9), "edge shifts are not lattice vectors"
    return np.round(shifts).astype(int)


@pytest.mark.parametrize("name", STRUCTURES)
def test_edges_match_ase(name):
    atoms = STRUCTURES[name]()
    g = build_graph(atoms, CUTOFF, TRIPLET_CUTOFF)
    i, j = g[K.EDGE_INDEX]
    ours = {(a, b, *s): d for a, b, s, d in zip(i, j, map(tuple, _integer_shifts(g)), _edge_vectors(g))}
    assert len(ours) == len(i), "duplicate edges"
    ai, aj, a_shift, a_vec = neighbor_list("ijSD", atoms, CUTOFF)
    theirs = {(a, b, *s): d for a, b, s, d in zip(ai, aj, map(tuple, a_shift), a_vec)}
    assert ours.keys() == theirs.keys(), f"{name}: edge sets differ"
    err = max(np.abs(ours[k] - theirs[k]).max() for k in ours)
    assert err < 1e-12, f"{name}: edge vectors differ from ASE by {err:.1e}"
    assert np.all(np.diff(i) >= 0), "edges must be sorted by centre atom"


@pytest.mark.parametrize("name", STRUCTURES)
def test_triplets_match_brute_force(name):
    g = build_graph(STRUCTURES[name](), CUTOFF, TRIPLET_CUTOFF)
    centre = g[K.EDGE_INDEX][0]
    dist = np.linalg.norm(_edge_vectors(g), axis=1)
    short = np.flatnonzero(dist < TRIPLET_CUTOFF)
    expected = {(a, b) for a in short for b in short if a != b and centre[a] == centre[b]}
    got = list(zip(g[K.TRIPLET_A].tolist(), g[K.TRIPLET_B].tolist()))
    assert len(got) == len(set(got)), "duplicate triplets"
    assert set(got) == expected
    assert len(expected) > 0


def test_periodic_images_are_distinct_edges():
    """In a one-atom cell every neighbour is an image of the atom itself, each its own edge."""
    g = build_graph(bulk("Cu", "fcc", a=3.6), CUTOFF, TRIPLET_CUTOFF)
    i, j = g[K.EDGE_INDEX]
    shifts = _integer_shifts(g)
    assert (i == 0).all() and (j == 0).all()
    assert len({tuple(s) for s in shifts}) == len(shifts) == 12 + 6 + 24  # fcc shells at 2.55, 3.6, 4.41 A
    assert not (shifts == 0).all(axis=1).any(), "an atom must not be its own neighbour"
    assert len(g[K.TRIPLET_A]) == 12 * 11, "triplets pair images of the same atom (12 neighbours < 3.5 A)"


def test_molecule_without_cell_and_with_zero_cell_and_pbc(make_model):
    plain = molecule("CH3OH")
    quirky = plain.copy()
    quirky.pbc = True  # extxyz quirk: pbc="T T T" with an all-zero lattice means a molecule
    a, b = build_graph(plain, CUTOFF, TRIPLET_CUTOFF), build_graph(quirky, CUTOFF, TRIPLET_CUTOFF)
    assert not b[K.PBC].any() and not b[K.CELL].any()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    n = len(plain)
    assert a[K.EDGE_INDEX].shape[1] == n * (n - 1), "a small molecule is fully connected"
    model = make_model("float64")
    pa, pb = model.predict([plain, quirky])
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


def _bad(kind: str) -> Atoms:
    if kind == "overlap":
        return Atoms("H2O", positions=[[0, 0, 0], [0, 0, 0.05], [1, 0, 0]])
    if kind == "nan":
        return Atoms("H2", positions=[[0, 0, 0], [0, np.nan, 0.7]])
    if kind == "unknown element":
        return Atoms(numbers=[8, 0], positions=[[0, 0, 0], [0, 0, 1.0]])
    if kind == "zero cell vector":
        return Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]], cell=[[5, 0, 0], [0, 5, 0], [0, 0, 0]], pbc=True)
    if kind == "zero volume":
        return Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]], cell=[[5, 0, 0], [0, 5, 0], [5, 5, 0]], pbc=True)
    if kind == "periodic images overlap":
        return Atoms("H", cell=[0.05, 5, 5], pbc=True)
    raise ValueError(kind)


@pytest.mark.parametrize(("kind", "match"), [
    ("overlap", r"atoms 0 and 1 overlap \(distance 0.05 Angstrom < 0.1\)"),
    ("nan", r"atom 1 has non-finite coordinates"),
    ("unknown element", r"atom 1 has unknown atomic number 0 \(expected 1-118\)"),
    ("zero cell vector", r"periodic along 'c' but that cell vector is zero"),
    ("zero volume", r"periodic cell has zero volume"),
    ("periodic images overlap", r"cell height along 'a' is 0.05 Angstrom < 0.1: every atom overlaps its own "
                                r"periodic image"),
])
def test_bad_structures_raise(kind, match):
    with pytest.raises(DataError, match=match):
        build_graph(_bad(kind), CUTOFF, TRIPLET_CUTOFF, where="test.xyz frame 3")
    with pytest.raises(DataError, match="^test.xyz frame 3: "):
        build_graph(_bad(kind), CUTOFF, TRIPLET_CUTOFF, where="test.xyz frame 3")


#: cells that crashed the process (SIGFPE in the neighbour list) or hung it, and their messages
BAD_CELLS = {
    "nan": ([[np.nan, 0, 0], [0, 3, 0], [0, 0, 3]], r"the cell has non-finite entries \(cell=\[\[nan, 0.0, 0.0\], "),
    "inf": ([[3, 0, 0], [0, np.inf, 0], [0, 0, 3]], r"the cell has non-finite entries \(cell=\[\[3.0, 0.0, 0.0\], "
                                                     r"\[0.0, inf, 0.0\]"),
    "flat": ([[3, 0, 0], [3, 1e-7, 0], [0, 0, 3]], r"cell height along 'a' is 1e-07 Angstrom < 0.1: every atom "
                                                    r"overlaps its own periodic image"),
    "elongated": ([[1e12, 0, 0], [0, 3, 0], [0, 0, 3]], r"cell vector 'a' is 1e\+12 Angstrom long, more than 1e\+04 "
                                                        r"times the cutoff \(5.0 Angstrom\): not a sensible cell"),
    "dependent (2D)": ([[3, 0, 0], [6, 0, 0], [0, 0, 0]], r"periodic cell has zero volume: its periodic vectors a, b "
                                                          r"are linearly dependent"),
}
_RUN_BAD_CELLS = """
import json, sys
import numpy as np
from ase import Atoms
from etgnn.data.graph import build_graph
from etgnn.errors import DataError
for cell, pbc in json.loads(sys.argv[1]):
    atoms = Atoms("NaCl", positions=[[0, 0, 0], [1.4, 1.4, 1.4]], cell=cell, pbc=pbc)
    try:
        build_graph(atoms, 5.0, 3.5, where="bad.xyz structure 2")
        print("accepted")
    except DataError as exc:
        print(exc)
"""


def test_bad_cells_are_refused_before_the_neighbour_list():
    """In a subprocess: before the check, the first three died with SIGFPE (no message) and the
    flat cell hung the neighbour list."""
    import json
    import re
    import subprocess
    import sys

    cases = [(cell, [True, True, not name.endswith("(2D)")]) for name, (cell, _) in BAD_CELLS.items()]
    run = subprocess.run([sys.executable, "-c", _RUN_BAD_CELLS, json.dumps(cases)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"exit {run.returncode}, stderr {run.stderr[-500:]}"
    lines = run.stdout.splitlines()
    assert len(lines) == len(BAD_CELLS)
    for (name, (_, match)), line in zip(BAD_CELLS.items(), lines):
        assert re.match("^bad.xyz structure 2: " + match, line), f"{name}: {line}"


_RUN_GRAPH = """
import json, sys
import numpy as np
from ase import Atoms
from etgnn.data import keys as K
from etgnn.data.graph import build_graph
spec = json.loads(sys.argv[1])
g = build_graph(Atoms(spec["symbols"], positions=spec["positions"], cell=spec["cell"], pbc=spec["pbc"]), 5.0, 3.5)
shifts = np.linalg.lstsq(g[K.CELL].T, g[K.EDGE_SHIFT].T, rcond=None)[0].T if g[K.PBC].any() else 0 * g[K.EDGE_SHIFT]
print(json.dumps(sorted(zip(*g[K.EDGE_INDEX].tolist(), *np.round(shifts).astype(int).T.tolist()))))
"""


@pytest.mark.parametrize(("name", "atoms"), [
    ("2000 x 2000 x 3 Angstrom slab", Atoms("Cu", cell=[2000, 2000, 3], pbc=True)),
    ("flat molecule 2000 Angstrom wide", Atoms("H4", positions=[[0, 0, 0], [0.7, 0, 0], [2000, 0, 0], [0, 2000, 0]])),
])
def test_geometries_vesins_cell_list_cannot_take_give_ases_edges(name, atoms):
    """vesin 0.6 divides by zero (SIGFPE) on these; the graph then comes from ASE's neighbour list
    (built in a subprocess, so that a crash fails this test only)."""
    import json
    import subprocess
    import sys

    spec = {"symbols": atoms.get_chemical_symbols(), "positions": atoms.positions.tolist(),
            "cell": atoms.cell[:].tolist(), "pbc": atoms.pbc.tolist()}
    run = subprocess.run([sys.executable, "-c", _RUN_GRAPH, json.dumps(spec)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, f"{name}: exit {run.returncode}, stderr {run.stderr[-500:]}"
    ours = [tuple(e) for e in json.loads(run.stdout)]
    ai, aj, a_shift = neighbor_list("ijS", atoms, CUTOFF)
    assert ours == sorted(zip(ai.tolist(), aj.tolist(), *a_shift.T.tolist())) and len(ours) == 2, name


def test_bad_cutoffs_and_empty_structure_raise():
    with pytest.raises(DataError, match=r"triplet_cutoff=6.0 must be in \(0, cutoff=5.0\]"):
        build_graph(molecule("H2O"), cutoff=5.0, triplet_cutoff=6.0)
    with pytest.raises(DataError, match="structure has no atoms"):
        build_graph(Atoms(), CUTOFF, TRIPLET_CUTOFF)


def test_predict_error_names_the_structure(make_model):
    model = make_model("float64")
    with pytest.raises(DataError, match=r"^structure 1: atom 1 has non-finite coordinates"):
        model.predict([molecule("H2O"), _bad("nan")])


def _isotropic_residual(t: np.ndarray, rank: int) -> float:
    """Largest component of ``t`` outside the span of the isotropic tensors of its rank."""
    basis = isotropic_tensors(rank).numpy().reshape(-1, 3**rank)
    flat = t.reshape(-1)
    if basis.shape[0] == 0:
        return float(np.abs(flat).max())
    coef, *_ = np.linalg.lstsq(basis.T, flat, rcond=None)
    return float(np.abs(flat - basis.T @ coef).max())


def test_isolated_atoms(make_model, dtype, tol):
    """Atoms with no neighbours: finite outputs, only the isotropic (zero-body) terms survive."""
    model = make_model(dtype)
    far_apart = Atoms("OH", positions=[[0, 0, 0], [0, 0, 20.0]])
    lone = Atoms("Ar")
    preds = model.predict([far_apart, molecule("H2O"), lone])
    g = model.graph(far_apart)
    assert g[K.EDGE_INDEX].shape[1] == 0 and g[K.TRIPLET_A].shape[0] == 0
    for name, pred in (("O...H", preds[0]), ("Ar", preds[2])):
        for key, head in model.heads.items():
            value = pred[key]
            assert np.isfinite(value).all(), f"{name} {key} not finite"
            tensors = value if head.level == "atom" else value[None]
            scale = max(np.abs(value).max(), 1.0)
            for t in tensors:
                res = _isotropic_residual(t, head.rank)
                assert res <= tol * scale, f"{name} {key}: non-isotropic part {res:.1e} without neighbours"
        assert np.abs(pred["atom_rank2"]).max() > 1e-3, f"{name}: isotropic terms missing"  # exactly 0 without them
    np.testing.assert_array_equal(preds[0]["forces"], 0.0)
    np.testing.assert_array_equal(preds[2]["forces"], 0.0)
