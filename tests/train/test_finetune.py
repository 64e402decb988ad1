"""Fine-tuning (config key ``init_from``): what is loaded, what is new, frozen and slower backbones."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch

import etgnn
from etgnn.config import load_config
from etgnn.data.dataset import make_splits
from etgnn.data.statistics import atomic_numbers, compute_statistics
from etgnn.errors import ConfigError
from etgnn.model import build_model
from etgnn.targets import build_targets
from etgnn.train import train
from etgnn.train.finetune import backbone_param_groups, init_from_source

from .conftest import make_molecules, tiny_config


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny model trained 2 epochs on H/C/O molecules (targets vec, dyad): its best.ckpt."""
    tmp = tmp_path_factory.mktemp("source")
    data = tmp / "mols.extxyz"
    ase.io.write(data, make_molecules(40, seed=1), format="extxyz")
    train(tiny_config(tmp, data, max_epochs=2))
    return tmp / "run" / "best.ckpt"


def finetune_config(tmp_path, source, molecules, **training):
    """Fine-tune ``source`` on ``molecules``: targets vec (as the source's) and a new dyad_new."""
    data = tmp_path / "new.extxyz"
    ase.io.write(data, molecules, format="extxyz")
    cfg = tiny_config(tmp_path, data, **training)
    del cfg["model"]  # the architecture comes from the source
    cfg["targets"]["dyad_new"] = cfg["targets"].pop("dyad")
    cfg["init_from"] = str(source)
    return cfg


def with_nitrogen(molecules):
    for a in molecules[::3]:
        numbers = a.numbers.copy()
        numbers[0] = 7
        a.numbers = numbers
    return molecules


def initialised(cfg):
    """The fine-tuned model before any step, its source and the init report."""
    config = load_config(cfg)
    splits = make_splits(config, progress=False)
    model = build_model(config, statistics=compute_statistics(splits["train"], build_targets(config)))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    src = etgnn.load_model(config.init_from)
    report = init_from_source(model, src, atomic_numbers(splits["train"]))
    return model, src, fresh, report, splits


def test_architecture_comes_from_the_source(tmp_path, source):
    cfg = finetune_config(tmp_path, source, make_molecules(10))
    assert load_config(cfg).model.hidden_channels == 16  # the source's, not the default 128
    cfg["model"] = {"hidden_channels": 32, "chunk_triplets": 1000}
    with pytest.raises(ConfigError, match=r"model.hidden_channels is 32 but init_from .*best.ckpt was built with 16"):
        load_config(cfg)
    cfg["model"] = {"chunk_triplets": 1000}  # not an architecture key: the config's own
    assert load_config(cfg).model.chunk_triplets == 1000


def test_finetuning_options_need_init_from(tmp_path, source):
    cfg = finetune_config(tmp_path, source, make_molecules(10), freeze_backbone=True)
    del cfg["init_from"]
    with pytest.raises(ConfigError, match="apply to fine-tuning: set init_from"):
        load_config(cfg)
    cfg = finetune_config(tmp_path, source, make_molecules(10), backbone_lr_factor=0.0)
    with pytest.raises(ConfigError, match="training.backbone_lr_factor must be > 0"):
        load_config(cfg)


