"""The model -> Born charges -> phonopy path with a tiny random etgnn model (no shared data needed).

A perturbed random-weight model with a per-atom rank-2 target with ``sum_rule`` and a structure
rank-2 target ``ij=ji`` goes through ``etgnn export-born`` (BORN read back by phonopy's own reader:
site symmetry and acoustic sum rule exact) and ``etgnn phonons`` on EMT force constants (LO-TO
split, exact sum rule and Lyddane-Sachs-Teller relation), plus the target selection and CLI errors.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.spacegroup import crystal

phonopy = pytest.importorskip("phonopy")

from etgnn.cli import main  # noqa: E402
from etgnn.config import TargetConfig  # noqa: E402
from etgnn.data._dfpt import symmetry_operations  # noqa: E402
from etgnn.errors import ConfigError, DataError  # noqa: E402
from etgnn.observables import born as B  # noqa: E402
from etgnn.observables import phonons as P  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


def rutile() -> "ase.Atoms":  # noqa: F821
    """SnO2 rutile (P4_2/mnm): O on a site of symmetry mmm with anisotropic Born charges."""
    return crystal(["Sn", "O"], basis=[(0, 0, 0), (0.3056, 0.3056, 0)], spacegroup=136,
                   cellpar=[4.737, 4.737, 3.186, 90, 90, 90])


def structures() -> dict:
    return {"rutile": rutile(), "wurtzite": bulk("ZnO", "wurtzite", a=3.25, c=5.2),
            "rocksalt-conventional": bulk("NaCl", "rocksalt", a=5.64, cubic=True)}


def cartesian_ops(atoms, symprec=1e-5):
    """(R_cart, permutation) of each space-group operation: atom k goes to atom perm[k]."""
    rot, trans, _ = symmetry_operations(atoms, symprec)
    frac, a = atoms.get_scaled_positions(), np.asarray(atoms.cell).T
    for r, t in zip(rot, trans):
        moved = frac @ r.T + t
        d = moved[:, None, :] - frac[None, :, :]
        perm = np.argmin(np.abs(d - np.round(d)).sum(axis=2), axis=1)
        yield a @ r @ np.linalg.inv(a), perm


def site_symmetry_error(atoms, z) -> float:
    """max over operations and atoms of |Z_perm(k) - R Z_k R^T|."""
    return max(float(np.abs(z[perm] - np.einsum("ab,kbc,dc->kad", r, z, r)).max())
               for r, perm in cartesian_ops(atoms))


CONFIG = {"model": {"hidden_channels": 16, "triplet_channels": 8, "num_blocks": 2, "int_emb_size": 8,
                    "basis_emb_size": 4, "num_spherical": 4, "cutoff": 4.5, "triplet_cutoff": 3.3,
                    "dtype": "float64", "seed": 3},
          "targets": {"bec": {"key": "becs", "level": "atom", "rank": 2, "sum_rule": True},
                      "dielectric": {"key": "eps", "level": "structure", "rank": 2, "symmetry": "ij=ji"}}}


@pytest.fixture
def model(perturb):
    """Tiny random model with O(1) anisotropic predictions (conftest's perturbation) and eps_inf
    shifted by +6 (every element's isotropic offset), so that it is positive definite like a real one."""
    import torch

    import etgnn

    m = perturb(etgnn.build_model(CONFIG), seed=3).eval()
    with torch.no_grad():
        m.heads["dielectric"].normalizer.element_shift[:, 0] += 6.0
    return m


@pytest.fixture
def model_file(model, tmp_path):
    path = tmp_path / "model.pt"
    model.save(path)
    return path


@pytest.mark.parametrize("name", list(structures()))
def test_export_born_read_back_by_phonopy(name, model_file, model, tmp_path, capsys):
    atoms = structures()[name]
    poscar = tmp_path / "POSCAR"
    atoms.write(poscar, format="vasp")
    out = tmp_path / "BORN"
    assert main(["export-born", str(model_file), str(poscar), "-o", str(out)]) == 0
    assert "BORN file written" in capsys.readouterr().out
    pred = model.predict([atoms])[0]
    z_sym, eps_sym = B.symmetrize_born(atoms, pred["bec"], pred["dielectric"])
    params = phonopy.file_IO.parse_BORN(B.to_phonopy_atoms(atoms), filename=str(out))
    np.testing.assert_allclose(params["born"], z_sym, atol=1e-11)
    np.testing.assert_allclose(params["dielectric"], eps_sym, atol=1e-11)
    assert np.abs(params["born"].sum(axis=0)).max() < 1e-10  # acoustic sum rule in the file
    assert site_symmetry_error(atoms, params["born"]) < 1e-10
    np.testing.assert_allclose(eps_sym, eps_sym.T, atol=1e-12)
    # the file lists only the inequivalent atoms: one line per orbit
    lines = [s for s in out.read_text().splitlines() if s.strip()]
    _, _, orbits = symmetry_operations(atoms)
    assert len(lines) == 2 + len(set(orbits)) < 2 + len(atoms)
    assert np.abs(params["born"]).max() > 0.1  # the model predicts non-trivial charges


def test_symmetrize_born_imposes_site_symmetry_and_sum_rule(assert_differs):
    """Unsymmetric, non-neutral input becomes site-symmetric and neutral (and is otherwise kept)."""
    atoms = rutile()
    rng = np.random.default_rng(0)
    z = rng.normal(size=(len(atoms), 3, 3))
    eps = rng.normal(size=(3, 3)) + 5 * np.eye(3)
    assert site_symmetry_error(atoms, z) > 0.1 and np.abs(z.sum(axis=0)).max() > 0.1
    z_sym, eps_sym = B.symmetrize_born(atoms, z, eps)
    assert site_symmetry_error(atoms, z_sym) < 1e-12
    assert np.abs(z_sym.sum(axis=0)).max() < 1e-12
    assert_differs(z_sym, z, 1e-12, "symmetrised Born charges")
    # tetragonal point group: eps diagonal with eps_xx = eps_yy
    np.testing.assert_allclose(eps_sym, np.diag([eps_sym[0, 0]] * 2 + [eps_sym[2, 2]]), atol=1e-12)
    np.testing.assert_allclose(np.trace(eps_sym), np.trace(eps), atol=1e-12)
    # idempotent
    again = B.symmetrize_born(atoms, z_sym, eps_sym)
    np.testing.assert_allclose(again[0], z_sym, atol=1e-12)


def test_export_born_primitive_of_conventional_cell(model_file, model, tmp_path):
    """A conventional fcc cell with --primitive-matrix F lists phonopy's primitive-cell atoms."""
    atoms = structures()["rocksalt-conventional"]
    poscar, out = tmp_path / "POSCAR", tmp_path / "BORN"
    atoms.write(poscar, format="vasp")
    assert main(["export-born", str(model_file), str(poscar), "-o", str(out), "--primitive-matrix", "F",
                 "--factor", "14.4"]) == 0
    ph = phonopy.Phonopy(B.to_phonopy_atoms(atoms), supercell_matrix=np.eye(3, dtype=int), primitive_matrix="F")
    params = phonopy.file_IO.parse_BORN(ph.primitive, filename=str(out))
    assert params["factor"] == 14.4 and len(params["born"]) == 2
    z = model.predict([atoms])[0]["bec"]
    na, cl = z[atoms.numbers == 11].mean(axis=0), z[atoms.numbers == 17].mean(axis=0)
    np.testing.assert_allclose(params["born"], [na, cl], atol=1e-10)
    assert abs(na[0, 0]) > 0.1
    np.testing.assert_allclose(na, na[0, 0] * np.eye(3), atol=1e-10)  # cubic site: isotropic


@pytest.fixture
def emt_phonopy_files(tmp_path):
    """phonopy_disp.yaml + FORCE_SETS of CsCl-type CuAl from EMT forces (2x2x2 supercell)."""
    ph = P.phonopy_from_calculator(bulk("CuAl", "cesiumchloride", a=2.95), EMT(), [2, 2, 2])
    yaml, fs = tmp_path / "phonopy_disp.yaml", tmp_path / "FORCE_SETS"
    ph.save(yaml, settings={"force_sets": False, "displacements": True})
    phonopy.file_IO.write_FORCE_SETS(ph.dataset, filename=str(fs))
    return yaml, fs


def test_model_to_phonons_cli(model_file, model, emt_phonopy_files, tmp_path, capsys):
    yaml, fs = emt_phonopy_files
    out, png = tmp_path / "modes.csv", tmp_path / "bands.png"
    assert main(["phonons", str(model_file), "--phonopy", str(yaml), "--force-sets", str(fs),
                 "--q-direction", "0", "0", "1", "-o", str(out), "--band-plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "targets bec, dielectric" in printed and "eps_0" in printed
    assert png.read_bytes()[:4] == b"\x89PNG"
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    nac = [r for r in rows if r["set"] == "gamma_nac"]
    to = [r for r in rows if r["set"] == "gamma"]
    assert [r["character"] for r in nac] == ["acoustic"] * 3 + ["TO", "TO", "LO"]
    f_lo, f_to = float(nac[5]["frequency_THz"]), float(to[5]["frequency_THz"])
    assert f_lo > f_to + 0.1
    # the same numbers from the Python API, with the model's charges
    ph = P.load_phonopy(yaml, force_sets=fs)
    z, eps = B.predict_born(model, B.to_ase_atoms(ph.primitive))
    P.set_nac(ph, P.nac_params(ph, z, eps))
    modes = P.gamma_modes(ph, (0, 0, 1))
    np.testing.assert_allclose([float(r["frequency_THz"]) for r in nac], modes.nac_frequencies, rtol=1e-10, atol=1e-10)
    # exact relations: strength sum rule and LST (cubic: eps0/eps_inf = (w_LO/w_TO)^2)
    zs, m = ph.nac_params["born"], ph.primitive.masses
    s = np.array([[float(r[f"S_{a}{b}"]) for a in "xyz" for b in "xyz"] for r in to]).reshape(-1, 3, 3)
    np.testing.assert_allclose(s.sum(axis=0), np.einsum("kab,kcb,k->ac", zs, zs, 1 / m), rtol=1e-10, atol=1e-14)
    lst = modes.epsilon_static[2, 2] / ph.nac_params["dielectric"][2, 2]
    assert lst == pytest.approx((modes.nac_frequencies[5] / modes.frequencies[5]) ** 2, rel=1e-9)
    assert np.abs(zs.sum(axis=0)).max() < 1e-12 and abs(zs[0, 0, 0]) > 0.1


def test_born_file_and_checkpoint_exclusive(model_file, emt_phonopy_files, tmp_path, capsys):
    yaml, fs = emt_phonopy_files
    born = tmp_path / "BORN"
    born.write_text("# x\n1 0 0 0 1 0 0 0 1\n1 0 0 0 1 0 0 0 1\n-1 0 0 0 -1 0 0 0 -1\n")
    base = ["--phonopy", str(yaml), "--force-sets", str(fs)]
    assert main(["phonons", str(model_file), "--born-file", str(born), *base]) == 1
    assert capsys.readouterr().err.strip() == "etgnn: error: ConfigError: give either CHECKPOINT or --born-file, not both"
    assert main(["phonons", *base]) == 1
    assert "give CHECKPOINT (a model predicting Born charges and eps_inf) or --born-file BORN" in capsys.readouterr().err
    assert main(["phonons", "--born-file", str(tmp_path / "nope"), *base]) == 1
    assert capsys.readouterr().err.strip() == f"etgnn: error: DataError: BORN file {tmp_path / 'nope'}: no such file"
    assert main(["phonons", "--born-file", str(born), *base, "--q-direction", "0", "0", "0"]) == 1
    assert "q direction must be 3 finite numbers, not all zero" in capsys.readouterr().err


def test_eps_must_be_positive_definite(emt_phonopy_files):
    ph = P.load_phonopy(*emt_phonopy_files)
    z = np.array([np.eye(3), -np.eye(3)])
    with pytest.raises(DataError, match=r"eps_inf of AlCu is not positive definite \(eigenvalues -0.5, 2, 2\)"):
        P.nac_params(ph, z, np.diag([2.0, 2.0, -0.5]), symmetrize=False)
    with pytest.raises(DataError, match=r"do not fit the primitive cell AlCu: expected \(2, 3, 3\) / \(3, 3\)"):
        P.nac_params(ph, z[:1], np.eye(3))


def target(level, rank, sum_rule=False):
    return TargetConfig(key="k", level=level, rank=rank, sum_rule=sum_rule)


def test_select_born_targets():
    targets = {"z": target("atom", 2, True), "apt": target("atom", 2), "eps": target("structure", 2),
               "dipole": target("structure", 1)}
    assert B.select_born_targets(targets) == ("z", "eps")
    assert B.select_born_targets(targets, bec_target="apt") == ("apt", "eps")
    with pytest.raises(ConfigError, match=r"has no target 'bec' \(--bec-target\); its targets: z \(atom, rank 2, "
                                          r"sum_rule\), apt \(atom, rank 2\), eps \(structure, rank 2\), dipole"):
        B.select_born_targets(targets, bec_target="bec")
    with pytest.raises(ConfigError, match="--eps-target 'dipole' of the model is a structure rank-1 target"):
        B.select_born_targets(targets, eps_target="dipole")
    two = {**targets, "z2": target("atom", 2, True), "alpha": target("structure", 2)}
    with pytest.raises(ConfigError, match=r"cannot choose the Born-charge \(per-atom rank 2\) target, several "
                                          r"\(z, z2\) found; name it with --bec-target"):
        B.select_born_targets(two)
    with pytest.raises(ConfigError, match=r"cannot choose the eps_inf \(structure rank 2\) target, several "
                                          r"\(eps, alpha\) found; name it with --eps-target"):
        B.select_born_targets(two, bec_target="z")
    with pytest.raises(ConfigError, match="none found"):
        B.select_born_targets({"f": target("atom", 1)})
    # among several, the shipped models' default names win (dielectric-v1: PBEsol and PBE heads)
    shipped = {"born_charges": target("atom", 2, True), "epsilon": target("structure", 2),
               "born_charges_pbe": target("atom", 2, True), "epsilon_pbe": target("structure", 2)}
    assert B.select_born_targets(shipped) == ("born_charges", "epsilon")
    assert B.select_born_targets(shipped, "born_charges_pbe", "epsilon_pbe") == ("born_charges_pbe", "epsilon_pbe")


def test_shape_errors():
    atoms = rutile()
    with pytest.raises(DataError, match=r"Born charges of O4Sn2 have shape \(2, 3, 3\), expected \(n_atoms=6, 3, 3\)"):
        B.symmetrize_born(atoms, np.zeros((2, 3, 3)), np.eye(3))
    with pytest.raises(ConfigError, match="primitive matrix 'X'"):
        B.born_file_text(atoms, np.zeros((6, 3, 3)), np.eye(3), primitive_matrix="X")


ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "phonopy_born"


@pytest.mark.skipif(not (DATA / "NaCl.FORCE_SETS").is_file(), reason=f"no DFT phonon data in {DATA}")
def test_lo_to_benchmark_script_runs(model_file, tmp_path):
    """benchmarks/phonons_lo_to.py writes its report for a checkpoint (here the random model)."""
    spec = importlib.util.spec_from_file_location("phonons_lo_to", ROOT / "benchmarks" / "phonons_lo_to.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "report.md"
    assert script.main([str(model_file), "--data", str(DATA), "-o", str(out), "--directions", "x"]) == 0
    text = out.read_text()
    for name in script.CRYSTALS:
        assert f"| {name} | x |" in text and f"| {name} | the checkpoint names no training file |" in text
    assert "| NaCl | x | 4.62 | 7.40 |" in text  # the DFT column is phonopy's NaCl


def test_exported_born_gives_the_models_phonons(model_file, emt_phonopy_files, tmp_path, capsys):
    """export-born (STRUCTURE = the phonopy yaml) then phonons --born-file == phonons CHECKPOINT."""
    yaml, fs = emt_phonopy_files
    born, a, b = tmp_path / "BORN", tmp_path / "model.csv", tmp_path / "born.csv"
    assert main(["export-born", str(model_file), str(yaml), "-o", str(born)]) == 0
    base = ["--phonopy", str(yaml), "--force-sets", str(fs), "--q-direction", "1", "1", "0"]
    assert main(["phonons", str(model_file), *base, "-o", str(a), "--reference-born", str(born)]) == 0
    printed = capsys.readouterr().out
    assert f"reference: BORN file {born}" in printed and "ref THz" in printed
    assert main(["phonons", "--born-file", str(born), *base, "-o", str(b)]) == 0

    def freqs(path):  # (set, mode) -> THz; the acoustic modes are round-off around 0
        with open(path) as fh:
            rows = list(csv.DictReader(fh))
        assert all(abs(float(r["frequency_THz"])) < 1e-5 for r in rows if r["character"] == "acoustic")
        return np.array([float(r["frequency_THz"]) for r in rows if r["character"] != "acoustic"])

    np.testing.assert_allclose(freqs(a), freqs(b), rtol=1e-10)
    assert len(freqs(a)) == 6 and freqs(a).max() > 1.0


@pytest.mark.parametrize(("name", "what"), [
    ("molecule", "a molecule (no cell)"),
    ("slab", "periodic along a, b only"),
])
def test_export_born_needs_a_crystal(name, what, model_file, tmp_path, capsys):
    """A molecule or a slab: one message naming the file (was an spglib traceback)."""
    from ase.build import fcc111, molecule

    atoms = molecule("H2O") if name == "molecule" else fcc111("Al", (1, 1, 2), vacuum=5.0)
    atoms.info.pop("adsorbate_info", None)  # not writable as extxyz
    path, out = tmp_path / f"{name}.extxyz", tmp_path / "BORN"
    atoms.write(path)
    assert main(["export-born", str(model_file), str(path), "-o", str(out)]) == 1
    assert capsys.readouterr().err == (f"etgnn: error: DataError: {path}: a BORN file is for a crystal (a cell "
                                       f"periodic along a, b and c); this is {what}\n")
    assert not out.exists()


def test_export_born_primitive_matrix_that_does_not_fit(model_file, tmp_path, capsys):
    """--primitive-matrix F on a cell that is already primitive: the numbers and what to do (was a
    phonopy 'Cell trimming failed' traceback)."""
    poscar, out = tmp_path / "POSCAR", tmp_path / "BORN"
    bulk("NaCl", "rocksalt", a=5.64).write(poscar, format="vasp")
    assert main(["export-born", str(model_file), str(poscar), "-o", str(out), "--primitive-matrix", "F"]) == 1
    assert capsys.readouterr().err == (
        f"etgnn: error: DataError: {poscar}: primitive matrix F does not fit this cell of 2 atoms (NaCl): it keeps "
        "0.25 of its volume, room for 0.5 atoms; the cell is already primitive (spglib finds 2 atoms): leave out "
        "--primitive-matrix (or give auto)\n")
    assert not out.exists()
    numbers = "0 0.5 0.5 0.5 0 0.5 0.5 0.5 0".split()
    assert main(["export-born", str(model_file), str(poscar), "-o", str(out), "--primitive-matrix", *numbers]) == 1
    assert "primitive matrix [[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]] does not fit" in capsys.readouterr().err
    assert main(["export-born", str(model_file), str(poscar), "-o", str(out), "--primitive-matrix", "auto"]) == 0


def _born_file(path, eps, charges, header="14.4"):
    lines = [header, " ".join(f"{x:g}" for x in np.ravel(eps))] + [" ".join(f"{x:g}" for x in np.ravel(z))
                                                                  for z in charges]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_born_file_of_another_material_is_refused_with_numbers(emt_phonopy_files, tmp_path):
    """CsCl-type CuAl (Pm-3m, both sites m-3m): an anisotropic eps_inf or Born charge cannot belong to
    it; the message gives the deviations (was accepted silently)."""
    yaml, fs = emt_phonopy_files
    ph = P.load_phonopy(yaml, force_sets=fs)
    iso = [np.eye(3) * 2.0, -np.eye(3) * 2.0]
    # its own kind of file: accepted as it is
    params = P.read_born(_born_file(tmp_path / "ok.BORN", np.eye(3) * 5, iso), ph)
    np.testing.assert_array_equal(params["born"], iso)
    wurtzite_like = _born_file(tmp_path / "ZnO.BORN", np.diag([5.97, 5.97, 4.558]),
                               [np.diag([2.1195, 2.1195, 2.14964]), -np.diag([2.1195, 2.1195, 2.14964])])
    with pytest.raises(DataError) as info:
        P.read_born(wurtzite_like, ph)
    assert str(info.value) == (
        f"{wurtzite_like}: this BORN file does not fit the crystal AlCu (space group Pm-3m): eps_inf breaks its "
        "point group m-3m by 0.941 (eps_inf diagonal 5.97, 5.97, 4.558; symmetrised 5.499, 5.499, 5.499); "
        "the Born charge of Cu (line 3) breaks its site symmetry by 0.0201 e; is it the file of another material, "
        "or of another orientation of this cell? (tolerance 0.1)")
    with pytest.raises(DataError, match=r"the Born charge of Al \(line 4\) breaks its site symmetry by 0\.5 e"):
        P.read_born(_born_file(tmp_path / "z.BORN", np.eye(3) * 5, [np.eye(3) * 2, -np.diag([2, 2, 2.75])]), ph)


def test_born_file_slightly_off_or_not_neutral_warns(emt_phonopy_files, tmp_path):
    yaml, fs = emt_phonopy_files
    ph = P.load_phonopy(yaml, force_sets=fs)
    with pytest.warns(UserWarning) as rec:
        P.read_born(_born_file(tmp_path / "a.BORN", np.diag([5, 5, 5.06]), [np.eye(3) * 2.3, -np.eye(3) * 2]), ph)
    assert [str(w.message) for w in rec] == [
        f"{tmp_path / 'a.BORN'}: eps_inf breaks the point group m-3m of AlCu by 0.04 (eps_inf diagonal 5, 5, 5.06; "
        "symmetrised 5.02, 5.02, 5.02): used as it is",
        f"{tmp_path / 'a.BORN'}: the Born charges break the acoustic sum rule by 0.3 e (largest component of their "
        "sum over the primitive cell of AlCu): used as they are"]


def test_born_file_naming_its_elements_in_another_order(emt_phonopy_files, tmp_path):
    yaml, fs = emt_phonopy_files
    ph = P.load_phonopy(yaml, force_sets=fs)
    charges = [np.eye(3) * 2.0, -np.eye(3) * 2.0]
    assert P.read_born(_born_file(tmp_path / "ok.BORN", np.eye(3) * 5, charges, "14.4 # Cu Al"), ph)
    bad = _born_file(tmp_path / "swapped.BORN", np.eye(3) * 5, charges, "14.4 # Z* of Al Cu")
    with pytest.raises(DataError) as info:
        P.read_born(bad, ph)
    assert str(info.value) == (f"{bad}: its first line names the atoms Al, Cu; the symmetry-inequivalent atoms of the "
                               "primitive cell AlCu are Cu, Al, in this order")
