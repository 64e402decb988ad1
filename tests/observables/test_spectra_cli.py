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


def _trajectory(path, momenta=True, times=False):
    """H2O moving along a fixed displacement pattern, u(t) = A e cos(2 pi f0 t); exact velocities.

    ``times``: write each frame's time (fs) as ``time_fs``; a number scales it.
    """
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
        if times:
            a.info["time_fs"] = t * float(times)
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


def _centroid(freq_thz, density, half_width=5.0):
    """Centre (THz) of the band of ``density`` within ``half_width`` of F0."""
    sel = np.abs(freq_thz - F0) < half_width
    return float(np.sum(freq_thz[sel] * density[sel]) / np.sum(density[sel]))


def _band_area(x, y, half_width=10.0, centre=F0):
    """Trapezoid area of ``y`` over ``x`` (THz or cm^-1 on the THz grid) within ``half_width`` THz of the line."""
    sel = np.abs(x[1] - centre) < half_width
    xs, ys = x[0][sel], y[sel]
    return float(np.sum((ys[1:] + ys[:-1]) * np.diff(xs)) / 2)


def _line_power(series, f0=F0, dt=DT):
    """Mean square of the f0 Fourier component of ``series`` (n_frames, ...), summed over components.

    The trajectory spans a whole number of periods of f0 (400 fs x 30 THz = 12), so this is the
    exact power of the line, computed without the spectra code.
    """
    x = np.asarray(series, dtype=float).reshape(len(series), -1)
    phase = np.exp(-2j * np.pi * f0 * 1e-3 * dt * np.arange(len(x)))
    amplitude = 2.0 / len(x) * (phase @ (x - x.mean(axis=0)))
    return float(np.sum(np.abs(amplitude) ** 2) / 2)


#: band intensity in km/mol per (e Angstrom/fs)^2 of <J.J> at 1 K: N_A <J^2> / (12 eps0 c^2 k_B T)
KM_MOL_PER_J2_K = (6.02214076e23 * (1.602176634e-19 * 1e-10 / 1e-15) ** 2
                   / (12 * 8.8541878128e-12 * 299792458.0**2 * 1.380649e-23) / 1e3)


@pytest.mark.parametrize("route", ["current", "dipole"])
def test_ir_cli_band_position_and_intensity(tmp_path, checkpoint, make_model, route, capsys):
    """The band sits at the vibration and its area is N_A <J^2> / (12 eps0 c^2 k_B T) km/mol.

    <J^2> of the line comes from the model's own tensors on the frames, outside the CLI: a timestep
    off by 15 % moves the band by 4.5 THz, a temperature off by 10x scales the area 10x.
    """
    import ase.io

    traj = _trajectory(tmp_path / "md.extxyz")
    out, png = tmp_path / "ir.csv", tmp_path / "ir.png"
    rc = main(["spectrum", "ir", str(checkpoint), str(traj), "--timestep", str(DT), "--route", route,
               "--temperature", "300", "-o", str(out), "--plot", str(png), "--batch-size", "7"])
    assert rc == 0
    header, data = _read(out)
    assert header == ["freq_cm1", "freq_THz", "absorption", "current_psd"]
    assert "(km/mol)/cm^-1" in open(out).read()  # a molecule: molar cross section
    assert _centroid(data[:, 1], data[:, 2]) == pytest.approx(F0, abs=0.1)
    assert abs(data[np.argmax(data[:, 2]), 1] - F0) < 0.7  # grid spacing 1.25 THz
    model = make_model(targets=("bec", "dipole", "rank2_sum"))
    frames = list(ase.io.iread(traj))
    preds = model.predict(frames)
    if route == "current":
        current = [np.einsum("kij,kj->i", p["bec"], f.get_velocities() * units.fs) for p, f in zip(preds, frames)]
    else:  # the central difference the route uses; the end frames are outside the whole periods
        mu = np.array([p["dipole"] for p in preds])
        current = np.vstack([mu[1:2] - mu[:1], (mu[2:] - mu[:-2]) / 2, mu[-1:] - mu[-2:-1]]) / DT
    expected = KM_MOL_PER_J2_K * _line_power(current) / 300.0
    area = _band_area((data[:, 0], data[:, 1]), data[:, 2])  # km/mol
    assert area == pytest.approx(expected, rel=0.03)
    assert png.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "strongest absorption peak at 100" in printed and "T = 300.0 K (given)" in printed


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
    assert a.times is None  # the file has no time_fs


