"""``etgnn spectrum raman``: the CSV header and the plot's axis give the unit the polarizability
target declares, squared per THz (not a generic "polarizability units")."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.io import write

import etgnn
from etgnn.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")

MODEL = {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1, "int_emb_size": 8, "basis_emb_size": 4,
         "cutoff": 4.0, "triplet_cutoff": 3.0}


def _trajectory(path):
    rng = np.random.default_rng(0)
    ref, e = molecule("H2O"), rng.normal(size=(3, 3))
    frames = []
    for n in range(40):
        a = ref.copy()
        a.positions += 0.03 * e * np.cos(2 * np.pi * 0.03 * n)  # 30 THz, frames 1 fs apart
        frames.append(a)
    write(path, frames)
    return path


@pytest.mark.parametrize(("unit", "expected"), [("Angstrom^3", "(Angstrom^3)^2/THz"),
                                                ("", "(polarizability unit)^2/THz")], ids=["declared", "none"])
def test_raman_axis_and_csv_give_the_targets_unit(tmp_path, monkeypatch, unit, expected):
    target = {"key": "alpha", "level": "structure", "rank": 2, "reduce": "sum", "symmetry": "ij=ji", "unit": unit}
    etgnn.build_model({"model": MODEL, "targets": {"alpha": target}}).save(tmp_path / "model.pt")
    import matplotlib.figure

    labels = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (labels.append(fig.axes[0].get_ylabel()), save(fig, *a, **k))[1])
    assert main(["spectrum", "raman", str(tmp_path / "model.pt"), str(_trajectory(tmp_path / "traj.extxyz")),
                 "--timestep", "1", "-o", str(tmp_path / "raman.csv"), "--plot", str(tmp_path / "raman.png")]) == 0
    header = [line[2:].strip() for line in open(tmp_path / "raman.csv") if line.startswith("#")]
    for column in ("isotropic", "anisotropic", "polarized", "depolarized"):
        assert f"{column} [{expected}]" in header, header
    assert labels == [expected]
