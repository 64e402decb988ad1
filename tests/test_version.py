"""One version: ``etgnn.__version__``, ``[project] version`` in pyproject.toml, ``etgnn --version``
and a section of CHANGELOG.md name the same release."""

from __future__ import annotations

import re
from pathlib import Path

import etgnn
from etgnn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        project = text.split("[project]", 1)[1].split("\n[", 1)[0]
        return re.search(r'^version\s*=\s*"([^"]+)"', project, re.M).group(1)
    return tomllib.loads(text)["project"]["version"]


def test_one_version_everywhere(capsys):
    version = _pyproject_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert etgnn.__version__ == version
    try:
        main(["--version"])
    except SystemExit:
        pass
    assert capsys.readouterr().out.strip() == f"etgnn {version}"
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings and headings[0] == version, f"CHANGELOG.md: newest section {headings[:1]}, package {version}"
