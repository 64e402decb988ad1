"""Tiny synthetic data and configs for the training tests.

Helpers reach tests as fixtures (``config``, ``data_file``, ``make_molecules``).  Labels come from exactly equivariant functions of the geometry, so a small model can learn them:
per-atom vectors ``v_i = sum_j (r_j - r_i) exp(-|r_ij|)`` and per-structure symmetric dyads
``D = I + mean_i sum_j e_ij (x) e_ij exp(-|r_ij|)``.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

TINY_MODEL = {"hidden_channels": 16, "triplet_channels": 8, "num_blocks": 1, "int_emb_size": 8,
              "basis_emb_size": 4, "num_radial": 4, "num_spherical": 3, "cutoff": 5.0, "triplet_cutoff": 3.0}


def make_molecules(n: int, seed: int = 0) -> list[Atoms]:
    """``n`` random molecules of 3-5 H/C/O atoms (all pairs within 5 Angstrom) with labels."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        k = int(rng.integers(3, 6))
        pos = rng.uniform(0.0, 2.6, size=(k, 3))
        d = pos[None] - pos[:, None]  # d[i, j] = r_j - r_i
        r = np.linalg.norm(d, axis=-1)
        if (r + 10 * np.eye(k)).min() < 0.9:
            continue
        w = np.exp(-r) * (1 - np.eye(k))
        vec = (d * w[..., None]).sum(axis=1)
        e = d / np.where(r > 0, r, 1)[..., None]
        dyad = np.eye(3) + np.einsum("ij,ija,ijb->ab", w, e, e) / k
        atoms = Atoms(numbers=rng.choice([1, 6, 8], size=k), positions=pos)
        atoms.new_array("vec", vec)
        atoms.info["dyad"] = dyad.reshape(-1)
        out.append(atoms)
    return out


def pair_potential_molecules(n: int, seed: int = 0) -> list[Atoms]:
    """``n`` random C5 clusters with the energy ``E`` and forces ``F`` of a Born-Mayer pair
    potential, E = sum_(i<j) 3 exp(-1.5 r_ij) (eV, Angstrom): labels for conservative forces."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        pos = rng.uniform(0.0, 3.0, size=(5, 3))
        d = pos[None] - pos[:, None]  # d[i, j] = r_j - r_i
        r = np.linalg.norm(d, axis=-1) + np.eye(5)
        if (r + 10 * np.eye(5)).min() < 1.0:
            continue
        w = 3.0 * np.exp(-1.5 * r) * (1 - np.eye(5))
        atoms = Atoms("C5", positions=pos)
        atoms.info["E"] = 0.5 * w.sum()
        atoms.new_array("F", -((1.5 * w / r)[..., None] * d).sum(axis=1))  # -dE/dr_i
        out.append(atoms)
    return out


def energy_forces_config(tmp_path: Path, data: Path, **training) -> dict:
    """Energy + conservative forces (``gradient_of``) of a tiny model on ``data``."""
    cfg = tiny_config(tmp_path, data, **training)
    cfg["targets"] = {"energy": {"key": "E", "level": "structure", "rank": 0, "reduce": "sum", "weight": 0.1},
                      "forces": {"key": "F", "level": "atom", "rank": 1, "gradient_of": "energy"}}
    cfg["data"]["split"] = [0.75, 0.25, 0.0]
    return cfg


def tiny_config(tmp_path: Path, data: Path, **training) -> dict:
    """A config dict for a tiny model on ``data`` writing to ``tmp_path/run``."""
    tr = {"max_epochs": 3, "batch_size": 8, "lr": 3e-3, "progress": False, "seed": 0} | training
    return {
        "model": dict(TINY_MODEL),
        "targets": {"vec": {"key": "vec", "level": "atom", "rank": 1, "unit": "e"},
                    "dyad": {"key": "dyad", "level": "structure", "rank": 2, "symmetry": "ij=ji", "loss": "mse"}},
        "data": {"train": str(data), "split": [0.6, 0.2, 0.2], "cache_dir": None, "num_workers": 0},
        "training": tr,
        "run_dir": str(tmp_path / "run"),
    }


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Tiny models gain nothing from intra-op threads (see tests/conftest.py)."""


@pytest.fixture(autouse=True)
def _no_parity_plots(request, monkeypatch):
    """Every run of ``train`` ends with two parity plots (~1 s each on a loaded 2-core CPU, a good
    part of a tiny run's time) that hardly any test looks at: drawn only in tests marked
    ``parity_plots`` (they check the files); elsewhere ``etgnn.train.plots.parity_plot`` draws nothing."""
    if request.node.get_closest_marker("parity_plots") is None:
        import etgnn.train.plots

        monkeypatch.setattr(etgnn.train.plots, "parity_plot", lambda *args, **kwargs: None)


@pytest.fixture(scope="session")
def data_file(tmp_path_factory) -> Path:
    """40 labelled molecules in an extxyz file (shared by the tests; read only)."""
    path = tmp_path_factory.mktemp("data") / "mols.extxyz"
    ase.io.write(path, make_molecules(40), format="extxyz")
    return path


@pytest.fixture(scope="session")
def pair_potential_file(tmp_path_factory) -> Path:
    """48 C5 clusters with Born-Mayer energies and forces (:func:`pair_potential_molecules`)."""
    path = tmp_path_factory.mktemp("data") / "pairs.extxyz"
    ase.io.write(path, pair_potential_molecules(48), format="extxyz")
    return path


@pytest.fixture
def energy_forces(tmp_path, pair_potential_file):
    """Factory ``energy_forces(**training) -> dict`` of :func:`energy_forces_config`."""
    return lambda **training: energy_forces_config(tmp_path, pair_potential_file, **training)


@pytest.fixture
def config(tmp_path, data_file):
    """Factory ``config(**training) -> dict`` of :func:`tiny_config` on :func:`data_file`."""
    return lambda **training: tiny_config(tmp_path, data_file, **training)


@pytest.fixture(name="make_molecules")
def _make_molecules_fixture():
    """:func:`make_molecules`: random labelled molecules."""
    return make_molecules