@pytest.mark.parametrize("temperature", [None, 300.0])
def test_raman_cli(tmp_path, checkpoint, make_model, temperature):
    """Band at the vibration; areas = the line power of a = tr/3 and of the traceless part (times
    the harmonic quantum correction at the given temperature), computed from the model outside the CLI."""
    import ase.io

    traj = _trajectory(tmp_path / "md.extxyz")
    out = tmp_path / "raman.csv"
    extra = [] if temperature is None else ["--temperature", str(temperature)]
    assert main(["spectrum", "raman", str(checkpoint), str(traj), "--timestep", str(DT), "-o", str(out)] + extra) == 0
    header, data = _read(out)
    assert header == ["freq_cm1", "freq_THz", "isotropic", "anisotropic", "polarized", "depolarized"]

    def correction(f_thz):  # harmonic: x / (1 - exp(-x)), x = h f / k_B T (4.85 at 30 THz, 300 K)
        if temperature is None:
            return np.ones_like(f_thz)
        x = 6.62607015e-34 * np.maximum(f_thz, 1e-9) * 1e12 / (1.380649e-23 * temperature)
        return x / -np.expm1(-x)

    assert _centroid(data[:, 1], data[:, 4] / correction(data[:, 1])) == pytest.approx(F0, abs=0.1)
    ratio = data[:, 5] / data[:, 4]
    assert np.all(ratio[data[:, 4] > 1e-3 * data[:, 4].max()] <= 0.75 + 1e-9)  # depolarization <= 3/4
    alpha = np.array([p["rank2_sum"] for p in make_model(targets=("bec", "dipole", "rank2_sum")).predict(
        list(ase.io.iread(traj)))])
    alpha = 0.5 * (alpha + alpha.transpose(0, 2, 1))
    iso = np.trace(alpha, axis1=1, axis2=2) / 3
    aniso = alpha - iso[:, None, None] * np.eye(3)
    q = correction(np.array(F0))
    for column, power in ((2, _line_power(iso)), (3, _line_power(aniso)),
                          (4, _line_power(iso) + 2 / 15 * _line_power(aniso))):
        assert _band_area((data[:, 1], data[:, 1]), data[:, column]) == pytest.approx(q * power, rel=0.03)


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
    assert "--max-lag 1000 fs is 1000 frames of 1 fs; it must be between 1 and 399 frames" in capsys.readouterr().err
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


def _harmonic_water_trajectory(path, temperature=300.0, seed=0, dt=0.25, steps=4000, every=4):
    """NVE of H2O on a harmonic Hessian with modes at 1750, 3800, 3900 cm^-1, rigid motions free.

    Every vibration starts with k_B T (``thermalize_modes``), so the molecule neither drifts nor
    rotates: the kinetic energy lives in 3N - 6 = 3 degrees of freedom and averages to 3 k_B T / 2.
    Frames every ``every`` steps, with ``time_fs``.
    """
    from ase.md.verlet import VelocityVerlet

    from etgnn.observables.harmonic import THZ_PER_SQRT_EV_A2_AMU, HarmonicCalculator, thermalize_modes

    rng = np.random.default_rng(seed)
    ref = molecule("H2O")
    r = ref.positions - ref.get_center_of_mass()
    rigid = np.concatenate([np.tile(np.eye(3), (3, 1)), np.cross(np.eye(3)[:, None, :], r[None]).reshape(3, -1).T],
                           axis=1)
    sq = np.repeat(np.sqrt(ref.get_masses()), 3)
    basis = np.linalg.qr(np.concatenate([sq[:, None] * rigid, rng.normal(size=(9, 3))], axis=1))[0]
    lam = (np.array([1750.0, 3800.0, 3900.0]) / 33.35641 / THZ_PER_SQRT_EV_A2_AMU) ** 2
    hessian = sq[:, None] * (basis[:, 6:] * lam) @ basis[:, 6:].T * sq[None, :]
    atoms = ref.copy()
    thermalize_modes(atoms, hessian, temperature, rng)
    atoms.calc = HarmonicCalculator(hessian, ref)
    frames = []
    md = VelocityVerlet(atoms, timestep=dt * units.fs)

    def keep():
        frame = atoms.copy()
        frame.calc = None
        frame.info["time_fs"] = md.nsteps * dt
        frames.append(frame)

    md.attach(keep, interval=every)
    md.run(steps)
    write(path, frames)
    return path


