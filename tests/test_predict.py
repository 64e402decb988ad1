"""The one prediction path (etgnn.predict.Predictor): file round trip, streaming, background graphs."""

from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

import etgnn
from etgnn.cli import main
from etgnn.data.labels import LabelSpec, extract_label
from etgnn.data.readers import BORN_CHARGES, read_structures
from etgnn.errors import ConfigError, DataError
from etgnn.predict import Predictor, chunks

pytestmark = pytest.mark.usefixtures("single_thread")

TARGETS = {"q": {"key": "q", "level": "atom", "rank": 0},
           "z": {"key": "z", "level": "atom", "rank": 2},
           "energy": {"key": "energy", "level": "structure", "rank": 0, "reduce": "sum"},
           "dipole": {"key": "dipole", "level": "structure", "rank": 1, "reduce": "sum"},
           "beta": {"key": "beta", "level": "structure", "rank": 3}}


@pytest.fixture(scope="module")
def model():
    m = etgnn.build_model({"model": {"hidden_channels": 16, "triplet_channels": 8, "num_blocks": 1,
                                     "cutoff": 4.0, "triplet_cutoff": 3.0, "dtype": "float64"},
                           "targets": TARGETS})
    for head in m.heads.values():
        head.scale.fill_(2.0)  # O(1) outputs
    return m.eval()


