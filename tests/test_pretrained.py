"""The shipped model dielectric-v1: loaded by name everywhere, its card true to the weights,
physical answers for crystals (sum rule, site symmetry), unseen elements named, fine-tuning."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk

import etgnn
from etgnn._warnings import UnseenElementWarning
from etgnn.cli import main
from etgnn.errors import DataError
from etgnn.pretrained import SHIPPED_MODELS, model_card, model_path, resolve_model

NAME = "dielectric-v1"


@pytest.fixture(scope="module")
def model():
    return etgnn.load_model(NAME)


def rocksalt():
    return bulk("NaCl", "rocksalt", a=5.64)


def test_every_shipped_model_is_in_the_package_with_its_card():
    for name, shipped in SHIPPED_MODELS.items():
        assert model_path(name).is_file() and shipped.card_path.is_file()
        assert model_path(name).stat().st_size < 20e6
        card = model_card(name)
        assert card["name"] == name and card["training_data"] and card["held_out"]


def test_loads_by_name_in_a_fresh_process():
    code = ("import etgnn, numpy as np; from ase.build import bulk; "
            f"m = etgnn.load_model({NAME!r}); p = m.predict(bulk('MgO', 'rocksalt', a=4.21))[0]; "
            "print(p['born_charges'].shape, p['epsilon'].shape, abs(p['born_charges'].sum(0)).max() < 1e-5)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(2,", "3,", "3)", "(3,", "3)", "True"]


def test_an_unknown_name_is_a_path_and_fails_with_a_message():
    assert str(resolve_model("runs/x/best.ckpt")) == "runs/x/best.ckpt"
    with pytest.raises(DataError, match="no model file at dielectric-v9"):
        etgnn.load_model("dielectric-v9")


def test_card_elements_equal_the_elements_the_model_saw(model):
    card = model_card(NAME)
    seen = [int(z) for z in np.flatnonzero(model.elements_seen.numpy())]
    from ase.data import chemical_symbols

    assert card["elements"] == [chemical_symbols[z] for z in seen]
    assert set(card["targets"]) == set(model.targets) >= {"born_charges", "epsilon"}
    assert card["targets"]["born_charges"]["unit"] == "e" and model.targets["born_charges"].config.sum_rule


def test_rocksalt_answers_obey_sum_rule_and_cubic_site_symmetry(model):
    pred = model.predict(rocksalt())[0]
    z, eps = pred["born_charges"], pred["epsilon"]
    assert z.shape == (2, 3, 3) and eps.shape == (3, 3)
    np.testing.assert_allclose(z.sum(axis=0), 0.0, atol=1e-5)
    for tensor in (z[0], z[1], eps):  # m-3m sites: a multiple of the identity
        np.testing.assert_allclose(tensor, tensor[0, 0] * np.eye(3), atol=1e-5)
    assert z[0, 0, 0] > 0.3 and z[1, 0, 0] < -0.3  # Na is the cation
    assert eps[0, 0] > 1.0


def test_an_element_the_model_never_saw_warns_with_its_name(model):
    unseen = next(z for z in range(1, 95) if not bool(model.elements_seen[z]))
    atoms = rocksalt()
    numbers = atoms.numbers.copy()
    numbers[0] = unseen
    atoms.numbers = numbers
    from ase.data import chemical_symbols

    with pytest.warns(UnseenElementWarning, match=chemical_symbols[unseen]):
        model.predict(atoms)


def test_calculator_by_name():
    atoms = rocksalt()
    atoms.calc = etgnn.ETGNNCalculator(NAME)
    z = atoms.calc.get_property("born_charges", atoms)
    assert np.asarray(z).shape == (2, 3, 3)


def test_cli_predict_and_models_take_the_name(tmp_path, capsys):
    cif = tmp_path / "nacl.cif"
    ase.io.write(cif, rocksalt())
    out = tmp_path / "out.extxyz"
    assert main(["predict", NAME, str(cif), "-o", str(out), "--no-progress"]) == 0
    frame = ase.io.read(out)
    assert frame.arrays["born_charges"].shape == (2, 9)
    capsys.readouterr()
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith(f"{NAME}  Born effective charges") and "targets born_charges, epsilon" in listing


def test_export_born_by_name_takes_the_default_level(tmp_path, capsys):
    """`etgnn export-born dielectric-v1 POSCAR -o BORN` (the README's line): the PBEsol heads."""
    poscar = tmp_path / "POSCAR"
    ase.io.write(poscar, rocksalt(), format="vasp")
    born = tmp_path / "BORN"
    assert main(["export-born", NAME, str(poscar), "-o", str(born)]) == 0
    lines = born.read_text().split("\n")
    model = etgnn.load_model(NAME)
    pred = model.predict(rocksalt())[0]
    eps = np.array(lines[1].split(), dtype=float).reshape(3, 3)
    np.testing.assert_allclose(eps, pred["epsilon"], atol=1e-5)
    z_na = np.array(lines[2].split(), dtype=float).reshape(3, 3)
    np.testing.assert_allclose(z_na, pred["born_charges"][0], atol=1e-5)


def test_finetuning_from_the_name_starts_from_its_weights(tmp_path):
    from etgnn.config import load_config
    from etgnn.train.finetune import init_from_source

    src = etgnn.load_model(NAME)
    cfg = load_config({"init_from": NAME, "targets": {
        "born_charges": {"key": "z", "level": "atom", "rank": 2, "sum_rule": True, "unit": "e"},
        "shielding": {"key": "s", "level": "atom", "rank": 2}}, "data": {"train": "x.extxyz"}})
    assert cfg.model.hidden_channels == src.config.model.hidden_channels
    tuned = etgnn.build_model(cfg)
    report = init_from_source(tuned, src, [11, 17])
    assert report.loaded_heads == ["born_charges"] and list(report.new_heads) == ["shielding"]
    atoms = [rocksalt(), bulk("Si", "diamond", a=5.43)]
    for a, b in zip(tuned.predict(atoms), src.predict(atoms)):
        np.testing.assert_array_equal(a["born_charges"], b["born_charges"])
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in tuned.state_dict().items()
               if k.startswith("backbone.") and not k.endswith("emb.weight"))
