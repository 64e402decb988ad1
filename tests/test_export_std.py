"""``etgnn export`` of a model with uncertainty (issue 26 item 2): a deep ensemble's program also
outputs ``NAME_std``, equal to ``model.predict(..., uncertainty=True)``'s (exactly 0 where the site
symmetry forbids a component, the unseen-element floor included) and listed in the metadata; an
LLPR model's export warns, in Python and on the command line, that its program gives the
predictions only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.spacegroup import crystal

import etgnn
from etgnn._warnings import UnseenElementWarning
from etgnn.cli import main
from etgnn.data.dataset import GraphDataset
from etgnn.export import export_model, program_inputs
from etgnn.uncertainty import LLPR, Ensemble

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"hidden_channels": 8, "triplet_channels": 4, "num_blocks": 1, "int_emb_size": 4, "basis_emb_size": 2,
        "num_spherical": 3, "cutoff": 4.0, "triplet_cutoff": 3.0, "dtype": "float64"}
TARGETS = {"bec": {"key": "bec", "level": "atom", "rank": 2, "sum_rule": True},
           "dielectric": {"key": "eps", "level": "structure", "rank": 2, "symmetry": "ij=ji"},
           "dipole": {"key": "mu", "level": "structure", "rank": 1, "reduce": "sum"},
           "energy": {"key": "E", "level": "structure", "rank": 0, "reduce": "sum"},
           "forces": {"key": "F", "level": "atom", "rank": 1, "gradient_of": "energy"}}
WITH_STD = ["bec", "dielectric", "dipole", "energy"]  # forces: a gradient, left to the caller
SCALES = {"bec": 1.7, "dielectric": 2.0, "dipole": 0.5, "energy": 1.0, "forces": 1.0}
LLPR_MESSAGE = ("this model's uncertainty is LLPR, whose standard deviations need forward-mode derivatives "
                "(torch.func.jvp under vmap) that torch.export cannot trace: the exported program gives the "
                "predictions only, without NAME_std; for those use etgnn (model.predict(..., uncertainty=True) "
                "or etgnn predict --uncertainty)")

#: the ensemble exported once for the whole file (tests must not modify it)
_EXPORTED: dict = {}


def rutile():
    """SnO2, ideal: tetragonal eps (off-diagonal forbidden), Born charges of mmm sites."""
    return crystal(["Sn", "O"], basis=[(0, 0, 0), (0.3056, 0.3056, 0)], spacegroup=136,
                   cellpar=[4.737, 4.737, 3.186, 90, 90, 90])


def tiny(perturb, seed: int, targets=TARGETS):
    return perturb(etgnn.build_model({"model": {**TINY, "seed": seed}, "targets": targets}), seed=seed).eval()


@pytest.fixture
def exported(perturb, tmp_path_factory):
    """``(ensemble of 3, program, metadata)``: H, O and Sn seen in training (C is not)."""
    if not _EXPORTED:
        model = tiny(perturb, 0)
        model.elements_seen[[1, 8, 50]] = True
        model.uncertainty = Ensemble([tiny(perturb, k) for k in (1, 2)], list(model.targets), scales=SCALES,
                                     calibration={"bec": {"method": "coverage2", "scale": 1.7}})
        path = export_model(model, tmp_path_factory.mktemp("export") / "ensemble.pt2")
        extra = {"etgnn.json": ""}
        program = torch.export.load(path, extra_files=extra)
        _EXPORTED.update(model=model, program=program.module(), meta=json.loads(extra["etgnn.json"]))
    return _EXPORTED["model"], _EXPORTED["program"], _EXPORTED["meta"]


def run(model, program, atoms):
    with torch.no_grad():
        return {k: v.numpy() for k, v in program(*program_inputs(model, atoms)).items()}


@pytest.mark.parametrize("case", ["rutile", "H2O"])
def test_ensemble_program_gives_the_std_of_predict(exported, case, assert_close):
    model, program, _ = exported
    atoms = rutile() if case == "rutile" else molecule("H2O")
    want = model.predict(atoms, uncertainty=True)[0]
    got = run(model, program, atoms)
    assert set(got) == set(WITH_STD) | {f"{n}_std" for n in WITH_STD}
    for name in WITH_STD:
        assert_close(got[name], want[name], 1e-10, f"{case}: exported {name}")
        std, ref = got[f"{name}_std"], want[f"{name}_std"]
        assert_close(std, ref, 1e-10, f"{case}: exported {name}_std", scale=max(np.abs(ref).max(), 1e-3))
        np.testing.assert_array_equal(std == 0, ref == 0, err_msg=f"{case}: {name}_std zero pattern")
    if case == "H2O":  # C2v: the dipole along x and y is forbidden, along z allowed
        assert np.all(got["dipole_std"][:2] == 0) and got["dipole_std"][2] > 1e-3, got["dipole_std"]
    else:  # tetragonal: eps off the diagonal forbidden; every Born charge has forbidden components
        off = ~np.eye(3, dtype=bool)
        assert np.all(got["dielectric_std"][off] == 0) and np.all(np.diag(got["dielectric_std"]) > 1e-3)
        assert (got["bec_std"] == 0).any() and (got["bec_std"] > 1e-3).any()


def test_ensemble_program_keeps_the_unseen_element_floor(exported, assert_close):
    model, program, meta = exported
    atoms = molecule("CH3OH")  # carbon: absent from the training data
    with pytest.warns(UnseenElementWarning, match="C"):
        want = model.predict(atoms, uncertainty=True)[0]
    got = run(model, program, atoms)
    for name in WITH_STD:
        std = got[f"{name}_std"]
        assert_close(std, want[f"{name}_std"], 1e-10, f"exported {name}_std, unseen element")
        assert std[std > 0].min() >= float(model.heads[name].scale) * (1 - 1e-12), name  # the floor acts
    assert meta["uncertainty"]["unseen_element_floor"] is True


def test_ensemble_metadata_lists_the_std_outputs(exported):
    _, _, meta = exported
    assert meta["std"] == {n: f"{n}_std" for n in WITH_STD}
    unc = meta["uncertainty"]
    assert unc["method"] == "ensemble" and unc["members"] == 3 and meta["ensemble"] == 3
    assert unc["scales"] == {n: SCALES[n] for n in WITH_STD}
    assert unc["calibration"]["bec"] == "coverage2" and unc["calibration"]["dipole"] is None
    assert unc["negligible_std"] == 1e-5 and unc["ddof"] == 1
    assert set(unc["not_exported"]) == {"forces"}


def test_llpr_export_warns_that_the_program_has_no_std(perturb, tmp_path, capsys):
    model = tiny(perturb, 0, targets={"dipole": TARGETS["dipole"]})
    frames = [molecule(n) for n in ("H2O", "NH3", "CH4", "CH3OH", "HCN", "C2H2")]
    rng = np.random.default_rng(0)
    labels = [{"dipole": p["dipole"] + 0.05 * rng.standard_normal(3)} for p in model.predict(frames)]
    data = GraphDataset([model.graph(a) for a in frames], labels, [str(k) for k in range(len(frames))])
    model.uncertainty = LLPR.fit(model, data, data)
    with pytest.warns(UserWarning) as record:
        path = export_model(model, tmp_path / "llpr.pt2")
    assert [str(w.message) for w in record] == [LLPR_MESSAGE]
    extra = {"etgnn.json": ""}
    program = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra["etgnn.json"])
    assert meta["std"] == {} and meta["uncertainty"]["method"] == "llpr"
    assert "torch.export cannot trace" in meta["uncertainty"]["note"]
    assert set(run(model, program, molecule("H2O"))) == {"dipole"}
    # the command line prints it as one warning line
    model.save(tmp_path / "llpr.ckpt")
    assert main(["export", str(tmp_path / "llpr.ckpt"), "-o", str(tmp_path / "cli.pt2")]) == 0
    assert f"etgnn: warning: {LLPR_MESSAGE}\n" in capsys.readouterr().err