def _frames(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = molecule(["H2O", "CH4", "NH3"][k % 3])
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        out.append(atoms)
    return out


def _write_born(folder):
    """A NaCl primitive cell and a phonopy BORN file (eps_inf 2.4, Z = +-1.1) beside it."""
    ase.io.write(folder / "NaCl.POSCAR-unitcell", bulk("NaCl", "rocksalt", a=5.64), format="vasp")
    lines = ["14.4", "2.4 0 0 0 2.4 0 0 0 2.4", "1.1 0 0 0 1.1 0 0 0 1.1", "-1.1 0 0 0 -1.1 0 0 0 -1.1"]
    (folder / "NaCl.BORN").write_text("\n".join(lines) + "\n")
    return folder / "NaCl.BORN"


def test_predict_file_reads_back_through_etgnns_reader(model, tmp_path):
    """predict -> etgnn's own reader + extract_label gives back the predicted arrays, every kind."""
    frames = _frames(7)
    ase.io.write(tmp_path / "in.extxyz", frames, format="extxyz")
    out = tmp_path / "out.extxyz"
    assert Predictor(model, batch_size=3).predict_file(tmp_path / "in.extxyz", out) == 7
    frames = read_structures(tmp_path / "in.extxyz")  # positions as written (8 decimals)
    expected = model.predict(frames, batch_size=3)  # the same batches: a different batching moves a
    back = read_structures(out)  # value born of cancellation (a dipole of 1e-4 from terms of 0.1) by 1e-18
    assert len(back) == 7
    for k, (atoms, ref, exp) in enumerate(zip(back, frames, expected)):
        np.testing.assert_array_equal(atoms.positions, ref.positions)
        for name, t in TARGETS.items():
            got = extract_label(atoms, LabelSpec(name, t["level"], t["rank"]), source=str(out), index=k)
            if t["level"] == "atom":  # ASE writes per-atom columns with 8 decimals: rounding error <= 5e-9
                np.testing.assert_allclose(got, exp[name], rtol=0, atol=5e-9 + 1e-15, err_msg=name)
            else:  # comment-line entries keep every digit
                np.testing.assert_allclose(got, exp[name], rtol=1e-14, atol=0, err_msg=name)


def test_born_input_writes_structure_and_predictions_and_flattened_labels(model, tmp_path, capsys):
    """Issue 11 item 1: (n, 3, 3) reader labels used to crash ASE's extxyz writer."""
    born = _write_born(tmp_path)
    path = tmp_path / "m.pt"
    model.save(path)
    assert main(["predict", str(path), str(born), "-o", str(tmp_path / "p.extxyz"), "--no-progress"]) == 0
    (plain,) = ase.io.read(tmp_path / "p.extxyz", ":")
    assert set(plain.arrays) == {"numbers", "positions", "q", "z"} and BORN_CHARGES not in plain.info
    assert main(["predict", str(path), str(born), "-o", str(tmp_path / "k.extxyz"), "--keep-labels",
                 "--no-progress"]) == 0
    (kept,) = read_structures(tmp_path / "k.extxyz")
    (src,) = read_structures(born)
    z = extract_label(kept, LabelSpec(BORN_CHARGES, "atom", 2), source="k", index=0)
    np.testing.assert_allclose(z, src.arrays[BORN_CHARGES])
    np.testing.assert_allclose(np.diag(z[0]), [1.1, 1.1, 1.1])
    np.testing.assert_allclose(np.reshape(kept.info["dielectric_tensor"], (3, 3)), 2.4 * np.eye(3))
    Predictor(model).predict_file(born, tmp_path / "r.extxyz", keep_labels=True,
                                  rename={"becs": BORN_CHARGES, "z": "dielectric_tensor"})
    (renamed,) = read_structures(tmp_path / "r.extxyz")
    np.testing.assert_allclose(renamed.arrays["becs"].reshape(-1, 3, 3), src.arrays[BORN_CHARGES])
    assert renamed.arrays["z"].shape == (2, 9)  # the prediction keeps its name ...
    np.testing.assert_allclose(np.reshape(renamed.info["z_input"], (3, 3)), 2.4 * np.eye(3))  # ... the label moves


def test_streaming_reader_prepares_frames_like_the_training_reader(tmp_path):
    """One reader: iter_structures (prediction) gives what read_structures (training) gives."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from etgnn.data.readers import iter_structures

    frames = []
    for k, atoms in enumerate(_frames(3)):
        atoms.cell, atoms.pbc = np.zeros((3, 3)), True  # the 'pbc="T T T"' molecule quirk
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 - k, forces=np.full((len(atoms), 3), 0.1 * k),
                                           stress=np.arange(6.0) + k, dipole=[0.1, 0.2, 0.3 * k])
        frames.append(atoms)
    ase.io.write(tmp_path / "t.extxyz", frames, format="extxyz")
    whole, streamed = read_structures(tmp_path / "t.extxyz"), list(iter_structures(tmp_path / "t.extxyz"))
    for a, b in zip(whole, streamed, strict=True):
        assert a.calc is None and b.calc is None and not b.pbc.any()
        assert set(a.info) == set(b.info) and set(a.arrays) == set(b.arrays)
        for key in a.info:
            np.testing.assert_array_equal(a.info[key], b.info[key])
        for key in a.arrays:
            np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
        assert b.info["stress"].shape == (3, 3) and b.arrays["forces"].shape == (len(b), 3)


@pytest.mark.parametrize("suffix", [".BORN", ".cif", ".json", ""])
def test_non_extxyz_output_is_refused_and_nothing_is_written(model, tmp_path, suffix):
    ase.io.write(tmp_path / "in.xyz", _frames(2), format="extxyz")
    out = tmp_path / f"MgO_pred{suffix}"
    with pytest.raises(ConfigError, match=r"predictions are written as extended XYZ only; name the output "
                                          r"\*\.extxyz or \*\.xyz"):
        Predictor(model).predict_file(tmp_path / "in.xyz", out)
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "in.xyz"]


def test_cif_and_poscar_leftovers_are_not_written(model, tmp_path):
    """Issue 11 item 15: no occupancy JSON, spacegroup_kinds or zero momenta in the output."""
    crystal = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    ase.io.write(tmp_path / "NaCl.cif", crystal, format="cif")
    ase.io.write(tmp_path / "POSCAR", crystal, format="vasp")
    for name in ("NaCl.cif", "POSCAR"):
        src = ase.io.read(tmp_path / name)
        assert {"occupancy", "spacegroup_kinds"} & (set(src.info) | set(src.arrays)) or name == "POSCAR"
        for keep in (False, True):
            out = tmp_path / f"pred-{name.replace('.', '_').lower()}-{keep}.extxyz"
            Predictor(model).predict_file(tmp_path / name, out, keep_labels=keep)
            text = out.read_text()
            for leftover in ("occupancy", "spacegroup", "momenta", "unit_cell"):
                assert leftover not in text, (name, keep, leftover)
            (atoms,) = ase.io.read(out, ":")
            assert set(atoms.arrays) == {"numbers", "positions", "q", "z"}
            np.testing.assert_allclose(atoms.cell, crystal.cell, atol=1e-6)


def test_streaming_never_holds_more_than_two_chunks(model):
    """A long trajectory is consumed lazily: at most two chunks are read ahead of the results."""
    drawn = [0]
    pool = _frames(6)

    def trajectory(n):
        for k in range(n):
            drawn[0] += 1
            yield pool[k % 6]

    bs, yielded = 4, 0
    for _atoms, _pred in Predictor(model, batch_size=bs).iter_predict(trajectory(50)):
        yielded += 1
        assert drawn[0] - yielded <= 2 * bs
    assert yielded == 50 and drawn[0] == 50


def test_background_graphs_give_the_same_numbers_as_serial(model):
    frames = _frames(11, seed=3)
    serial = Predictor(model, batch_size=3, background=False).predict(iter(frames))
    threaded = Predictor(model, batch_size=3, background=True).predict(iter(frames))
    for a, b in zip(serial, threaded, strict=True):
        for name in TARGETS:
            np.testing.assert_array_equal(a[name], b[name])
    assert [len(c) for c in chunks(range(7), 3)] == [3, 3, 1]


def test_errors_from_the_worker_name_file_and_structure(model, tmp_path):
    frames = _frames(9)
    frames[7].positions[1] = frames[7].positions[0]  # overlapping atoms in the third chunk
    ase.io.write(tmp_path / "bad.extxyz", frames, format="extxyz")
    with pytest.raises(DataError, match=r"bad\.extxyz structure 7: "):
        Predictor(model, batch_size=3).predict_file(tmp_path / "bad.extxyz", tmp_path / "o.extxyz")
    assert not (tmp_path / "o.extxyz").exists() and not list(tmp_path.glob(".o.extxyz.part*"))


def test_unseen_element_warning_names_file_and_index_not_torch(model, tmp_path):
    """Issue 11 item 11: the warning points at the caller, not at torch/utils/_contextlib.py."""
    model.elements_seen[[1, 6, 7, 8]] = True
    try:
        frames = _frames(5)
        frames[3] = Atoms("GdO", positions=[[0, 0, 0], [2.0, 0, 0]])
        ase.io.write(tmp_path / "traj.extxyz", frames, format="extxyz")
        with pytest.warns(UserWarning, match=r"traj\.extxyz structure 3 contains element\(s\) Gd absent") as rec:
            Predictor(model, batch_size=2).predict_file(tmp_path / "traj.extxyz", tmp_path / "p.extxyz")
        assert rec[0].filename == __file__
        with pytest.warns(UserWarning, match=r"^structure 3 contains element\(s\) Gd") as rec:
            model.predict(frames)
        assert rec[0].filename == __file__
    finally:
        model.elements_seen.zero_()


def test_progress_bar_only_on_a_terminal(model, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(_frames(4), batch_size=2, progress=True)
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal


def test_predict_takes_a_path_through_the_training_reader(model, tmp_path):
    """``model.predict("file.extxyz")`` (str or Path, or ``etgnn:`` for a shipped file) reads the file
    as training does and names it in messages; anything else says what is expected."""
    frames = _frames(5)
    ase.io.write(tmp_path / "in.extxyz", frames, format="extxyz")
    expected = model.predict(read_structures(tmp_path / "in.extxyz"), batch_size=2)  # same batches, same digits
    for path in (str(tmp_path / "in.extxyz"), tmp_path / "in.extxyz"):
        got = model.predict(path, batch_size=2)
        assert len(got) == 5
        for a, b in zip(got, expected, strict=True):
            for name in TARGETS:
                np.testing.assert_array_equal(a[name], b[name])
    shipped = model.predict("etgnn:examples_data/molecules.extxyz")
    assert len(shipped) == len(read_structures(etgnn.data.dataset.resolve_data_path("etgnn:examples_data/molecules.extxyz")))
    with pytest.raises(DataError, match=rf"^{tmp_path / 'none.extxyz'}: no such file or folder$"):
        model.predict(tmp_path / "none.extxyz")
    frames[3].positions[1] = frames[3].positions[0]
    ase.io.write(tmp_path / "bad.extxyz", frames, format="extxyz")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'bad.extxyz'} structure 3: atoms 0 and 1 overlap"):
        model.predict(str(tmp_path / "bad.extxyz"))
    with pytest.raises(DataError, match=r"^structure 1: expected an ase\.Atoms, got dict; predict takes an ase\.Atoms, "
                                        r"an iterable of them or the path of a structure file"):
        model.predict([frames[0], {"positions": [[0, 0, 0]]}])
