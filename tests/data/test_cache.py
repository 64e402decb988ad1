"""Graph cache: a corrupt file is rebuilt, the default folder is per user, `etgnn cache` reports and cleans."""

from __future__ import annotations

import sqlite3

import ase.io
import numpy as np
import pytest
from ase.build import molecule

import etgnn
from etgnn.cli import main
from etgnn.data import dataset as D


def _setup(tmp_path):
    frames = []
    for k in range(4):
        atoms = molecule("H2O")
        atoms.positions += 0.02 * k
        atoms.info["alpha"] = np.eye(3).reshape(9) * (1 + k)
        frames.append(atoms)
    path = tmp_path / "w.xyz"
    ase.io.write(path, frames)
    cfg = etgnn.load_config({"model": {"cutoff": 4.0, "triplet_cutoff": 3.0},
                             "targets": {"alpha": {"key": "alpha", "level": "structure", "rank": 2}},
                             "data": {"train": str(path), "cache_dir": str(tmp_path / "cache"), "num_workers": 0}})
    return path, cfg


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_is_reported_deleted_and_rebuilt(tmp_path, damage):
    """Issue 11 item 2: no raw sqlite3.DatabaseError, the derived file is rebuilt."""
    path, cfg = _setup(tmp_path)
    first = D.load_structures_dataset(path, cfg, progress=False)
    (cache_file,) = (tmp_path / "cache").glob("*.sqlite")
    data = cache_file.read_bytes()
    cache_file.write_bytes(b"this is not a database" * 100 if damage == "garbage" else data[: len(data) // 3])
    with pytest.warns(UserWarning, match=rf"graph cache {cache_file} is unreadable \(.*\); deleting and rebuilding it"):
        again = D.load_structures_dataset(path, cfg, progress=False)
    for a, b in zip(first.labels, again.labels, strict=True):
        np.testing.assert_array_equal(a["alpha"], b["alpha"])
    with sqlite3.connect(cache_file) as db:  # a valid, complete cache again
        assert db.execute("SELECT v FROM meta WHERE k='n'").fetchone() == ("4",)


def test_default_cache_folder_is_per_user(monkeypatch, tmp_path):
    from etgnn.data.cache import resolve_cache_dir, user_cache_dir

    assert etgnn.load_config({"targets": {"a": {"key": "a"}}}).data.cache_dir == "user"
    monkeypatch.delenv("ETGNN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "etgnn" / "graphs" == resolve_cache_dir("user")
    monkeypatch.setenv("ETGNN_CACHE_DIR", str(tmp_path / "mine"))
    assert resolve_cache_dir("user") == tmp_path / "mine"
    assert resolve_cache_dir(None) is None and resolve_cache_dir("c") == tmp_path.__class__("c")


def test_cache_info_and_clean(tmp_path, capsys):
    path, cfg = _setup(tmp_path)
    D.load_structures_dataset(path, cfg, progress=False)
    (cache_file,) = (tmp_path / "cache").glob("*.sqlite")
    size = cache_file.stat().st_size
    other = tmp_path / "cache" / "notes.txt"
    other.write_text("not a cache file")
    assert main(["cache", "info", "--dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert f"graph cache {tmp_path / 'cache'}: 1 file(s), {size / 1e6:.1f} MB" in out
    assert main(["cache", "clean", "--dir", str(tmp_path / "cache")]) == 0
    assert f"removed 1 graph cache file(s), {size / 1e6:.1f} MB, from {tmp_path / 'cache'}" in capsys.readouterr().out
    assert not cache_file.exists() and other.exists()
