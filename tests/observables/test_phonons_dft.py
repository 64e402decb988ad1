"""``etgnn phonons`` against phonopy itself on real DFT force constants and BORN files.

Needs ``../shared/data/phonopy_born`` (phonopy's examples: DFT supercell forces and BORN files);
skipped cleanly without it.  Checked: the CLI fed the DFT BORN reproduces phonopy's LO and TO
frequencies to 1e-6 THz (NaCl: TO 4.62, LO 7.40 THz along x), the oscillator-strength sum rule,
the generalized Lyddane-Sachs-Teller relation (which ties the strengths and their units to
phonopy's independent NAC), zero strength of IR-inactive modes, and force constants from an ASE
calculator.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest

phonopy = pytest.importorskip("phonopy")

from etgnn.cli import main  # noqa: E402
from etgnn.observables import phonons as P  # noqa: E402
from etgnn.observables.born import to_ase_atoms  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "phonopy_born"
pytestmark = pytest.mark.skipif(not (DATA / "NaCl.FORCE_SETS").is_file(), reason=f"no DFT phonon data in {DATA}")

CRYSTALS = ["NaCl", "MgO", "ZnO", "SnO2", "Al2O3", "TiO2-anatase", "SiO2-HP"]
#: q directions (Cartesian) of the LO-TO tests: axes and a general direction
DIRECTIONS = [(1, 0, 0), (0, 0, 1), (1, 0.3, 0.2)]


def files(name: str) -> dict:
    return {"yaml": DATA / f"{name}.phonopy_disp.yaml", "fs": DATA / f"{name}.FORCE_SETS", "born": DATA / f"{name}.BORN"}


def phonopy_reference(name: str):
    """phonopy's own object, loaded as its documentation says (BORN read by phonopy.load)."""
    f = files(name)
    with warnings.catch_warnings():  # phonopy 4 notes that "auto" found a centred cell
        warnings.filterwarnings("ignore", message="primitive_matrix defaulted")
        return phonopy.load(f["yaml"], force_sets_filename=f["fs"], born_filename=f["born"])


def ours(name: str, symmetrize: bool = False):
    f = files(name)
    ph = P.load_phonopy(f["yaml"], force_sets=f["fs"])
    params = P.read_born(f["born"], ph)
    if symmetrize:  # site symmetry + exact acoustic sum rule
        params = P.nac_params(ph, params["born"], params["dielectric"], params["factor"])
    P.set_nac(ph, params)
    return ph


def read_csv(path) -> dict:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {s: [r for r in rows if r["set"] == s] for s in ("gamma", "gamma_nac")}


