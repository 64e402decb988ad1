"""Config parsing and validation: every bad input is a ConfigError that says what and where."""

from __future__ import annotations

import pytest

import etgnn
from etgnn.config import config_to_dict, load_config, read_yaml_mapping
from etgnn.errors import ConfigError

BASE = {"targets": {"bec": {"key": "becs", "level": "atom", "rank": 2}}}


def test_defaults_are_the_papers():
    m = load_config(BASE).model
    assert (m.cutoff, m.triplet_cutoff, m.hidden_channels, m.num_blocks) == (6.0, 4.0, 128, 4)
    assert (m.activation, m.cutoff_function, m.radial_basis) == ("elu", "cosine", "bessel")
    assert load_config(BASE).data.split == (0.6, 0.2, 0.2)


@pytest.mark.parametrize("raw, message", [
    ({**BASE, "modle": {}}, r"unknown key config.modle; did you mean 'model'\?"),
    ({**BASE, "model": {"hiden_channels": 64}}, r"unknown key model.hiden_channels; did you mean 'hidden_channels'\?"),
    ({**BASE, "model": {"activation": "gelu"}}, r"model.activation must be one of .*'elu'.*got 'gelu'"),
    ({**BASE, "model": {"triplet_cutoff": 7.0}}, r"0 < model.triplet_cutoff <= model.cutoff"),
    ({**BASE, "model": {"num_blocks": "four"}}, r"model.num_blocks must be an integer, got 'four'"),
    ({"targets": {"e": {"key": "e", "rank": 2, "sum_rule": True}}}, r"targets.e.sum_rule applies to per-atom"),
    ({"targets": {"e": {"key": "e", "rank": 3, "symmetry": "ij=ji"}}}, r"targets.e.symmetry: .*3 distinct indices"),
    ({"targets": {"e": {"rank": 2}}}, r"targets.e is missing required key\(s\): key"),
    ({}, r"config has no targets"),
    ({**BASE, "data": {"split": [0.5, 0.2, 0.2]}}, r"data.split must be three non-negative fractions summing to 1"),
])
def test_bad_configs_raise_with_a_clear_message(raw, message):
    with pytest.raises(ConfigError, match=message):
        load_config(raw)


def test_overrides_are_parsed_as_yaml_and_validated():
    cfg = load_config(BASE, ["training.max_time=2.5", "data.train=x.xyz", "model.max_neighbors=null"])
    assert cfg.training.max_time == 2.5 and cfg.data.train == "x.xyz" and cfg.model.max_neighbors is None
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(BASE, ["training.max_time"])
    with pytest.raises(ConfigError, match="unknown key training.max_tme"):
        load_config(BASE, ["training.max_tme=3"])


def test_exponent_without_a_dot_is_a_number():
    """YAML 1.1 (PyYAML) reads ``1e-5`` as the string '1e-5'; a number field takes it as 1e-05."""
    cfg = load_config(BASE, ["training.min_lr=1e-5", "training.lr=2E-3"])
    assert cfg.training.min_lr == 1e-5 and cfg.training.lr == 2e-3
    assert load_config({**BASE, "training": {"weight_decay": "5e-4"}}).training.weight_decay == 5e-4
    with pytest.raises(ConfigError, match="training.lr must be a number, got 'fast'"):
        load_config(BASE, ["training.lr=fast"])


def test_yaml_files_round_trip_and_bad_files(tmp_path):
    import yaml

    path = tmp_path / "c.yaml"
    absolute = {**BASE, "run_dir": str(tmp_path / "runs" / "x")}
    path.write_text(yaml.safe_dump(config_to_dict(load_config(absolute))))
    assert load_config(path) == load_config(absolute)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="config file .*top level must be a mapping, got list"):
        load_config(path)
    path.write_text("a: [1\n")
    with pytest.raises(ConfigError, match="search space file .* is not valid YAML"):
        read_yaml_mapping(path, "search space file")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    assert isinstance(etgnn.load_config(BASE), etgnn.Config)


def test_relative_paths_in_a_file_resolve_against_its_folder(tmp_path, monkeypatch):
    """Issue 11 item 8: not against the current directory; command-line overrides do use it."""
    import yaml

    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    raw = {**BASE, "data": {"train": "../data/train.xyz", "val": "val.xyz", "test": "/abs/test.xyz",
                            "cache_dir": "cache"}, "run_dir": "../runs/a"}
    (folder / "c.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    cfg = load_config("project/configs/c.yaml", ["data.val=here.xyz"])
    assert cfg.data.train == str(tmp_path / "project" / "data" / "train.xyz")
    assert cfg.data.test == "/abs/test.xyz" and cfg.data.val == "here.xyz"
    assert cfg.data.cache_dir == str(folder / "cache") and cfg.run_dir == str(tmp_path / "project" / "runs" / "a")
    (folder / "d.yaml").write_text(yaml.safe_dump({**BASE, "data": {"train": "etgnn:examples_data/molecules.extxyz",
                                                                    "cache_dir": "user"}}))
    cfg = load_config(folder / "d.yaml")
    assert cfg.data.train == "etgnn:examples_data/molecules.extxyz" and cfg.data.cache_dir == "user"


def test_shipped_examples_load_and_point_at_the_shared_data():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "examples").glob("*.yaml")):
        cfg = load_config(path)
        assert Path(cfg.run_dir).parent == root / "runs", path.name
        train = cfg.data.train
        assert train.startswith("etgnn:") or Path(train).is_relative_to(root.parent / "shared" / "data"), path.name
