"""DDP: two Gloo processes on CPU train, only rank 0 writes, validation is reduced across ranks."""

from __future__ import annotations

import json

import pytest

import etgnn
from etgnn.config import load_config
from etgnn.errors import ConfigError
from etgnn.train import train
from etgnn.evaluate import evaluate_loader


def test_two_process_ddp_run(config, tmp_path):
    cfg = config(max_epochs=2, strategy="ddp", devices=2, device="cpu")
    result = train(cfg)
    run = tmp_path / "run"
    assert result.epochs_run == 2 and result.stopped == "max_epochs"
    lines = (run / "log.csv").read_text().splitlines()
    assert len(lines) == 3, "rank 0 alone writes one log row per epoch"
    assert not list(run.glob(".*tmp*")), "temporary checkpoint files left behind"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and set(metrics["val"]) == {"vec", "dyad"}
    assert result.metrics == {k: metrics[k] for k in ("val", "test")}
    # the validation loss reduced over the two ranks' shards equals a one-process evaluation
    from etgnn.data.dataset import make_loader, make_splits

    model = etgnn.load_model(run / "best.ckpt")
    c = load_config(cfg)
    val = make_splits(c, progress=False)["val"]
    loss, _, _, _ = evaluate_loader(model, make_loader(val, c, shuffle=False))
    assert loss == pytest.approx(result.best_val_loss, rel=1e-5)


def test_ddp_rejects_what_it_cannot_do(config):
    with pytest.raises(ConfigError, match="torchrun"):
        train(config(strategy="ddp", devices=2, num_nodes=2))
    with pytest.raises(ConfigError, match="callback"):
        train(config(strategy="ddp", devices=2), callback=lambda e, v: None)