@pytest.mark.parametrize("name", CRYSTALS)
@pytest.mark.parametrize("direction", DIRECTIONS[::2])
def test_cli_born_file_gives_phonopys_frequencies(name, direction, tmp_path, capsys):
    f = files(name)
    out = tmp_path / "modes.csv"
    argv = ["phonons", "--born-file", str(f["born"]), "--phonopy", str(f["yaml"]), "--force-sets", str(f["fs"]),
            "--q-direction", *map(str, direction), "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "LO" in printed and "cm-1" in printed
    rows = read_csv(out)
    ref = phonopy_reference(name)
    q_red = ref.primitive.cell @ (np.asarray(direction, float) / np.linalg.norm(direction))
    ref.run_qpoints([[0, 0, 0]], nac_q_direction=q_red)
    lo_to = ref.qpoints.frequencies[0]
    ref.run_qpoints([[0, 0, 0]])
    to = ref.qpoints.frequencies[0]
    got_nac = np.array([float(r["frequency_THz"]) for r in rows["gamma_nac"]])
    got = np.array([float(r["frequency_THz"]) for r in rows["gamma"]])
    np.testing.assert_allclose(got_nac, lo_to, atol=1e-6, rtol=0, err_msg=f"{name} LO-TO along {direction}")
    np.testing.assert_allclose(got, to, atol=1e-6, rtol=0, err_msg=f"{name} Gamma without NAC")
    assert np.abs(got_nac - got).max() > 0.5, f"{name}: no LO-TO splitting along {direction}"
    cm = np.array([float(r["frequency_cm-1"]) for r in rows["gamma_nac"]])
    np.testing.assert_allclose(cm, lo_to * 33.3564095198152, rtol=1e-9, atol=1e-6)


def test_nacl_lo_to_values_and_labels():
    modes = P.gamma_modes(ours("NaCl"), (1, 0, 0))
    assert modes.nac_labels == ("acoustic",) * 3 + ("TO", "TO", "LO")
    assert modes.labels == ("acoustic",) * 3 + ("IR",) * 3
    np.testing.assert_allclose(modes.nac_frequencies[3:], [4.616, 4.616, 7.396], atol=1e-3)
    assert round(modes.nac_frequencies[3], 2) == 4.62 and round(modes.nac_frequencies[5], 2) == 7.40
    # the LO mode is polarized along q, the TO modes across it
    p = modes.nac_p[3:]
    assert abs(p[2, 0]) > 0.25 and np.abs(p[2, 1:]).max() < 1e-8 and np.abs(p[:2, 0]).max() < 1e-8


@pytest.mark.parametrize("name", CRYSTALS)
def test_oscillator_strength_sum_rule(name):
    """sum_m S_m = sum_k Z_k Z_k^T / M_k, over all 3N modes (completeness), with and without NAC."""
    ph = ours(name)
    modes = P.gamma_modes(ph, DIRECTIONS[2])
    z, m = ph.nac_params["born"], ph.primitive.masses
    expected = np.einsum("kab,kcb,k->ac", z, z, 1.0 / m)
    np.testing.assert_allclose(modes.strengths.sum(axis=0), expected, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(P.oscillator_strengths(modes.nac_p).sum(axis=0), expected,
                               atol=1e-12 * np.abs(expected).max())
    # not trivially true: the strengths of the optical modes alone differ from the total when the
    # file's charges miss the acoustic sum rule, and one mode's strength is far from the total
    assert np.abs(modes.strengths[-1] - expected).max() > 1e-3


@pytest.mark.parametrize("name", CRYSTALS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_generalized_lyddane_sachs_teller(name, direction):
    """q.eps0.q / q.eps_inf.q = prod_m w_LO,m^2(q) / prod_m w_TO,m^2 over the optical modes.

    eps0 comes from the oscillator strengths (etgnn), the LO frequencies from phonopy's NAC: the
    identity holds exactly when the Born charges obey the acoustic sum rule.
    """
    ph = ours(name, symmetrize=True)
    modes = P.gamma_modes(ph, direction)
    q = modes.direction
    lhs = q @ modes.epsilon_static @ q / (q @ ph.nac_params["dielectric"] @ q)
    rhs = np.prod(modes.nac_frequencies[3:] ** 2) / np.prod(modes.frequencies[3:] ** 2)
    assert abs(lhs / rhs - 1) < 1e-9, f"{name} along {direction}: eps0/eps_inf {lhs:.10f} vs LST {rhs:.10f}"
    assert lhs > 1.5  # a real ionic contribution, not 1 = 1


@pytest.mark.parametrize("name,active", [("SnO2", {"A2u", "Eu"}), ("TiO2-anatase", {"A2u", "Eu"})])
def test_ir_inactive_modes_carry_zero_strength(name, active):
    """Raman-only (g) and silent (A2g, B1u, B2u) modes of D4h crystals have S_m = 0 exactly."""
    ph = ours(name)
    modes = P.gamma_modes(ph)
    ph.run_irreps([0, 0, 0])
    sets, labels = ph.irreps.band_indices, ph.irreps._ir_labels  # phonopy's Mulliken labels per set
    scale = modes.intensities.max()
    seen = set()
    for bands, label in zip(sets, labels):
        if 0 in bands:  # the acoustic set
            continue
        total = modes.intensities[list(bands)].sum()
        seen.add(label)
        if label in active:
            assert total > 1e-3 * scale, f"{name} {label} at {modes.frequencies[bands[0]]:.3f} THz: IR-active, zero strength"
            assert set(modes.labels[b] for b in bands) == {"IR"}
        else:
            assert total < 1e-10 * scale, f"{name} {label}: IR-inactive mode with strength {total:.3e}"
            assert set(modes.labels[b] for b in bands) == {"inactive"}
    assert seen & active and seen - active, f"{name}: irreps {seen}"


class HarmonicCalculator:
    """Forces F = -Phi u of fixed force constants (n, n, 3, 3) around a reference supercell."""

    def __init__(self, reference, force_constants):
        from ase.calculators.calculator import Calculator

        self.ref, self.fc = reference, force_constants
        self.calc = type("Harmonic", (Calculator,), {"implemented_properties": ["forces"],
                                                      "calculate": self._calculate})()

    def _calculate(self, atoms=None, properties=("forces",), system_changes=None):
        assert (atoms.numbers == self.ref.numbers).all()
        d = atoms.get_scaled_positions(wrap=False) - self.ref.get_scaled_positions(wrap=False)
        u = (d - np.round(d)) @ np.asarray(atoms.cell)
        assert np.abs(u).max() < 0.1, "supercell atoms not in the reference order"
        self.calc.results = {"forces": -np.einsum("ijab,jb->ia", self.fc, u)}


def test_force_constants_from_an_ase_calculator():
    """An ASE calculator returning the DFT harmonic forces gives phonopy's DFT frequencies back."""
    f = files("NaCl")
    ref = phonopy.load(f["yaml"], force_sets_filename=f["fs"], born_filename=f["born"], is_compact_fc=False)
    harmonic = HarmonicCalculator(to_ase_atoms(ref.supercell), ref.force_constants)
    ph = P.phonopy_from_calculator(to_ase_atoms(ref.unitcell), harmonic.calc, ref.supercell_matrix,
                                   primitive_matrix=ref.primitive_matrix)
    P.set_nac(ph, P.read_born(f["born"], ph))
    got = P.gamma_modes(ph, (1, 0, 0))
    expected = P.gamma_modes(ours("NaCl"), (1, 0, 0))
    np.testing.assert_allclose(got.nac_frequencies, expected.nac_frequencies, atol=1e-6)
    ph.run_qpoints([[0.5, 0.25, 0.1]])
    ref.run_qpoints([[0.5, 0.25, 0.1]])
    np.testing.assert_allclose(ph.qpoints.frequencies, ref.qpoints.frequencies, atol=1e-6)


def test_band_plot_written(tmp_path):
    f = files("MgO")
    png = tmp_path / "bands.png"
    assert main(["phonons", "--born-file", str(f["born"]), "--phonopy", str(f["yaml"]), "--force-sets",
                 str(f["fs"]), "--band-plot", str(png), "--band-path", "GXWG"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bands = P.band_structure(ours("MgO"), "GXWG", npoints=11)
    assert [t for _, t in bands.ticks] == ["G", "X", "W", "G"]
    # Gamma is approached along each segment: LO-TO split at both ends of the path
    assert bands.frequencies[0, -1] > bands.frequencies[0, -2] + 5
    assert bands.frequencies[-1, -1] > bands.frequencies[-1, -2] + 5


@pytest.mark.parametrize("name,axes", [("MgO", [(0,), (1,), (2,)]), ("ZnO", [(2,), (0,), (1,)])])
def test_degenerate_modes_aligned_with_axes(name, axes):
    """Inside a degenerate IR-active set the eigenvectors are rotated so each mode charge lies along
    one Cartesian axis (cubic T1u: x, y, z; wurtzite E1: x, y), and they stay eigenvectors."""
    ph = ours(name)
    dm = ph.dynamical_matrix
    dm.run(np.zeros(3))
    d = dm.dynamical_matrix.real
    w2, vecs = np.linalg.eigh(d)
    freqs = ph.unit_conversion_factor * np.sign(w2) * np.sqrt(np.abs(w2))
    z, m = ph.nac_params["born"], ph.primitive.masses
    aligned = P.align_degenerate(freqs, vecs, z, m)
    np.testing.assert_allclose(aligned.T @ aligned, np.eye(len(w2)), atol=1e-12)
    np.testing.assert_allclose(d @ aligned, aligned * w2, atol=1e-9 * np.abs(w2).max())
    p = P.mode_effective_charges(z, m, aligned)
    active = [i for i in range(3, len(w2)) if p[i] @ p[i] > 1e-6]
    got = [tuple(np.flatnonzero(np.abs(p[i]) > 1e-8 * np.abs(p).max())) for i in active]
    assert got == axes, f"{name}: axes of the IR-active mode charges {got}"
    before = P.mode_effective_charges(z, m, vecs)
    assert any(len(np.flatnonzero(np.abs(before[i]) > 1e-3)) > 1 for i in active), "eigh already aligned them"


def test_force_constants_file_route(tmp_path):
    """--force-constants FORCE_CONSTANTS gives the same Gamma modes as --force-sets."""
    f = files("ZnO")
    ref = phonopy.load(f["yaml"], force_sets_filename=f["fs"], is_compact_fc=False)
    fc = tmp_path / "FORCE_CONSTANTS"
    phonopy.file_IO.write_FORCE_CONSTANTS(ref.force_constants, filename=str(fc))
    a, b = tmp_path / "fs.csv", tmp_path / "fc.csv"
    common = ["phonons", "--born-file", str(f["born"]), "--phonopy", str(f["yaml"]), "--q-direction", "0", "0", "1"]
    assert main([*common, "--force-sets", str(f["fs"]), "-o", str(a)]) == 0
    assert main([*common, "--force-constants", str(fc), "-o", str(b)]) == 0
    fa = [float(r["frequency_THz"]) for r in read_csv(a)["gamma_nac"]]
    fb = [float(r["frequency_THz"]) for r in read_csv(b)["gamma_nac"]]
    np.testing.assert_allclose(fa, fb, atol=1e-6)
    assert max(fa) > 15


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    f = files("MgO")
    base = ["phonons", "--born-file", str(f["born"]), "--force-sets", str(f["fs"])]
    assert main([*base, "--phonopy", str(tmp_path / "none.yaml")]) == 1
    assert capsys.readouterr().err.strip() == f"etgnn: error: DataError: phonopy yaml {tmp_path / 'none.yaml'}: no such file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("phonopy:\n  version: [\n")
    assert main([*base, "--phonopy", str(bad)]) == 1
    assert capsys.readouterr().err.startswith(f"etgnn: error: DataError: phonopy could not load {bad} with")
    assert main([*base, "--phonopy", str(f["yaml"]), "--band-plot", str(tmp_path / "b.png"), "--band-path", "GQX"]) == 1
    assert "band path 'GQX': unknown points Q; this lattice has G, K, L, U, W, X" in capsys.readouterr().err
    born = tmp_path / "BORN"
    born.write_text("# too many atoms\n1 0 0 0 1 0 0 0 1\n" + "2 0 0 0 2 0 0 0 2\n" * 3)
    assert main(["phonons", "--born-file", str(born), "--force-sets", str(f["fs"]), "--phonopy", str(f["yaml"])]) == 1
    assert capsys.readouterr().err.strip() == (
        f"etgnn: error: DataError: {born}: phonopy could not read this BORN file for the primitive cell MgO "
        "(2 atoms): Too many atoms in the BORN file (it should only contain symmetry-independent atoms)")


def test_born_file_of_another_crystal_is_refused(capsys):
    """Issue 23 item 10: ZnO's BORN file (2 atom lines, anisotropic eps_inf) for NaCl was accepted silently."""
    nacl, zno = files("NaCl"), files("ZnO")
    assert main(["phonons", "--born-file", str(zno["born"]), "--phonopy", str(nacl["yaml"]),
                 "--force-sets", str(nacl["fs"])]) == 1
    assert capsys.readouterr().err == (
        f"etgnn: error: DataError: {zno['born']}: this BORN file does not fit the crystal NaCl (space group Fm-3m): "
        "eps_inf breaks its point group m-3m by 0.941 (eps_inf diagonal 5.97, 5.97, 4.558; symmetrised 5.499, "
        "5.499, 5.499); the Born charge of Na (line 3) breaks its site symmetry by 0.0201 e; is it the file of another material, or of another orientation of this cell? (tolerance 0.1)\n")


@pytest.mark.parametrize("name", CRYSTALS)
def test_each_crystals_own_born_file_passes_the_check_silently(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours(name)
