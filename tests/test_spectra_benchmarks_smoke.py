"""``benchmarks/spectra_molecule.py --out DIR`` writes every output, the plot included, into DIR and
leaves the tracked ``docs/img`` and ``benchmarks/results`` files alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import etgnn

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_spectra_molecule_out_writes_nothing_tracked(tmp_path, single_thread):
    pytest.importorskip("pyscf")
    model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 4, "num_blocks": 1,
                                         "int_emb_size": 4, "basis_emb_size": 2, "num_spherical": 3,
                                         "cutoff": 4.0, "triplet_cutoff": 3.0, "dtype": "float64"},
                               "targets": {"apt": {"key": "apt", "level": "atom", "rank": 2, "sum_rule": True},
                                           "dipole": {"key": "dipole", "level": "structure", "rank": 1,
                                                      "reduce": "sum"}}})
    ckpt = tmp_path / "model.pt"
    model.save(ckpt)
    tracked = [ROOT / "docs" / "img" / "spectra_h2o_ir.png", ROOT / "benchmarks" / "results" / "spectra_molecule.md",
               ROOT / "benchmarks" / "results" / "spectra_molecule.json"]
    before = [p.stat().st_mtime_ns for p in tracked]
    spec = importlib.util.spec_from_file_location("spectra_molecule", ROOT / "benchmarks" / "spectra_molecule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    assert module.main([str(ckpt), "--out", str(out), "--steps", "400"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["spectra_h2o_ir.png", "spectra_molecule.json",
                                                      "spectra_molecule.md"]
    assert [p.stat().st_mtime_ns for p in tracked] == before
