"""Issue 11: the command line as a newcomer meets it (argument order, key maps, logs, warnings)."""

from __future__ import annotations

import csv
import json

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk

import etgnn
from etgnn.cli import main


@pytest.fixture
def run(config, tmp_path, capsys):
    """A finished 2-epoch run made through the CLI; returns (run_dir, config path, stdout)."""
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config(max_epochs=2)))
    assert main(["train", str(cfg_path)]) == 0
    return tmp_path / "run", cfg_path, capsys.readouterr().out


def test_options_and_overrides_in_any_order(run, capsys):
    """Item 6: `train CONFIG --resume training.max_time=60` (docs/training.md) and tune alike."""
    from etgnn.cli import _parse, build_parser

    run_dir, cfg_path, _ = run
    assert main(["train", str(cfg_path), "--resume", "training.max_epochs=3", "--no-progress"]) == 0
    assert "after 3 epochs" in capsys.readouterr().out
    args = _parse(build_parser(), ["tune", "c.yaml", "--trials", "3", "training.max_epochs=2", "model.num_blocks=1"])
    assert args.overrides == ["training.max_epochs=2", "model.num_blocks=1"] and args.trials == 3
    args = _parse(build_parser(), ["sweep", "c.yaml", "a.b=1", "--param", "training.lr", "--values", "1,2", "c.d=2"])
    assert args.overrides == ["a.b=1", "c.d=2"]


def test_a_typo_in_an_override_after_an_option_suggests_the_key(run, capsys):
    _, cfg_path, _ = run
    assert main(["train", str(cfg_path), "--resume", "training.batchsize=8"]) == 1
    err = capsys.readouterr().err
    assert "unknown key training.batchsize; did you mean 'batch_size'?" in err and "usage" not in err
    with pytest.raises(SystemExit):
        main(["train", str(cfg_path), "--resume", "stray"])
    assert capsys.readouterr().err.startswith("usage: etgnn train")  # the subcommand's usage, not the top level


def test_logs_without_a_terminal(run, config, tmp_path, capsys):
    """Item 9: no bar frames off a terminal, one line per epoch even with progress on, run dir first."""
    _, _, out = run
    assert out.startswith(f"run directory: {tmp_path / 'run'}\n")
    assert out.count("\nepoch ") + out.startswith("epoch ") == 2 and "epoch 1: train loss" in out
    cfg_path = tmp_path / "p.yaml"
    cfg_path.write_text(yaml.safe_dump(config(max_epochs=2) | {"run_dir": str(tmp_path / "p")}))
    assert main(["train", str(cfg_path), "training.progress=true"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err and captured.out.count("\nepoch ") == 2


def test_tensorboard_logs_losses_metrics_and_lr(config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from etgnn.train import train

    train(config(max_epochs=3, tensorboard=True))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    with open(tmp_path / "run" / "log.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    val = [e.value for e in events.Scalars("loss/val")]
    np.testing.assert_allclose(val, [float(r["val_loss"]) for r in log], rtol=1e-6)
    assert [e.step for e in events.Scalars("lr")] == [0, 1, 2]
    assert {"loss/train", "val/vec/mae", "val/dyad/r2"} <= set(events.Tags()["scalars"])


def test_evaluate_with_a_key_map_and_the_expected_targets(run, data_file, tmp_path, capsys):
    """Item 7: other field names -> say what the checkpoint expects; --map reads them."""
    run_dir, _, _ = run
    frames = ase.io.read(data_file, ":")
    for a in frames:
        a.arrays["v_dft"] = a.arrays.pop("vec")
        a.info["d_dft"] = a.info.pop("dyad")
    other = tmp_path / "other.extxyz"
    ase.io.write(other, frames, format="extxyz")
    ckpt = str(run_dir / "best.ckpt")
    assert main(["evaluate", ckpt, str(other)]) == 1
    err = capsys.readouterr().err
    assert f"{other} structure 0: the checkpoint expects targets " in err
    assert "vec (field 'vec', atom, rank 1)" in err and "dyad (field 'dyad', structure, rank 2)" in err
    assert "(its fields: d_dft, v_dft); map them with --map KEY=FIELD" in err and "did you mean" not in err
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["evaluate", ckpt, str(data_file), "-o", str(out_a)]) == 0
    assert main(["evaluate", ckpt, str(other), "--map", "vec=v_dft", "--map", "dyad=d_dft", "-o", str(out_b)]) == 0
    assert json.loads(out_a.read_text())["metrics"] == json.loads(out_b.read_text())["metrics"]
    assert main(["evaluate", ckpt, str(other), "--map", "vec=v_dft"]) == 1
    assert "this data has no field 'dyad' (its fields: d_dft, v_dft)" in capsys.readouterr().err
    assert main(["evaluate", ckpt, str(other), "--map", "vek=v_dft"]) == 1
    assert "--map vek=...: the checkpoint has no target or data key 'vek'; it expects " in capsys.readouterr().err


def test_born_file_with_its_structure_on_the_command_line(tmp_path, capsys):
    """Item 7: the BORN reader's structure file (structure_path=) is --structure on the CLI."""
    model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1},
                               "targets": {"z": {"key": "becs", "level": "atom", "rank": 2, "sum_rule": True}}})
    model.save(tmp_path / "m.pt")
    (tmp_path / "cells").mkdir()
    ase.io.write(tmp_path / "cells" / "rocksalt.vasp", bulk("NaCl", "rocksalt", a=5.64), format="vasp")
    (tmp_path / "NaCl.BORN").write_text("14.4\n2.4 0 0 0 2.4 0 0 0 2.4\n1.1 0 0 0 1.1 0 0 0 1.1\n"
                                        "-1.1 0 0 0 -1.1 0 0 0 -1.1\n")
    born, cell = str(tmp_path / "NaCl.BORN"), str(tmp_path / "cells" / "rocksalt.vasp")
    assert main(["evaluate", str(tmp_path / "m.pt"), born]) == 1
    assert "no unit cell beside this BORN file" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "m.pt"), born, "--structure", cell, "--map", "becs=born_effective_charges",
                 "-o", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["z"]["n"] == 2
    assert main(["predict", str(tmp_path / "m.pt"), born, "--structure", cell, "-o", str(tmp_path / "p.xyz"),
                 "--no-progress"]) == 0
    assert main(["predict", str(tmp_path / "m.pt"), born, "--structure", cell,
                 "-o", str(tmp_path / "MgO_pred.BORN")]) == 1
    assert "predictions are written as extended XYZ only" in capsys.readouterr().err
    assert not (tmp_path / "MgO_pred.BORN").exists()


def test_warnings_are_one_line_on_the_command_line(tmp_path, capsys):
    """Item 11: the unseen-element warning names file and structure, no torch source line."""
    model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 8, "num_blocks": 1},
                               "targets": {"q": {"key": "q", "level": "atom", "rank": 0}}})
    model.elements_seen[[1, 8]] = True
    model.save(tmp_path / "m.pt")
    frames = [Atoms("OH", positions=[[0, 0, 0], [0.97, 0, 0]]), Atoms("GdO", positions=[[0, 0, 0], [2.0, 0, 0]])]
    ase.io.write(tmp_path / "in.xyz", frames, format="extxyz")
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "in.xyz"), "-o", str(tmp_path / "o.xyz")]) == 0
    err = capsys.readouterr().err
    assert err == (f"etgnn: warning: {tmp_path / 'in.xyz'} structure 1 contains element(s) Gd absent from the "
                   "training data: its predictions are extrapolations\n")
