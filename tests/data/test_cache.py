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


def _odd_cache(tmp_path):
    """A cache folder with two cache files, a folder and a broken link named like cache files."""
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "a.sqlite").write_bytes(b"x" * 300_000)
    (folder / "b.sqlite").write_bytes(b"y" * 200_000)
    (folder / "odd.sqlite").mkdir()
    (folder / "broken.sqlite").symlink_to(tmp_path / "nowhere")
    return folder


def test_odd_entries_in_the_cache_folder_are_left_alone(tmp_path, capsys):
    """A folder or a broken link named *.sqlite: reported, not counted, not deleted (was a traceback)."""
    folder = _odd_cache(tmp_path)
    assert main(["cache", "info", "--dir", str(folder)]) == 0
    assert capsys.readouterr().out == (
        f"graph cache {folder}: 2 file(s), 0.5 MB (etgnn cache clean --dir {folder} empties it); "
        "left alone, not cache files: broken.sqlite (link), odd.sqlite (folder)\n")
    assert main(["cache", "clean", "--dir", str(folder)]) == 0
    assert capsys.readouterr().out == f"removed 2 graph cache file(s), 0.5 MB, from {folder}\n"
    assert sorted(p.name for p in folder.iterdir()) == ["broken.sqlite", "odd.sqlite"]


def test_clean_goes_on_past_a_file_it_cannot_remove(tmp_path, capsys, monkeypatch):
    """One undeletable file: every other one is still removed, then one message names the one left."""
    import errno
    from pathlib import Path

    folder = _odd_cache(tmp_path)
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self.name == "a.sqlite":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    assert main(["cache", "clean", "--dir", str(folder)]) == 1
    out, err = capsys.readouterr()
    assert out == f"removed 1 graph cache file(s), 0.2 MB, from {folder}\n"
    assert err == (f"etgnn: error: FileSystemError: could not remove 1 of 2 graph cache file(s) from {folder}: "
                   f"{folder / 'a.sqlite'} (Permission denied)\n")
    assert not (folder / "b.sqlite").exists() and (folder / "a.sqlite").exists()


def test_cache_info_on_a_regular_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["cache", "info", "--dir", str(tmp_path / "f")]) == 1
    assert capsys.readouterr().err == (f"etgnn: error: FileSystemError: graph cache {tmp_path / 'f'}: "
                                       "is a regular file, not a folder\n")


def test_a_cache_folder_that_cannot_be_written_is_skipped_with_a_warning(tmp_path):
    """The cache is derived data: below a regular file it is not written, the data still loads."""
    path, cfg = _setup(tmp_path)
    (tmp_path / "blocker").write_text("x")
    cfg = etgnn.load_config({**etgnn.config.config_to_dict(cfg), "data": {
        **etgnn.config.config_to_dict(cfg)["data"], "cache_dir": str(tmp_path / "blocker" / "cache")}})
    with pytest.warns(UserWarning, match=rf"graph cache {tmp_path / 'blocker' / 'cache'}/w.xyz-\w+\.sqlite cannot be "
                                         r"written \(NotADirectoryError: .*\); going on without it"):
        ds = D.load_structures_dataset(path, cfg, progress=False)
    assert len(ds) == 4
