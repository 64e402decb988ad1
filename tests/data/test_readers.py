"""Readers: round trips on small files written here, the shared phonopy/mlearn files, and errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ase
import ase.db
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from etgnn.data._dfpt import symmetry_operations
from etgnn.data.readers import (
    BORN_CHARGES,
    DIELECTRIC,
    FORMATS,
    PIEZOELECTRIC,
    detect_format,
    expand_born_charges,
    parse_born_file,
    read_structures,
)
from etgnn.errors import DataError
from etgnn.tensors import voigt_to_full

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BORN_DIR = SHARED / "phonopy_born"
BORN_FILES = ["NaCl", "MgO", "ZnO", "SnO2", "Al2O3", "TiO2-anatase", "SiO2-HP", "LiF-nosym"]


@pytest.fixture
def born_dir():
    if not BORN_DIR.is_dir():
        pytest.skip(f"shared data not found at {BORN_DIR}")
    return BORN_DIR


def _nacl(n_rep=1) -> ase.Atoms:
    return ase.Atoms("NaCl", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * 3.0, pbc=True)


# --- extxyz -----------------------------------------------------------------------------------
def test_extxyz_round_trip_keeps_every_label_under_its_name(tmp_path):
    atoms = _nacl()
    becs = np.arange(18.0).reshape(2, 9)
    atoms.arrays["becs"] = becs
    atoms.info["eps"] = np.arange(9.0)
    stress = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # ASE Voigt: xx yy zz yz xz xy
    forces = np.array([[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])
    atoms.calc = SinglePointCalculator(atoms, energy=-1.5, forces=forces, stress=stress, dipole=[0.1, 0, 0])
    ase.io.write(tmp_path / "a.xyz", [atoms, atoms], format="extxyz")

    frames = read_structures(tmp_path / "a.xyz")
    assert len(frames) == 2
    a = frames[1]
    assert a.calc is None
    np.testing.assert_allclose(a.arrays["becs"], becs)
    np.testing.assert_allclose(a.info["eps"], np.arange(9.0))
    np.testing.assert_allclose(a.arrays["forces"], forces)
    assert a.info["energy"] == pytest.approx(-1.5)
    np.testing.assert_allclose(a.info["dipole"], [0.1, 0, 0])
    np.testing.assert_allclose(a.info["stress"], voigt_to_full(stress, 2, "standard"))


def test_zero_cell_with_pbc_is_a_molecule(tmp_path):
    text = '2\nLattice="0 0 0 0 0 0 0 0 0" Properties=species:S:1:pos:R:3 mu="1 2 3" pbc="T T T"\nO 0 0 0\nH 1 0 0\n'
    (tmp_path / "m.xyz").write_text(text)
    (a,) = read_structures(tmp_path / "m.xyz")
    assert not a.pbc.any()
    np.testing.assert_allclose(a.info["mu"], [1, 2, 3])


def test_index_selection(tmp_path):
    ase.io.write(tmp_path / "a.xyz", [_nacl() for _ in range(5)], format="extxyz")
    assert len(read_structures(tmp_path / "a.xyz", index="1:3")) == 2
    assert len(read_structures(tmp_path / "a.xyz", index=-1)) == 1
    (tmp_path / "id_prop.csv").write_text("a,1\n")
    ase.io.write(tmp_path / "a.vasp", _nacl(), format="vasp")
    with pytest.raises(DataError, match=re.escape("index 7 does not select from 1 structures")):
        read_structures(tmp_path, index=7)


# --- ASE database -----------------------------------------------------------------------------
def test_ase_db_round_trip(tmp_path):
    atoms = _nacl()
    atoms.calc = SinglePointCalculator(atoms, energy=2.0, forces=np.ones((2, 3)))
    becs = np.stack([np.eye(3), -np.eye(3)])
    with ase.db.connect(tmp_path / "d.db") as db:
        db.write(atoms, mp_id="mp-22862", data={"becs": becs, "eps": np.eye(3) * 2, "out": {"gap": 5.0}})

    (a,) = read_structures(tmp_path / "d.db")
    assert a.info["mp_id"] == "mp-22862"
    np.testing.assert_allclose(a.arrays["becs"], becs)
    np.testing.assert_allclose(a.info["eps"], np.eye(3) * 2)
    assert a.info["out.gap"] == 5.0
    assert a.info["energy"] == 2.0
    np.testing.assert_allclose(a.arrays["forces"], np.ones((2, 3)))


# --- ETGNN id_prop folder ---------------------------------------------------------------------
def test_id_prop_folder_with_poscar_and_cif(tmp_path):
    ase.io.write(tmp_path / "s1.vasp", _nacl(), format="vasp")
    ase.io.write(tmp_path / "s2.cif", _nacl(), format="cif")
    z = np.concatenate([np.eye(3).ravel(), -np.eye(3).ravel()])
    rows = ["id,values", "s1," + ",".join(map(str, z)), "s2," + ",".join(map(str, 2 * z)), ""]
    (tmp_path / "id_prop.csv").write_text("\n".join(rows))

    frames = read_structures(tmp_path)
    assert [a.info["id"] for a in frames] == ["s1", "s2"]
    np.testing.assert_allclose(frames[1].info["id_prop"], 2 * z)
    assert frames[1].get_chemical_symbols() == ["Na", "Cl"]
    assert detect_format(tmp_path / "id_prop.csv") == "id-prop"


def test_id_prop_missing_structure_file(tmp_path):
    (tmp_path / "id_prop.csv").write_text("ghost,1.0\n")
    msg = r"id_prop\.csv line 1: no structure file for id 'ghost' in .* \(tried ghost\.cif"
    with pytest.raises(DataError, match=msg):
        read_structures(tmp_path)


def test_id_prop_bad_number(tmp_path):
    ase.io.write(tmp_path / "a.vasp", _nacl(), format="vasp")
    (tmp_path / "id_prop.csv").write_text("a,1.0\na,x\n")
    with pytest.raises(DataError, match=r"id_prop\.csv line 2 \(a\): non-numeric value"):
        read_structures(tmp_path)


# --- pymatgen JSON records --------------------------------------------------------------------
def test_json_records_flatten_nested_keys(tmp_path):
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    forces = [[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]]
    outputs = {"energy": -10.8, "forces": forces, "virial_stress": [1, 2, 3, 4, 5, 6]}
    rec = {"structure": s.as_dict(), "group": "bulk", "outputs": outputs, "positions": [[9, 9, 9], [9, 9, 9]]}
    (tmp_path / "r.json").write_text(json.dumps([rec, rec]))

    frames = read_structures(tmp_path / "r.json")
    assert len(frames) == 2
    a = frames[0]
    np.testing.assert_allclose(a.arrays["outputs.forces"], forces)
    assert a.info["outputs.energy"] == -10.8
    np.testing.assert_allclose(a.info["outputs.virial_stress"], [1, 2, 3, 4, 5, 6])
    assert a.info["group"] == "bulk"
    np.testing.assert_allclose(a.cell.array, np.eye(3) * 5.43)
    np.testing.assert_allclose(a.positions[1], [5.43 / 4] * 3)  # a 'positions' record key goes to info
    np.testing.assert_allclose(a.info["positions"], 9.0)


def test_json_record_without_structure(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([{"outputs": {}}]))
    msg = "r.json structure 0: record has no 'structure' key (got ['outputs'])"
    with pytest.raises(DataError, match=re.escape(msg)):
        read_structures(tmp_path / "r.json")


def test_mlearn_si_training_set():
    path = SHARED / "mlearn" / "Si_training.json"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    frames = read_structures(path)
    assert len(frames) == 214
    for a in frames[:20]:
        assert a.arrays["outputs.forces"].shape == (len(a), 3)
        assert np.asarray(a.info["outputs.virial_stress"]).shape == (6,)


# --- VASP OUTCAR (synthetic LEPSILON snippet, parsed by pymatgen) -------------------------------
_OUTCAR = """ vasp.6 synthetic LEPSILON snippet
   IBRION =      8    ionic relax
{lepsilon}   number of bands    NBANDS=      8
   total plane-waves  NPLWV =   8000
 MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in DFT)
 ------------------------------------------------------
           8.000     0.100     0.000
           0.100     8.000     0.000
           0.000     0.000     7.500
 ------------------------------------------------------
 PIEZOELECTRIC TENSOR  for field in x, y, z        (C/m^2)
              XX          YY          ZZ          XY          YZ          ZX
  --------------------------------------------------------------------------------
  x     0.00000     0.00000     0.00000     0.10000     0.20000     0.30000
  y     0.00000     0.00000     0.00000     0.40000     0.50000     0.60000
  z     0.70000     0.80000     0.90000     0.00000     0.00000     0.00000
  --------------------------------------------------------------------------------
 BORN EFFECTIVE CHARGES (including local field effects) (in |e|, cummulative output)
 ---------------------------------------------------------------------------------
 ion    1
    1     2.00000     0.10000     0.20000
    2     0.30000     2.10000     0.40000
    3     0.50000     0.60000     2.20000
 ion    2
    1    -2.00000    -0.10000    -0.20000
    2    -0.30000    -2.10000    -0.40000
    3    -0.50000    -0.60000    -2.20000
 ---------------------------------------------------------------------------------
