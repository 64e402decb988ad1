"""``etgnn train / evaluate / predict`` end to end on a tiny run, and their error messages."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import yaml

import etgnn
from etgnn.cli import main


@pytest.fixture
def trained(config, tmp_path, capsys):
    """A finished 2-epoch run made through the CLI; returns (run_dir, config path)."""
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config(max_epochs=5)))
    assert main(["train", str(cfg_path), "training.max_epochs=2"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    assert f"run directory: {run}" in out and "euclidean" in out and "vec" in out
    return run, cfg_path


@pytest.mark.parity_plots
def test_train_evaluate_predict(trained, data_file, tmp_path, capsys, make_molecules):
    run, _ = trained
    out_json, out_png = tmp_path / "eval" / "m.json", tmp_path / "eval" / "parity.png"
    assert main(["evaluate", str(run / "best.ckpt"), str(data_file), "--output", str(out_json),
                 "--plot", str(out_png), "--batch-size", "5"]) == 0
    printed = capsys.readouterr().out
    assert "mae" in printed and "r2" in printed
    metrics = json.loads(out_json.read_text())["metrics"]
    assert set(metrics) == {"vec", "dyad"} and metrics["dyad"]["n"] == 40
    assert out_png.stat().st_size > 1000

    structures = make_molecules(7, seed=11)
    for a in structures:  # unlabelled input
        del a.arrays["vec"], a.info["dyad"]
    inp, out = tmp_path / "in.extxyz", tmp_path / "pred" / "out.extxyz"
    ase.io.write(inp, structures, format="extxyz")
    assert main(["predict", str(run / "best.ckpt"), str(inp), "-o", str(out), "--batch-size", "3",
                 "--no-progress"]) == 0
    back = ase.io.read(out, ":")
    assert len(back) == 7
    model = etgnn.load_model(run / "best.ckpt")
    expected = model.predict(structures)
    for atoms, ref, exp in zip(back, structures, expected):
        assert np.allclose(atoms.positions, ref.positions)
        assert atoms.arrays["vec"].shape == (len(atoms), 3)
        assert np.asarray(atoms.info["dyad"]).shape == (9,)
        assert np.allclose(atoms.arrays["vec"], exp["vec"], atol=1e-6)
        assert np.allclose(np.reshape(atoms.info["dyad"], (3, 3)), exp["dyad"], atol=1e-6)


def test_resume_through_cli(trained, capsys):
    run, cfg_path = trained
    assert main(["train", str(cfg_path), "training.max_epochs=3"]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(cfg_path), "training.max_epochs=3", "--resume"]) == 0
    assert "after 3 epochs" in capsys.readouterr().out
    assert len((run / "log.csv").read_text().splitlines()) == 4


def test_clear_errors(tmp_path, data_file, capsys, config):
    assert main(["evaluate", str(tmp_path / "nope.ckpt"), str(data_file)]) == 1
    assert "DataError: no model file at" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nope.ckpt"), str(data_file), "-o", str(tmp_path / "o.xyz")]) == 1
    assert "no model file at" in capsys.readouterr().err
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(config()))
    assert main(["train", str(cfg_path), "training.lr_patiense=3"]) == 1
    assert "unknown key training.lr_patiense; did you mean 'lr_patience'?" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read config file" in capsys.readouterr().err
    assert main(["train", str(cfg_path), "data.train=" + str(tmp_path / "none.xyz")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_predict_help_documents_fields(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "row-major" in text and "3**M" in text



def test_predict_field_shapes_for_every_kind(tmp_path, make_molecules):
    """Ranks 0-3, per-atom and per-structure, from a model saved with ETGNN.save (no training)."""
    targets = {"q": {"key": "q", "level": "atom", "rank": 0},
               "z": {"key": "z", "level": "atom", "rank": 2},
               "energy": {"key": "energy", "level": "structure", "rank": 0, "reduce": "sum"},
               "beta": {"key": "beta", "level": "structure", "rank": 3}}
    model = etgnn.build_model({"model": {"hidden_channels": 16, "triplet_channels": 8, "num_blocks": 1},
                               "targets": targets})
    model.save(tmp_path / "model.pt")
    structures = make_molecules(3, seed=5)
    ase.io.write(tmp_path / "in.xyz", structures, format="extxyz")
    out = tmp_path / "out.extxyz"
    assert main(["predict", str(tmp_path / "model.pt"), str(tmp_path / "in.xyz"), "-o", str(out), "--no-progress"]) == 0
    expected = model.predict(structures)
    for atoms, exp in zip(ase.io.read(out, ":"), expected):
        n = len(atoms)
        assert atoms.arrays["q"].shape == (n,) and np.allclose(atoms.arrays["q"], exp["q"], atol=1e-6)
        assert atoms.arrays["z"].shape == (n, 9)
        assert np.allclose(atoms.arrays["z"], exp["z"].reshape(n, 9), atol=1e-6)  # row-major
        energy = atoms.calc.results["energy"] if "energy" not in atoms.info else atoms.info["energy"]
        assert np.isclose(energy, exp["energy"], atol=1e-6)
        assert np.allclose(np.reshape(atoms.info["beta"], (3, 3, 3)), exp["beta"], atol=1e-6)
