"""``benchmarks/plot_training_curves.py``: argument parsing, panels and the missing-column error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ptc():
    spec = importlib.util.spec_from_file_location("plot_training_curves", ROOT / "benchmarks" / "plot_training_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_log(path: Path, rows: list[tuple[float, float]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("epoch,time_s,val_loss,val_forces_mae\n"
                    + "".join(f"{k},{t},{v},{v}\n" for k, (t, v) in enumerate(rows)))
    return path


def test_items_name_their_panel_or_take_the_folder(ptc):
    assert ptc.parse_item("si/direct=runs/a/log.csv:forces_mae", "x") == ("si", "direct", Path("runs/a/log.csv"), "forces_mae")
    assert ptc.parse_item("cosine=runs/phonondb/log.csv", "born_charges_mae") == (
        "phonondb", "cosine", Path("runs/phonondb/log.csv"), "born_charges_mae")
    with pytest.raises(SystemExit, match="expected"):
        ptc.parse_item("runs/a/log.csv", "x")


def test_curves_in_minutes_and_a_clear_error_for_an_absent_metric(ptc, tmp_path):
    log = write_log(tmp_path / "a" / "log.csv", [(60.0, 0.5), (120.0, 0.25)])
    assert ptc.read_curve(log, "forces_mae") == ([1.0, 2.0], [0.5, 0.25])
    with pytest.raises(SystemExit, match="no column 'val_energy_mae'; metrics in this log: forces_mae"):
        ptc.read_curve(log, "energy_mae")


def test_one_panel_per_named_panel(ptc, tmp_path, monkeypatch):
    a = write_log(tmp_path / "a" / "log.csv", [(60.0, 0.5), (120.0, 0.25)])
    b = write_log(tmp_path / "b" / "log.csv", [(60.0, 0.4), (120.0, 0.3)])
    import matplotlib.pyplot as plt

    made = []
    real = plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a_, **k: made.append(a_) or real(*a_, **k))
    out = tmp_path / "curves.png"
    assert ptc.main([f"si/one={a}:forces_mae", f"si/two={b}:forces_mae", f"ge/three={b}:forces_mae", "-o", str(out)]) == 0
    assert out.stat().st_size > 0 and made == [(1, 2)]