def test_default_temperature_counts_the_internal_degrees_of_freedom(tmp_path, checkpoint, capsys):
    """A non-rotating H2O with every vibration at k_B T: the kinetic temperature over 3N - 6 = 3
    degrees of freedom is T (over 3N it would be T/3, and the absorption 3x too high); the timestep
    comes from the frames' time_fs."""
    traj = _harmonic_water_trajectory(tmp_path / "h2o.extxyz")
    out = tmp_path / "ir.csv"
    assert main(["spectrum", "ir", str(checkpoint), str(traj), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(kinetic, from the velocities over 3N - 6 = 3: centre-of-mass motion and rotation removed)" in printed
    temperature = float(printed.split("T = ")[1].split(" K")[0])
    assert temperature == pytest.approx(300.0, rel=0.01)
    assert "1001 frames 1 fs apart" in printed
    given = tmp_path / "given.csv"
    assert main(["spectrum", "ir", str(checkpoint), str(traj), "-o", str(given), "--temperature", "300",
                 "--timestep", "1"]) == 0
    _, a = _read(out)
    _, b = _read(given)
    np.testing.assert_allclose(a[:, 2], b[:, 2] * 300.0 / temperature, rtol=1e-3)  # T printed to 0.1 K


def test_timestep_from_the_frames(tmp_path, checkpoint, capsys):
    traj = _trajectory(tmp_path / "md.extxyz", times=True)
    ref, out = tmp_path / "ref.csv", tmp_path / "out.csv"
    base = ["spectrum", "ir", str(checkpoint), str(traj), "--temperature", "300"]
    assert main(base + ["--timestep", str(DT), "-o", str(ref)]) == 0
    assert main(base + ["-o", str(out)]) == 0
    np.testing.assert_allclose(_read(out)[1], _read(ref)[1], rtol=1e-12)
    assert main(base + ["-o", str(out), "--index", "::2"]) == 0  # every other frame: 2 fs apart
    assert "200 frames 2 fs apart" in capsys.readouterr().out
    assert main(base + ["-o", str(out), "--timestep", "0.5"]) == 1
    assert (f"--timestep 0.5 fs, but the frames of {traj} are 1 fs apart by their time_fs (after --index); "
            "leave --timestep out") in capsys.readouterr().err
    assert main(["spectrum", "raman", str(checkpoint), str(_trajectory(tmp_path / "no_time.extxyz")),
                 "-o", str(out)]) == 1
    assert "no_time.extxyz: the frames carry no time_fs, so the time between them is unknown: give --timestep FS" \
        in capsys.readouterr().err
    import ase.io

    frames = list(ase.io.iread(traj))
    frames[7].info["time_fs"] += 0.5
    ase.io.write(tmp_path / "uneven.extxyz", frames)
    assert main(["spectrum", "raman", str(checkpoint), str(tmp_path / "uneven.extxyz"), "-o", str(out)]) == 1
    assert "uneven.extxyz: frames 6 and 7 (after --index :) are 1.5 fs apart by their time_fs, but a spectrum " \
           "needs equally spaced frames" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--timestep", "inf", "--timestep must be a finite number > 0 fs, got inf"),
    ("--timestep", "nan", "--timestep must be a finite number > 0 fs, got nan"),
    ("--timestep", "0", "--timestep must be a finite number > 0 fs, got 0.0"),
    ("--max-lag", "inf", "--max-lag must be a finite number > 0 fs, got inf"),
    ("--max-lag", "nan", "--max-lag must be a finite number > 0 fs, got nan"),
    ("--temperature", "inf", "--temperature must be a finite number > 0 K, got inf"),
    ("--broadening", "nan", "--broadening must be a finite number > 0 cm^-1, got nan"),
])
def test_non_finite_options(tmp_path, checkpoint, capsys, flag, value, message):
    traj = _trajectory(tmp_path / "md.extxyz")
    args = {"--timestep": "1", flag: value}
    argv = ["spectrum", "ir", str(checkpoint), str(traj), "-o", str(tmp_path / "x.csv")]
    for k, v in args.items():
        argv += [k, v]
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_trajectory_errors_name_the_file(tmp_path, checkpoint, capsys):
    import ase.io

    frames = list(ase.io.iread(_trajectory(tmp_path / "md.extxyz")))
    ase.io.write(tmp_path / "two.extxyz", frames[:2])
    out = str(tmp_path / "x.csv")
    assert main(["spectrum", "ir", str(checkpoint), str(tmp_path / "two.extxyz"), "--timestep", "1", "-o", out]) == 1
    assert f"{tmp_path / 'two.extxyz'}: 2 frames (--index :); a spectrum needs at least 3 equally spaced frames" \
        in capsys.readouterr().err
    assert main(["spectrum", "raman", str(checkpoint), str(tmp_path / "md.extxyz"), "--timestep", "1", "-o", out,
                 "--index", "5"]) == 1
    assert "md.extxyz: 1 frame (--index 5); a spectrum needs at least 3" in capsys.readouterr().err
    swapped = [f.copy() for f in frames[:10]]
    swapped[4].symbols = "HOH"
    ase.io.write(tmp_path / "swapped.extxyz", swapped)
    assert main(["spectrum", "ir", str(checkpoint), str(tmp_path / "swapped.extxyz"), "--timestep", "1", "-o", out]) == 1
    assert (f"{tmp_path / 'swapped.extxyz'} frame 4: atom 0 is H, but O in frame 0 (H2O vs H2O); a spectrum needs "
            "the same atoms in the same order in every frame") in capsys.readouterr().err
    still = [f.copy() for f in frames[:10]]
    for f in still:
        f.set_momenta(np.zeros((3, 3)))
    ase.io.write(tmp_path / "still.extxyz", still)
    assert main(["spectrum", "ir", str(checkpoint), str(tmp_path / "still.extxyz"), "--timestep", "1", "-o", out]) == 1
    assert (f"{tmp_path / 'still.extxyz'}: the kinetic temperature of its velocities is 0 K (3N - 6 = 3: centre-of-mass "
            "motion and rotation removed): the atoms do not move relative to each other; give --temperature") \
        in capsys.readouterr().err
