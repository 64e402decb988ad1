"""Force constants from a force field (etgnn.observables.forcefield) and the spectra of ``etgnn phonons``.

Without any force-field package: the supercell length rule, the errors (unknown name, missing
package naming ``pip install 'etgnn[forcefield]'``, conflicting options), and the whole
``--structure`` route of the CLI with a stand-in force field that returns the DFT harmonic forces
(it must give phonopy's DFT frequencies back, and its eps(omega) must vanish at the LO frequency).
With SevenNet installed (the ``forcefield`` extra; skipped otherwise): NaCl from its POSCAR with the
default force field and the DFT BORN file, TO/LO within 6 % on average and eps_0 within 20 % of DFT (issue 27).
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from etgnn.errors import ConfigError
from etgnn.observables import forcefield as FF

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "phonopy_born"
needs_data = pytest.mark.skipif(not (DATA / "NaCl.FORCE_SETS").is_file(), reason=f"no DFT phonon data in {DATA}")


def test_supercell_length_rule():
    nacl = bulk("NaCl", "rocksalt", 5.69, cubic=True)
    np.testing.assert_array_equal(FF.supercell_for_length(nacl, 10.0), np.diag([2, 2, 2]))
    np.testing.assert_array_equal(FF.supercell_for_length(nacl, 11.38), np.diag([2, 2, 2]))
    np.testing.assert_array_equal(FF.supercell_for_length(nacl, 11.39), np.diag([3, 3, 3]))
    # hexagonal: the face distance along a is a sqrt(3)/2, not a
    zno = bulk("ZnO", "wurtzite", a=3.25, c=5.2)
    np.testing.assert_array_equal(FF.supercell_for_length(zno, 10.0), np.diag([4, 4, 2]))
    fcc = bulk("Cu", "fcc", 3.6)  # primitive: faces a/sqrt(3) = 2.08 A apart
    assert FF.supercell_for_length(fcc, 10.0)[0, 0] == 5


def test_unknown_and_missing_force_fields(monkeypatch):
    with pytest.raises(ConfigError, match="unknown force field 'no-such-ff'.*sevennet-mf-0"):
        FF.load_force_field("no-such-ff")
    fake = FF.ForceField("fake", "etgnn_no_such_package_xyz", "m", None, "MIT", "absent")
    monkeypatch.setitem(FF.FORCE_FIELDS, "fake", fake)
    with pytest.raises(ConfigError, match=r"pip install 'etgnn\[forcefield\]'"):
        FF.load_force_field("fake")
    assert "fake" not in FF.available_force_fields()
    assert FF.DEFAULT_FORCE_FIELD in FF.FORCE_FIELDS


def test_forcefield_module_imports_no_force_field_package():
    import subprocess
    import sys

    code = ("import sys, etgnn.cli, etgnn.observables.forcefield, etgnn.observables.phonons_ff; "
            "print(any(m.split('.')[0] in ('sevenn', 'chgnet', 'torch_geometric') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("argv, message", [
    (["--forcefield", "sevennet-0"], "--forcefield needs --structure"),
    ([], "give --phonopy YAML"),
    (["--structure", "X.cif", "--phonopy", "y.yaml", "--force-sets", "FS"], "not both"),
])
def test_cli_option_errors(argv, message, capsys, tmp_path):
    pytest.importorskip("phonopy")
    from etgnn.cli import main

    born = tmp_path / "BORN"
    born.write_text("14.4\n1 0 0 0 1 0 0 0 1\n")
    assert main(["phonons", "--born-file", str(born), *argv]) != 0
    assert message in capsys.readouterr().err


class _Harmonic:
    """An ASE calculator with the DFT harmonic forces F = -Phi u around the DFT supercell."""

    def __init__(self, reference, force_constants):
        from ase.calculators.calculator import Calculator

        self.ref, self.fc = reference, force_constants
        self.calc = type("Harmonic", (Calculator,), {"implemented_properties": ["energy", "forces"],
                                                      "calculate": self._calculate})()

    def _calculate(self, atoms=None, properties=("forces",), system_changes=None):
        if len(atoms) != len(self.ref):  # the unit cell, for --relax: at its minimum already
            self.calc.results = {"energy": 0.0, "forces": np.zeros((len(atoms), 3))}
            return
        assert (atoms.numbers == self.ref.numbers).all()
        d = atoms.get_scaled_positions(wrap=False) - self.ref.get_scaled_positions(wrap=False)
        u = (d - np.round(d)) @ np.asarray(atoms.cell)
        assert np.abs(u).max() < 0.1, "supercell atoms not in the reference order"
        forces = -np.einsum("ijab,jb->ia", self.fc, u)
        self.calc.results = {"energy": -0.5 * float((forces * u).sum()), "forces": forces}


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@needs_data
def test_cli_structure_route_with_dft_harmonic_forces(monkeypatch, tmp_path, capsys):
    phonopy = pytest.importorskip("phonopy")
    from etgnn.cli import main
    from etgnn.observables.born import to_ase_atoms

    ref = phonopy.load(DATA / "NaCl.phonopy_disp.yaml", force_sets_filename=DATA / "NaCl.FORCE_SETS",
                       born_filename=DATA / "NaCl.BORN", is_compact_fc=False, log_level=0)
    harmonic = _Harmonic(to_ase_atoms(ref.supercell), ref.force_constants)
    monkeypatch.setattr(FF, "load_force_field", lambda name, device="cpu": harmonic.calc)
    out = {k: tmp_path / f"{k}" for k in ("modes.csv", "spec.csv", "spec.png", "relaxed.vasp", "params.yaml")}
    argv = ["phonons", "--born-file", str(DATA / "NaCl.BORN"), "--structure", str(DATA / "NaCl.POSCAR-unitcell"),
            "--forcefield", "dft-harmonic", "--supercell", "2", "2", "2", "--relax", "-o", str(out["modes.csv"]),
            "--spectrum-csv", str(out["spec.csv"]), "--spectrum-plot", str(out["spec.png"]),
            "--save-structure", str(out["relaxed.vasp"]), "--save-phonopy", str(out["params.yaml"])]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "force field dft-harmonic" in text and "64 atoms" in text and "relaxed with dft-harmonic" in text
    ref.run_qpoints([[0, 0, 0]], nac_q_direction=[0.0, 0.5, 0.5])  # reduced direction of Cartesian x (fcc)
    lo = float(ref.qpoints.frequencies[0][-1])
    nac = [r for r in _rows(out["modes.csv"]) if r["set"] == "gamma_nac"]
    to = float(nac[3]["frequency_THz"])
    # the POSCAR gets ASE's masses (Cl 35.45), the yaml phonopy's (35.453): 2e-5 apart in frequency
    ref.run_qpoints([[0, 0, 0]])
    assert to == pytest.approx(float(ref.qpoints.frequencies[0][-1]), rel=5e-5)
    assert float(nac[5]["frequency_THz"]) == pytest.approx(lo, rel=5e-5)
    assert [r["character"] for r in nac[3:]] == ["TO", "TO", "LO"]
    # the spectra: eps(0) = eps_0, the reflectivity band between TO and LO, eps_re_x changes sign at LO
    spec = _rows(out["spec.csv"])
    nu = np.array([float(r["freq_THz"]) for r in spec])
    eps_re = np.array([float(r["eps_re_x"]) for r in spec])
    refl = np.array([float(r["reflectivity_x"]) for r in spec])
    assert "eps_re_y" not in spec[0]  # cubic: x only
    assert eps_re[0] == pytest.approx(6.2516, abs=1e-3)  # DFT eps_0 (mass-independent for two atoms)
    band = (nu > to + 0.3) & (nu < lo - 0.3)
    assert refl[band].min() > 0.8 and refl[nu > lo + 1.0].max() < 0.2
    crossing = nu[np.flatnonzero((eps_re[:-1] < 0) & (eps_re[1:] >= 0))]
    assert crossing[-1] == pytest.approx(lo, abs=0.02)  # damping 0.1 THz moves the zero by < 0.01 THz
    assert out["spec.png"].stat().st_size > 10_000 and out["relaxed.vasp"].is_file()
    # the saved calculation is phonopy's own: it reloads with the same force constants
    again = phonopy.load(out["params.yaml"], log_level=0, is_nac=False)
    again.run_qpoints([[0, 0, 0]])
    assert float(again.qpoints.frequencies[0][-1]) == pytest.approx(to, abs=1e-5)


@needs_data
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec(FF.FORCE_FIELDS[FF.DEFAULT_FORCE_FIELD].package) is None,
                    reason="the default force field's package is not installed (pip install 'etgnn[forcefield]')")
def test_nacl_default_force_field_within_goals(tmp_path):
    """Default force field on NaCl's POSCAR (DFT cell, not relaxed) + DFT BORN vs DFT: TO/LO <= 6 % on
    average, eps_0 <= 20 % (benchmarks/results/forcefield_phonons.md: 4.9 % and 8.8 % with SevenNet-l3i5)."""
    pytest.importorskip("phonopy")
    from etgnn.cli import main

    out = tmp_path / "modes.csv"
    assert main(["phonons", "--born-file", str(DATA / "NaCl.BORN"), "--structure", str(DATA / "NaCl.POSCAR-unitcell"),
                 "-o", str(out), "--spectrum-csv", str(tmp_path / "s.csv")]) == 0
    nac = [r for r in _rows(out) if r["set"] == "gamma_nac"]
    to, lo = float(nac[3]["frequency_THz"]), float(nac[5]["frequency_THz"])
    # issue 27's goal: mean absolute relative error of the TO and LO frequencies <= 6 %
    assert (abs(to / 4.6164 - 1) + abs(lo / 7.3963 - 1)) / 2 < 0.06, (to, lo)
    eps0 = float(_rows(tmp_path / "s.csv")[0]["eps_re_x"])
    assert abs(eps0 / 6.2516 - 1) < 0.2, eps0


@needs_data
def test_benchmark_script_with_dft_harmonic_forces(monkeypatch, tmp_path):
    """benchmarks/forcefield_phonons.py end to end on NaCl with the DFT forces as the 'force field': zero error."""
    phonopy = pytest.importorskip("phonopy")
    import importlib.util as iu
    import json

    from etgnn.observables.born import to_ase_atoms

    spec = iu.spec_from_file_location("ff_bench", Path(__file__).resolve().parents[2] / "benchmarks" / "forcefield_phonons.py")
    bench = iu.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ref = phonopy.load(DATA / "NaCl.phonopy_disp.yaml", force_sets_filename=DATA / "NaCl.FORCE_SETS",
                       is_compact_fc=False, log_level=0)
    harmonic = _Harmonic(to_ase_atoms(ref.supercell), ref.force_constants)
    monkeypatch.setattr(FF, "load_force_field", lambda name, device="cpu": harmonic.calc)
    out = tmp_path / "res"
    assert bench.main(["--forcefields", "dft-harmonic", "--crystals", "NaCl", "--data", str(DATA),
                       "--cache", str(tmp_path / "cache"), "-o", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    row = result["results"][0]
    assert row["b"]["mare_TO_LO"] < 1e-9 and row["b"]["max_eps0_error"] < 1e-9
    assert {"command", "date", "machine"} <= set(result["meta"])
    assert "| NaCl | dft-harmonic | dft | (b) |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 10_000
