"""``etgnn export``: the .pt2 artifact runs in a Python that cannot import etgnn and gives the
eager model's predictions to round-off, for structures of other sizes than the traced one."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from etgnn.cli import main
from etgnn.data import keys as K
from etgnn.export import INPUT_NAMES, export_model

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = ["bec", "forces", "dielectric", "piezo", "energy"]

#: Runs with torch only: etgnn imports are made to fail before anything else happens.
RUNNER = """
import sys
sys.modules["etgnn"] = None  # any 'import etgnn...' now raises ImportError
import torch
try:
    import etgnn  # noqa: F401
    raise SystemExit("etgnn is importable")
except ImportError:
    pass
extra = {"etgnn.json": ""}
program = torch.export.load(sys.argv[1], extra_files=extra)
inputs = torch.load(sys.argv[2])
with torch.no_grad():
    outs = [program.module()(*x) for x in inputs]
torch.save({"outs": outs, "meta": extra["etgnn.json"]}, sys.argv[3])
"""


def _inputs(model, atoms):
    g = model.graph(atoms)
    cell = g[K.CELL]
    shifts = np.rint(g[K.EDGE_SHIFT] @ np.linalg.inv(cell)) if cell.any() else np.zeros_like(g[K.EDGE_SHIFT])
    return (torch.as_tensor(g[K.POSITIONS]), torch.as_tensor(g[K.NUMBERS]), torch.as_tensor(cell),
            torch.as_tensor(g[K.EDGE_INDEX]), torch.as_tensor(shifts, dtype=torch.int64),
            torch.as_tensor(g[K.TRIPLET_A]), torch.as_tensor(g[K.TRIPLET_B]))


def test_exported_equals_eager_without_etgnn(make_model, structures, assert_close, assert_differs, tmp_path):
    model = make_model("float64", targets=NAMES)
    path = export_model(model, tmp_path / "model.pt2")
    cases = [structures["triclinic"], structures["CH3OH"], structures["wurtzite"].repeat((2, 1, 1))]
    torch.save([_inputs(model, a) for a in cases], tmp_path / "inputs.pt")
    run = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(path), str(tmp_path / "inputs.pt"),
                          str(tmp_path / "outs.pt")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    got = torch.load(tmp_path / "outs.pt")
    meta = json.loads(got["meta"])
    assert meta["inputs"] == list(INPUT_NAMES) and meta["dtype"] == "float64"
    assert meta["cutoff"] == model.config.model.cutoff and set(meta["targets"]) == set(NAMES)
    assert meta["targets"]["bec"] == {"level": "atom", "rank": 2, "unit": "", "key": "bec"}
    expected = model.predict(cases)
    for k, (atoms, out) in enumerate(zip(cases, got["outs"])):
        for name in NAMES:
            assert_close(out[name].numpy(), expected[k][name], 1e-10, f"{name} of structure {k}, exported")
    # different structures give different predictions: the comparison above can fail
    assert_differs(got["outs"][0]["bec"].numpy()[:2], expected[1]["bec"][:2], 1e-10, "bec of two structures")


def test_export_cli(make_model, structures, assert_close, assert_differs, tmp_path, capsys):
    """The artifact ``etgnn export`` writes from a saved model gives that model's numbers."""
    model = make_model("float32", targets=["dipole", "bec"])
    model.save(tmp_path / "model.ckpt")
    assert main(["export", str(tmp_path / "model.ckpt"), "-o", str(tmp_path / "m.pt2")]) == 0
    assert "inputs: positions, numbers, cell, edge_index, shifts, triplet_a, triplet_b" in capsys.readouterr().out
    program = torch.export.load(tmp_path / "m.pt2").module()
    cases = [structures["CH3OH"], structures["triclinic"]]
    expected = model.predict(cases)
    for atoms, want in zip(cases, expected):
        pos, numbers, cell, *graph = _inputs(model, atoms)
        with torch.no_grad():  # a float32 model takes float32 positions and cell
            got = program(pos.float(), numbers, cell.float(), *graph)
        for name in ("dipole", "bec"):
            assert_close(got[name].numpy(), want[name], 1e-5, f"exported {name}")
            assert np.abs(want[name]).max() > 1e-2  # a zero output would make the comparison void
    assert_differs(expected[0]["dipole"], expected[1]["dipole"], 1e-5, "dipoles of two structures")
    assert main(["export", str(tmp_path / "model.ckpt"), "-o", str(tmp_path / "m.pt")]) == 1
    assert "the artifact name must end in .pt2" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.ckpt"), "-o", str(tmp_path / "m.pt2")]) == 1
    assert "no model file at" in capsys.readouterr().err
