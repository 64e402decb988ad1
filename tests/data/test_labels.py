"""Label extraction: every accepted form agrees, every rejected form says why; the sum rule."""

from __future__ import annotations

import re
from pathlib import Path

import ase
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from etgnn.data.labels import LabelSpec, acoustic_sum_violation, check_sum_rule, extract_label, sum_rule_violations
from etgnn.data.readers import read_structures
from etgnn.errors import ConfigError, DataError, ShapeError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# ZnO-like wurtzite piezo tensor (C/m^2), 3x6 in VASP order xx yy zz xy yz zx
PIEZO_VASP = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, -0.48],
        [0.0, 0.0, 0.0, 0.0, -0.48, 0.0],
        [-0.57, -0.57, 1.32, 0.0, 0.0, 0.0],
    ]
)


def _piezo_full() -> np.ndarray:
    e = np.zeros((3, 3, 3))
    e[0, 0, 2] = e[0, 2, 0] = -0.48  # e_x,zx (e15)
    e[1, 1, 2] = e[1, 2, 1] = -0.48  # e_y,yz (e24)
    e[2, 0, 0] = e[2, 1, 1] = -0.57  # e31, e32
    e[2, 2, 2] = 1.32  # e33
    return e


def _atoms(n=2, **info) -> ase.Atoms:
    a = ase.Atoms(f"H{n}", positions=np.arange(3 * n, dtype=float).reshape(n, 3))
    a.info.update(info)
    return a


# --- forms that must agree --------------------------------------------------------------------
def test_piezo_voigt_equals_full():
    full = _piezo_full()
    forms = [PIEZO_VASP, PIEZO_VASP.ravel(), full, full.ravel()]
    for value in forms:
        got = extract_label(_atoms(e=value), LabelSpec("e", "structure", 3, voigt_order="vasp"))
        np.testing.assert_array_equal(got, full)
        assert got.dtype == np.float64


def test_standard_voigt_order_for_piezo_and_elastic():
    std = PIEZO_VASP[:, [0, 1, 2, 4, 5, 3]]  # xx yy zz yz zx xy
    got = extract_label(_atoms(e=std), LabelSpec("e", "structure", 3, voigt_order="standard"))
    np.testing.assert_array_equal(got, _piezo_full())
    c = np.zeros((6, 6))
    c[0, 0], c[0, 1], c[1, 0], c[3, 3] = 165.0, 64.0, 64.0, 79.0  # Si-like C11, C12, C44 (GPa); C44 = C_yzyz
    full = extract_label(_atoms(C=c), LabelSpec("C", "structure", 4, voigt_order="standard"))
    assert full[0, 0, 0, 0] == 165.0 and full[0, 0, 1, 1] == full[1, 1, 0, 0] == 64.0
    assert full[1, 2, 1, 2] == full[2, 1, 2, 1] == full[1, 2, 2, 1] == 79.0
    assert np.count_nonzero(full) == 1 + 2 + 4


def test_symmetric_rank2_voigt_and_flattened():
    flat = np.array([1.0, 6, 5, 6, 2, 4, 5, 4, 3])  # row-major: T[a, b] at 3a + b
    voigt = np.array([1.0, 2, 3, 4, 5, 6])  # standard: xx yy zz yz xz xy
    a = _atoms(flat=flat, voigt=voigt)
    f = extract_label(a, LabelSpec("flat", "structure", 2))
    v = extract_label(a, LabelSpec("voigt", "structure", 2, voigt_order="standard"))
    np.testing.assert_array_equal(f, v)
    assert f[0, 1] == 6 and f[1, 2] == 4


def test_per_atom_full_flattened_and_id_prop_agree():
    z = np.random.default_rng(0).normal(size=(3, 3, 3))
    a = _atoms(3, id_prop=z.ravel())
    a.arrays["full"] = z
    a.arrays["flat"] = z.reshape(3, 9)
    spec = dict(level="atom", rank=2)
    for key in ("full", "flat", "id_prop"):
        np.testing.assert_array_equal(extract_label(a, LabelSpec(key, **spec)), z)
    t = extract_label(a, LabelSpec("flat", transpose=True, **spec))
    np.testing.assert_array_equal(t, z.transpose(0, 2, 1))


def test_per_atom_rank3_voigt_and_ranks_0_1():
    a = _atoms(2, q=np.array([0.5, -0.5]), f=np.arange(6.0))
    a.arrays["strain"] = np.stack([PIEZO_VASP, 2 * PIEZO_VASP])
    got = extract_label(a, LabelSpec("strain", "atom", 3))
    np.testing.assert_array_equal(got[1], 2 * _piezo_full())
    assert extract_label(a, LabelSpec("q", "atom", 0)).shape == (2,)
    np.testing.assert_array_equal(extract_label(a, LabelSpec("f", "atom", 1)), [[0, 1, 2], [3, 4, 5]])
    assert extract_label(_atoms(energy=-3.0), LabelSpec("energy", "structure", 0)) == -3.0


def test_lookup_in_calc_results_and_nested_dicts():
    a = _atoms(2, outputs={"stress": {"voigt": [1, 2, 3, 0, 0, 0]}})
    a.calc = SinglePointCalculator(a, forces=np.ones((2, 3)))
    np.testing.assert_array_equal(extract_label(a, LabelSpec("forces", "atom", 1)), np.ones((2, 3)))
    got = extract_label(a, LabelSpec("outputs.stress.voigt", "structure", 2))
    np.testing.assert_array_equal(np.diag(got), [1, 2, 3])