"""


@pytest.mark.parametrize("lepsilon", ["   LEPSILON=     T    determine dielectric tensor\n", ""])
def test_outcar_lepsilon_and_lcalceps(tmp_path, lepsilon):
    (tmp_path / "OUTCAR").write_text(_OUTCAR.format(lepsilon=lepsilon))
    ase.io.write(tmp_path / "POSCAR", _nacl(), format="vasp")
    (a,) = read_structures(tmp_path / "OUTCAR")
    z = a.arrays[BORN_CHARGES]
    # OUTCAR row label = field direction = first etgnn index: no transpose
    np.testing.assert_allclose(z[0], [[2.0, 0.1, 0.2], [0.3, 2.1, 0.4], [0.5, 0.6, 2.2]])
    np.testing.assert_allclose(z[1], -z[0])
    np.testing.assert_allclose(a.info[DIELECTRIC], [[8, 0.1, 0], [0.1, 8, 0], [0, 0, 7.5]])
    e = a.info[PIEZOELECTRIC]  # VASP columns xx yy zz xy yz zx
    assert e.shape == (3, 3, 3)
    assert e[0, 0, 1] == e[0, 1, 0] == 0.1 and e[0, 1, 2] == e[0, 2, 1] == 0.2 and e[0, 2, 0] == 0.3
    np.testing.assert_allclose(np.diag(e[2]), [0.7, 0.8, 0.9])


def test_outcar_without_structure(tmp_path):
    (tmp_path / "OUTCAR").write_text(_OUTCAR.format(lepsilon=""))
    with pytest.raises(DataError, match="found no POSCAR or CONTCAR beside it; pass structure_path="):
        read_structures(tmp_path / "OUTCAR")


def test_outcar_without_dielectric_response(tmp_path):
    text = _OUTCAR.format(lepsilon="").split(" MACROSCOPIC")[0]
    (tmp_path / "OUTCAR").write_text(text)
    with pytest.raises(DataError, match=re.escape("no dielectric response found; is this the OUTCAR of a LEPSILON")):
        read_structures(tmp_path / "OUTCAR")


# --- phonopy BORN -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", BORN_FILES)
def test_born_expansion_obeys_sum_rule(born_dir, name):
    (a,) = read_structures(born_dir / f"{name}.BORN")
    z = a.arrays[BORN_CHARGES]
    assert z.shape == (len(a), 3, 3)
    scale = np.abs(z).sum(axis=0).max()
    violation = np.abs(z.sum(axis=0)).max()
    # the files are rounded and some are not symmetrised (ZnO, TiO2): 1.5 % of sum |Z| at most
    assert violation < 0.015 * scale, (name, violation, scale)
    _, z_listed = parse_born_file(born_dir / f"{name}.BORN")
    if len(z_listed) < len(a):  # copying the listed tensors without rotating them breaks the rule
        labels = symmetry_operations(a)[2]
        naive = z_listed[np.searchsorted(np.unique(labels), labels)]
        if not np.allclose(naive, z):  # anisotropic sites only
            assert np.abs(naive.sum(axis=0)).max() > 10 * max(violation, 1e-3)


@pytest.mark.parametrize("name", ["Al2O3", "SiO2-HP", "SnO2", "TiO2-anatase"])
def test_born_expansion_obeys_site_symmetry(born_dir, name):
    (a,) = read_structures(born_dir / f"{name}.BORN")
    z = a.arrays[BORN_CHARGES]
    rotations, translations, _ = symmetry_operations(a)
    cell = np.asarray(a.cell)
    frac = a.get_scaled_positions()
    r_cart = np.einsum("ij,njk,kl->nil", cell.T, rotations, np.linalg.inv(cell.T))
    for b in range(len(a)):
        for r, t, rc in zip(rotations, translations, r_cart):
            d = r @ frac[b] + t - frac[b]
            if np.abs(d - np.rint(d)).max() < 1e-5:  # operation of the site group of b
                np.testing.assert_allclose(rc @ z[b] @ rc.T, z[b], atol=1e-6)


def test_born_headers_and_explicit_cell(born_dir):
    (qe,) = read_structures(born_dir / "NaCl-QE.BORN", structure_path=born_dir / "NaCl.POSCAR-unitcell")
    np.testing.assert_allclose(qe.arrays[BORN_CHARGES][:4], np.tile(np.eye(3) * 1.105385, (4, 1, 1)))
    np.testing.assert_allclose(qe.info[DIELECTRIC], np.eye(3) * 2.472958201)
    (al,) = read_structures(born_dir / "Al2O3.BORN")  # '# epsilon and Z* of atoms 1 13' header
    np.testing.assert_allclose(al.arrays[BORN_CHARGES][12, 0], [-2.07328119, 0.0, 0.0])


def test_born_without_unit_cell(born_dir):
    msg = "no unit cell beside this BORN file (looked for SiO2-CP2K-xyz.POSCAR-unitcell)"
    with pytest.raises(DataError, match=re.escape(msg)):
        read_structures(born_dir / "SiO2-CP2K-xyz.BORN")


def test_born_wrong_number_of_tensors(tmp_path):
    ase.io.write(tmp_path / "X.POSCAR-unitcell", _nacl(), format="vasp")
    lines = ["default", "2 0 0 0 2 0 0 0 2"] + ["1 0 0 0 1 0 0 0 1"] * 3
    (tmp_path / "X.BORN").write_text("\n".join(lines))
    msg = "3 Born charge tensors, expected 2 (one per symmetry-inequivalent atom: atoms 1 2 of 2, symprec=1e-05)"
    with pytest.raises(DataError, match=re.escape(msg)):
        read_structures(tmp_path / "X.BORN")


def test_born_bad_lines(tmp_path):
    (tmp_path / "BORN").write_text("2 0 0 0 2 0 0 0 2\n1 0 0 0 1 0 0 0 1\n")
    msg = "BORN line 1: the first line must be the unit factor or a comment, got 9 numbers"
    with pytest.raises(DataError, match=msg):
        parse_born_file(tmp_path / "BORN")
    (tmp_path / "BORN").write_text("14.4\n2 0 0 0 2 0 0 0 2\n1 0 0 0 1 0\n")
    msg = "BORN line 3: expected 9 numbers (a 3x3 tensor, row-major), got '1 0 0 0 1 0'"
    with pytest.raises(DataError, match=re.escape(msg)):
        parse_born_file(tmp_path / "BORN")


def test_expand_born_one_tensor_per_atom_is_kept():
    z = np.stack([np.eye(3), -np.eye(3)])
    np.testing.assert_array_equal(expand_born_charges(_nacl(), z), z)


# --- dispatch errors --------------------------------------------------------------------------
def test_unknown_format_lists_known_ones(tmp_path):
    (tmp_path / "a.xyz").write_text("1\n\nH 0 0 0\n")
    known = ", ".join(sorted(FORMATS))
    msg = f"unknown format 'exyz'; known formats: {known}; did you mean 'extxyz'?"
    with pytest.raises(DataError, match=re.escape(msg)):
        read_structures(tmp_path / "a.xyz", format="exyz")


def test_missing_and_undetectable_files(tmp_path):
    with pytest.raises(DataError, match=re.escape("nope.xyz: no such file or folder")):
        read_structures(tmp_path / "nope.xyz")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(DataError, match=re.escape("notes.txt: cannot tell the file format; pass format= one of")):
        read_structures(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="a folder must hold id_prop.csv"):
        read_structures(tmp_path)


def test_unreadable_extxyz_names_the_file(tmp_path):
    (tmp_path / "bad.xyz").write_text("2\nProperties=species:S:1:pos:R:3\nH 0 0\n")
    with pytest.raises(DataError, match=r"bad\.xyz: not a readable extxyz file"):
        read_structures(tmp_path / "bad.xyz")
