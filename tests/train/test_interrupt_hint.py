"""Ctrl-C in ``etgnn train``: ``etgnn: interrupted`` gives the exact command that resumes the run,
and that command, run as printed, finishes it."""

from __future__ import annotations

import shlex

import pytest
import yaml

from etgnn.cli import main
from etgnn.train import trainer as trainer_mod


def _interrupt_at(monkeypatch, stop_epoch: int) -> None:
    """Ctrl-C at the start of epoch ``stop_epoch`` (earlier epochs run and are saved)."""
    real = trainer_mod._train_epoch

    def epoch(*args, **kwargs):
        if args[7] == stop_epoch:  # (net, model, loader, opt, ema, cfg, ctx, epoch, ...)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "_train_epoch", epoch)


@pytest.mark.parametrize("stop_epoch", [1, 0], ids=["after-an-epoch", "before-any"])
def test_interrupted_train_says_how_to_resume(config, tmp_path, monkeypatch, capsys, stop_epoch):
    cfg = tmp_path / "my run.yaml"  # a space: the printed command must quote it
    cfg.write_text(yaml.safe_dump(config(max_epochs=3)))
    argv = ["train", str(cfg), "training.max_epochs=2", "--no-progress"]
    _interrupt_at(monkeypatch, stop_epoch)
    assert main(argv) == 130
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    typed = f"etgnn train {shlex.quote(str(cfg))} training.max_epochs=2 --no-progress"
    if stop_epoch:
        assert last_line == (f"etgnn: interrupted; the last completed epoch is in {tmp_path / 'run' / 'last.ckpt'}; "
                             f"resume with: {typed} --resume")
    else:
        assert last_line == f"etgnn: interrupted; no epoch completed, nothing to resume; start again with: {typed}"
        return
    monkeypatch.undo()
    command = shlex.split(last_line.split("with: ", 1)[1])
    assert command[0] == "etgnn" and main(command[1:]) == 0  # the printed command, as printed
    out = capsys.readouterr().out
    assert "stopped: max_epochs after 2 epochs" in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch ")] == ["epoch 1"]  # resumed