# --- rejected forms ---------------------------------------------------------------------------
def test_per_atom_voigt_rank2_is_rejected():
    a = _atoms(2)
    a.arrays["becs"] = np.ones((2, 6))
    msg = (
        "train.xyz structure 412: field 'becs' has 6 values per atom, expected 9 (rank-2 tensor; Voigt input "
        "is rejected for per-atom rank-2 tensors because Born charges are not symmetric)"
    )
    with pytest.raises(ShapeError, match=re.escape(msg)):
        extract_label(a, LabelSpec("becs", "atom", 2), source="train.xyz", index=412)


def test_wrong_number_of_values():
    a = _atoms(2, id="mp-1", eps=np.ones(8), id_prop=np.ones(17))
    msg = ("x.xyz structure 3 (mp-1): field 'eps' has 8 values (shape (8,)), expected 9 or 6 (Voigt) "
           "(rank-2 structure tensor)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        extract_label(a, LabelSpec("eps", "structure", 2), source="x.xyz", index=3)
    msg = "field 'id_prop' has 17 values for 2 atoms, expected 2 x 9 = 18 (rank-2 tensor per atom)"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        extract_label(a, LabelSpec("id_prop", "atom", 2))


def test_per_atom_array_of_wrong_length():
    a = _atoms(2, becs=np.ones((3, 9)))
    with pytest.raises(ShapeError, match=re.escape("field 'becs' has shape (3, 9), expected (n_atoms=2, ...)")):
        extract_label(a, LabelSpec("becs", "atom", 2))


def test_missing_key_lists_available_and_suggests():
    a = _atoms(2, REF_polarisability=np.eye(3), eps=np.eye(3))
    a.arrays["REF_becs"] = np.ones((2, 9))
    msg = ("<memory> structure 0: field 'REF_bec' not found; available: REF_becs, REF_polarisability, eps; "
           "did you mean 'REF_becs'?")
    with pytest.raises(DataError, match=re.escape(msg)):
        extract_label(a, LabelSpec("REF_bec", "atom", 2))


def test_nan_and_non_numeric_values():
    a = _atoms(2, eps=np.array([1.0, 0, 0, 0, np.nan, 0, 0, 0, np.inf]), label="abc")
    with pytest.raises(DataError, match=re.escape("field 'eps' has 2 NaN/inf value(s), first at component (1, 1)")):
        extract_label(a, LabelSpec("eps", "structure", 2))
    with pytest.raises(DataError, match=re.escape("field 'label' is not numeric (str: 'abc')")):
        extract_label(a, LabelSpec("label", "structure", 0))


def test_labelspec_validation():
    with pytest.raises(ConfigError, match=re.escape("level must be one of ('atom', 'structure'), got 'node'")):
        LabelSpec("x", "node", 2)
    with pytest.raises(ConfigError, match="voigt_order must be one of"):
        LabelSpec("x", "atom", 3, voigt_order="abinit")
    with pytest.raises(ConfigError, match="transpose applies to rank-2 tensors only, rank is 3"):
        LabelSpec("x", "atom", 3, transpose=True)
    with pytest.raises(ConfigError, match="rank must be an integer >= 0"):
        LabelSpec("x", "atom", -1)


# --- acoustic sum rule ------------------------------------------------------------------------
def test_acoustic_sum_violation():
    z = np.stack([np.eye(3) * 2, -np.eye(3)])
    assert acoustic_sum_violation(z) == pytest.approx(np.sqrt(3))
    with pytest.raises(ShapeError, match=re.escape("Born charges must have shape (n_atoms, 3, 3), got (2, 9)")):
        acoustic_sum_violation(np.ones((2, 9)))


def test_check_sum_rule_on_synthetic_set():
    good, bad = _atoms(2), _atoms(2)
    good.arrays["z"] = np.stack([np.eye(3), -np.eye(3)]).reshape(2, 9)
    bad.arrays["z"] = np.stack([np.eye(3), np.eye(3)]).reshape(2, 9)
    spec = LabelSpec("z", "atom", 2)
    assert check_sum_rule([good, bad, good], spec, threshold=0.1) == [1]
    with pytest.raises(ConfigError, match="the acoustic sum rule applies to per-atom rank-2 tensors"):
        check_sum_rule([good], LabelSpec("z", "structure", 2), threshold=0.1)


def test_mp_dielectric_rows_violating_the_sum_rule_are_found():
    path = SHARED / "mp_dielectric" / "train.xyz"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    structures = read_structures(path)
    spec = LabelSpec("REF_becs", "atom", 2)
    bad = check_sum_rule(structures, spec, threshold=1.0, source=str(path))
    violations = sum_rule_violations(structures, spec, source=str(path))
    assert 1 <= len(bad) < 0.02 * len(structures)  # a few rows only
    assert violations.max() > 10.0  # "tens of e"
    assert np.median(violations) < 1e-3
    assert all(violations[i] > 1.0 for i in bad)


def test_shared_extxyz_labels_extract():
    needed = [SHARED / "phonondb_bec_eps" / "train.xyz", SHARED / "water_monomer" / "train.xyz"]
    if not all(p.is_file() for p in needed):
        pytest.skip("shared data not found")
    ph = read_structures(needed[0], index="0:50")
    assert max(sum_rule_violations(ph, LabelSpec("becs", "atom", 2))) < 1e-6
    eps = extract_label(ph[0], LabelSpec("eps", "structure", 2))
    np.testing.assert_allclose(eps, eps.T, atol=1e-8)
    (w,) = read_structures(needed[1], index=0)
    assert not w.pbc.any()  # all-zero Lattice with pbc="T T T"
    assert extract_label(w, LabelSpec("beta", "structure", 3)).shape == (3, 3, 3)
