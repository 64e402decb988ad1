"""``etgnn spectrum ir|raman`` end to end on a molecule vibrating at a known frequency."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import molecule
from ase.io import write

from etgnn.cli import main
from etgnn.observables import spectra as sp
from etgnn.observables.timeseries import predict_series

pytestmark = pytest.mark.usefixtures("single_thread")

F0 = 30.0  # THz (1000.7 cm^-1)
DT = 1.0  # fs
N_FRAMES = 400


def _trajectory(path, momenta=True):
    """H2O moving along a fixed displacement pattern, u(t) = A e cos(2 pi f0 t); exact velocities."""
    rng = np.random.default_rng(0)
    ref = molecule("H2O")
    e = rng.normal(size=(3, 3))
    e -= e.mean(axis=0)
    e /= np.linalg.norm(e)
    w = 2 * np.pi * F0 * 1e-3  # rad/fs
    frames = []
    for n in range(N_FRAMES):
        a = ref.copy()
        t = n * DT
        a.positions += 0.03 * e * np.cos(w * t)
        v = -0.03 * w * e * np.sin(w * t)  # Angstrom/fs
        if momenta:
            a.set_velocities(v / units.fs)
        frames.append(a)
    write(path, frames)
    return path


@pytest.fixture
def checkpoint(tmp_path, make_model):
    path = tmp_path / "model.pt"
    make_model(targets=("bec", "dipole", "rank2_sum")).save(path)
    return path


def _read(csv):
    data = np.loadtxt(csv, delimiter=",")
    header = [line for line in open(csv) if line.startswith("#")][-1][2:].strip().split(",")
    return header, data


@pytest.mark.parametrize("route", ["current", "dipole"])
def test_ir_cli_peak_at_the_vibration(tmp_path, checkpoint, route, capsys):
    traj = _trajectory(tmp_path / "md.extxyz")
    out, png = tmp_path / "ir.csv", tmp_path / "ir.png"
    rc = main(["spectrum", "ir", str(checkpoint), str(traj), "--timestep", str(DT), "--route", route,
               "--temperature", "300", "-o", str(out), "--plot", str(png), "--batch-size", "7"])
    assert rc == 0
    header, data = _read(out)
    assert header == ["freq_cm1", "freq_THz", "absorption", "current_psd"]
    assert "(km/mol)/cm^-1" in open(out).read()  # a molecule: molar cross section
    resolution = 1e3 / ((N_FRAMES - 1) // 2 * DT)
    assert abs(data[np.argmax(data[:, 2]), 1] - F0) < resolution
    assert png.stat().st_size > 1000
    assert "strongest absorption peak" in capsys.readouterr().out


def test_current_route_series_is_chunk_independent(tmp_path, checkpoint, make_model):
    traj = _trajectory(tmp_path / "md.extxyz")
    model = make_model(targets=("bec", "dipole", "rank2_sum"))
    a = predict_series(model, traj, "current", batch_size=3)
    b = predict_series(model, traj, "current", batch_size=64)
    np.testing.assert_allclose(a.values, b.values, atol=1e-12)
    assert a.values.shape == (N_FRAMES, 3) and a.volume is None and a.target == "bec"
    # J = sum_k Z_k v_k frame by frame
    import ase.io

    frame = ase.io.read(traj, index=5)
    z = model.predict(frame)[0]["bec"]
    np.testing.assert_allclose(a.values[5], sp.polarization_current(z, frame.get_velocities() * units.fs))
    # kinetic temperature of the trajectory, 3N degrees of freedom
    temps = [f.get_kinetic_energy() * 2 / (9 * units.kB) for f in ase.io.iread(traj)]
    assert a.temperature == pytest.approx(np.mean(temps), rel=1e-10)


def test_raman_cli(tmp_path, checkpoint):
    traj = _trajectory(tmp_path / "md.extxyz")
    out = tmp_path / "raman.csv"
    assert main(["spectrum", "raman", str(checkpoint), str(traj), "--timestep", str(DT), "-o", str(out)]) == 0
    header, data = _read(out)
    assert header == ["freq_cm1", "freq_THz", "isotropic", "anisotropic", "polarized", "depolarized"]
    resolution = 1e3 / ((N_FRAMES - 1) // 2 * DT)
    assert abs(data[np.argmax(data[:, 4]), 1] - F0) < resolution
    ratio = data[:, 5] / data[:, 4]
    assert np.all(ratio[data[:, 4] > 1e-3 * data[:, 4].max()] <= 0.75 + 1e-9)  # depolarization <= 3/4


def test_cli_errors_are_one_line(tmp_path, checkpoint, capsys):
    traj = _trajectory(tmp_path / "still.extxyz", momenta=False)
    base = ["spectrum", "ir", str(checkpoint), str(traj), "--timestep", "1", "-o", str(tmp_path / "x.csv")]
    assert main(base) == 1
    assert "frame 0: no velocities or momenta; the current route needs them" in capsys.readouterr().err
    assert main(base + ["--route", "dipole"]) == 1
    assert "no velocities to take the temperature from: give --temperature" in capsys.readouterr().err
    assert main(base + ["--bec-target", "dipole"]) == 1
    err = capsys.readouterr().err
    assert "target 'dipole' is structure rank 1, but Born charges need a target of level atom and rank 2" in err
    assert "bec (atom rank 2), dipole (structure rank 1), rank2_sum (structure rank 2)" in err
    assert main(base + ["--route", "dipole", "--temperature", "300", "--max-lag", "1000"]) == 1
    assert "--max-lag 1000.0 fs is 1000 frames" in capsys.readouterr().err
    assert main(["spectrum", "ir", str(checkpoint), str(tmp_path / "nope.xyz"), "--timestep", "1",
                 "-o", "x.csv"]) == 1
    assert "trajectory not found" in capsys.readouterr().err


def test_traj_and_velocities_arrays(tmp_path, make_model):
    """ASE .traj and an extxyz 'velocities' array (A/fs) give the same current as extxyz momenta."""
    import ase.io

    model = make_model(targets=("bec", "dipole", "rank2_sum"))
    xyz = _trajectory(tmp_path / "md.extxyz")
    frames = list(ase.io.iread(xyz))
    ase.io.write(tmp_path / "md.traj", frames)
    plain = []
    for f in frames:
        g = f.copy()
        g.new_array("velocities", f.get_velocities() * units.fs)  # Angstrom/fs
        del g.arrays["momenta"]
        plain.append(g)
    ase.io.write(tmp_path / "vel.extxyz", plain)
    ref = predict_series(model, xyz, "current").values
    np.testing.assert_allclose(predict_series(model, tmp_path / "md.traj", "current").values, ref, atol=1e-12)
    got = predict_series(model, tmp_path / "vel.extxyz", "current", velocity_unit="A/fs").values
    np.testing.assert_allclose(got, ref, atol=1e-7)  # extxyz keeps 8 decimals
    (tmp_path / "junk.qqq").write_text("not a trajectory\n")
    from etgnn.errors import DataError

    with pytest.raises(DataError, match="junk.qqq: cannot read the trajectory with ase.io"):
        predict_series(model, tmp_path / "junk.qqq", "dipole")