def test_loaded_weights_equal_the_source_and_new_heads_are_new(tmp_path, source):
    model, src, fresh, report, splits = initialised(finetune_config(tmp_path, source, make_molecules(30, seed=5)))
    assert report.loaded_heads == ["vec"] and list(report.new_heads) == ["dyad_new"]
    assert report.new_elements == []
    state, src_state = model.state_dict(), src.state_dict()
    seen = src.elements_seen  # embedding rows and shifts of the elements the source saw
    for key, value in src_state.items():
        if not key.startswith(("backbone.", "heads.vec.")):
            continue
        if key.endswith(("emb.weight", "element_shift")):
            assert torch.equal(state[key][seen], value[seen]), key
        else:
            assert torch.equal(state[key], value), key
    for key, value in state.items():  # the new head is the fresh one, untouched
        if key.startswith("heads.dyad_new."):
            assert torch.equal(value, fresh[key]), key
    # a new head is not the source's dyad head: every weight matrix differs
    for key, value in state.items():
        if key.startswith("heads.dyad_new.") and key.endswith("weight") and value.dim() == 2:
            assert not torch.equal(value, src_state[key.replace("dyad_new", "dyad")]), key
    # before any step the fine-tuned model predicts the source's vec exactly
    atoms = make_molecules(3, seed=9)
    for a, b in zip(model.predict(atoms), src.predict(atoms)):
        np.testing.assert_array_equal(a["vec"], b["vec"])


def test_unseen_elements_get_fresh_embedding_rows_and_are_named(tmp_path, source):
    model, src, fresh, report, _ = initialised(finetune_config(tmp_path, source, with_nitrogen(make_molecules(30))))
    assert report.new_elements == [7]
    assert any("new embedding rows for elements the source never saw: N" in line for line in report.lines("src"))
    emb = model.state_dict()["backbone.embedding.emb.weight"]
    src_emb = src.state_dict()["backbone.embedding.emb.weight"]
    assert torch.equal(emb[7], fresh["backbone.embedding.emb.weight"][7])
    assert not torch.equal(emb[7], src_emb[7])
    assert torch.equal(emb[[1, 6, 8]], src_emb[[1, 6, 8]])
    assert bool(model.elements_seen[7]) and bool(model.elements_seen[1])


def test_a_head_of_another_form_is_not_loaded(tmp_path, source):
    cfg = finetune_config(tmp_path, source, make_molecules(30))
    cfg["targets"]["vec"]["sum_rule"] = True
    _, _, _, report, _ = initialised(cfg)
    assert report.loaded_heads == [] and report.new_heads["vec"] == "the source's differs in sum_rule"


def test_frozen_backbone_stays_the_source_and_heads_learn(tmp_path, source, capsys):
    cfg = finetune_config(tmp_path, source, make_molecules(30, seed=3), max_epochs=2, freeze_backbone=True)
    train(cfg)
    out = capsys.readouterr().out
    assert f"init_from {source}: backbone loaded; heads loaded: vec" in out
    assert f"init_from {source}: new head for dyad_new (not a target of the source)" in out
    tuned, src = etgnn.load_model(tmp_path / "run" / "last.ckpt"), etgnn.load_model(source)
    s, t = src.state_dict(), tuned.state_dict()
    seen = src.elements_seen
    assert all(torch.equal(t[k][seen], v[seen]) if k.endswith("emb.weight") else torch.equal(t[k], v)
               for k, v in s.items() if k.startswith("backbone."))
    head_weights = [k for k, v in s.items() if k.startswith("heads.vec.") and v.dim() == 2]
    assert head_weights and any(not torch.equal(t[k], s[k]) for k in head_weights)  # the head learned

def test_backbone_learning_rate_factor():
    model = build_model({"model": {"hidden_channels": 8, "triplet_channels": 4, "num_blocks": 1},
                         "targets": {"d": {"key": "mu", "level": "structure", "rank": 1}}})
    groups = backbone_param_groups(model, 1e-3, freeze=False, factor=0.1)
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    assert sum(p.numel() for p in groups[0]["params"]) == n_backbone
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    from etgnn.config import TrainingConfig
    from etgnn.train.schedule import LRSchedule

    opt = torch.optim.AdamW(groups, lr=1e-3)
    LRSchedule(opt, TrainingConfig(lr=1e-3), steps_per_epoch=1).before_step(0, 0, 0.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3])
    frozen = backbone_param_groups(model, 1e-3, freeze=True, factor=1.0)
    assert len(frozen) == 1 and not any(p.requires_grad for p in model.backbone.parameters())
