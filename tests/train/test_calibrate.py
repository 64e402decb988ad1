"""Uncertainty through the command line and training (issue 26 items 1-3): ``etgnn calibrate`` on
an existing checkpoint, ``training.uncertainty: llpr``, ``etgnn predict --uncertainty``,
``etgnn evaluate`` with a model that has uncertainty, and the ASE calculator."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import yaml

import etgnn
from etgnn.cli import main
from etgnn.uncertainty import LLPR


#: the tiny run shared by the tests of this file (trained once, on first use)
_TRAINED: dict = {}


@pytest.fixture
def trained(tmp_path_factory, data_file, config):
    """``(folder, data)``: a tiny model trained for 2 epochs on the shared molecules (no uncertainty),
    in ``folder/run``; trained once for the whole file."""
    if "run" not in _TRAINED:
        cfg = config(max_epochs=2)
        tmp = tmp_path_factory.mktemp("uq")
        cfg["run_dir"] = str(tmp / "run")
        (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        assert main(["train", str(tmp / "cfg.yaml"), "--no-progress"]) == 0
        _TRAINED["run"] = (tmp, data_file)
    return _TRAINED["run"]


def test_calibrate_adds_uncertainty_to_an_existing_checkpoint(trained, capsys):
    tmp, data = trained
    ckpt = tmp / "run" / "best.ckpt"
    assert etgnn.load_model(ckpt).uncertainty is None
    out = tmp / "model_uq.pt"
    assert main(["calibrate", str(ckpt), "-o", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "alpha" in text and "spearman" in text
    model = etgnn.load_model(out)
    assert isinstance(model.uncertainty, LLPR) and set(model.uncertainty.targets) == {"vec", "dyad"}
    cal = model.uncertainty.posteriors["vec"].calibration
    assert cal["alpha"] > 0 and 0 < cal["coverage_2sigma"] <= 1


def test_predict_evaluate_and_calculator_with_uncertainty(trained, capsys):
    tmp, data = trained
    model_file = tmp / "model_uq_2.pt"
    assert main(["calibrate", str(tmp / "run" / "best.ckpt"), "-o", str(model_file), "--no-progress"]) == 0
    out = tmp / "pred.extxyz"
    assert main(["predict", str(model_file), str(data), "-o", str(out), "--uncertainty", "--no-progress"]) == 0
    frames = ase.io.read(out, ":")
    model = etgnn.load_model(model_file)
    first = model.predict(frames[0], uncertainty=True)[0]
    assert frames[0].arrays["vec_std"].shape == (len(frames[0]), 3)
    np.testing.assert_allclose(frames[0].arrays["vec_std"], first["vec_std"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(frames[0].info["dyad_std"]).reshape(3, 3), first["dyad_std"], rtol=1e-6)
    # evaluate reports the uncertainty metrics per target, also in the JSON
    capsys.readouterr()
    report = tmp / "eval.json"
    assert main(["evaluate", str(model_file), str(data), "-o", str(report)]) == 0
    text = capsys.readouterr().out
    assert "spearman" in text and "in_2sig" in text
    uq = json.loads(report.read_text())["uncertainty"]
    for name in ("vec", "dyad"):
        assert -1 <= uq[name]["spearman"] <= 1 and 0 <= uq[name]["coverage_2sigma"] <= 1
        assert uq[name]["nll"] == pytest.approx(uq[name]["nll"])  # finite
    # the ASE calculator
    atoms = frames[1].copy()
    atoms.calc = etgnn.ETGNNCalculator(model)
    std = atoms.calc.get_property("vec_std", atoms)
    np.testing.assert_allclose(std, model.predict(frames[1], uncertainty=True)[0]["vec_std"], rtol=1e-10)
    assert atoms.calc.get_property("dyad_std", atoms).shape == (3, 3)


def test_predict_uncertainty_without_it_says_how_to_add_it(trained, capsys):
    tmp, data = trained
    code = main(["predict", str(tmp / "run" / "best.ckpt"), str(data), "-o", str(tmp / "p.extxyz"), "--uncertainty"])
    assert code == 1
    assert "etgnn calibrate" in capsys.readouterr().err


def test_training_with_uncertainty_stores_it_in_best_ckpt(tmp_path, data_file, config):
    cfg = config(max_epochs=1, uncertainty="llpr")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "cfg.yaml"), "--no-progress"]) == 0
    model = etgnn.load_model(tmp_path / "run" / "best.ckpt")
    assert isinstance(model.uncertainty, LLPR)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["uncertainty"]) >= {"val", "test"}
    assert "spearman" in metrics["uncertainty"]["test"]["vec"]


def test_unknown_uncertainty_method_is_a_config_error(tmp_path, config):
    from etgnn.config import load_config
    from etgnn.errors import ConfigError

    with pytest.raises(ConfigError, match="llpr"):
        load_config(config(uncertainty="ensemble-of-one"))


def test_calibrate_on_another_validation_file_keeps_the_training_part(trained, tmp_path, make_molecules):
    from types import SimpleNamespace

    from etgnn.train.calibrate import _splits

    tmp, data = trained
    val = tmp_path / "val.extxyz"
    ase.io.write(val, make_molecules(7, seed=5), format="extxyz")
    model = etgnn.load_model(tmp / "run" / "best.ckpt")
    args = dict(checkpoint="best.ckpt", train=None, val=None, no_progress=True)
    same = _splits(model, SimpleNamespace(**args))
    other = _splits(model, SimpleNamespace(**(args | {"val": str(val)})))
    both = _splits(model, SimpleNamespace(**(args | {"train": str(data), "val": str(val)})))
    assert other["train"].ids == same["train"].ids and len(same["train"]) == 24  # 60 % of 40, as in training
    assert len(other["val"]) == 7 and len(both["val"]) == 7 and len(both["train"]) == 40
