"""``etgnn:<path>`` names a shipped file in every command's input paths (one resolver)."""

from __future__ import annotations

from pathlib import Path

import pytest

from etgnn._paths import input_path
from etgnn.cli import build_parser
from etgnn.data.dataset import resolve_data_path

SHIPPED = "etgnn:examples_data/molecules.extxyz"


@pytest.mark.parametrize("argv, dest", [
    (["train", SHIPPED], "config"),
    (["evaluate", SHIPPED, SHIPPED, "--structure", SHIPPED], ("checkpoint", "data", "structure")),
    (["predict", SHIPPED, SHIPPED, "-o", "x.extxyz", "--structure", SHIPPED], ("checkpoint", "input", "structure")),
    (["phonons", SHIPPED, "--phonopy", SHIPPED, "--force-sets", SHIPPED, "--born-file", SHIPPED,
      "--reference-born", SHIPPED], ("checkpoint", "phonopy", "force_sets", "born_file", "reference_born")),
    (["phonons", "--phonopy", SHIPPED, "--force-constants", SHIPPED], ("force_constants",)),
    (["phonons", SHIPPED, "--structure", SHIPPED], ("checkpoint", "structure")),
    (["export-born", SHIPPED, SHIPPED, "-o", "BORN"], ("checkpoint", "structure")),
    (["spectrum", "ir", SHIPPED, SHIPPED, "-o", "x.csv"], ("checkpoint", "trajectory")),
    (["spectrum", "raman", SHIPPED, SHIPPED, "-o", "x.csv"], ("checkpoint", "trajectory")),
    (["export", SHIPPED, "-o", "x.pt2"], ("checkpoint",)),
    (["tune", SHIPPED, "--trials", "1", "--space-file", SHIPPED], ("config", "space_file")),
    (["sweep", SHIPPED, "--param", "a", "--values", "1"], ("config",)),
    (["cache", "info", "--config", SHIPPED], ("config",)),
])
def test_every_input_path_resolves_the_package_prefix(argv, dest):
    args = build_parser().parse_args(argv)
    shipped = resolve_data_path(SHIPPED)
    assert shipped.is_file()
    for name in (dest,) if isinstance(dest, str) else dest:
        assert Path(getattr(args, name)) == shipped
    assert getattr(args, "output", None) in (None, "x.extxyz", "BORN", "x.csv", "x.pt2")  # outputs untouched


def test_input_path_leaves_other_paths_alone():
    assert input_path("runs/best.ckpt") == "runs/best.ckpt"
    assert input_path("/abs/etgnn:x") == "/abs/etgnn:x"
