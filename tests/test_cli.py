"""The command line as a whole: every command ends in a one-paragraph message on a file-system
error (an output path below a regular file, a folder that cannot be written), never a traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import ase.io
import pytest
from ase.build import molecule

import etgnn
from etgnn.cli import main
from etgnn.errors import FileSystemError

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model, an input file and a regular file named ``blocker``."""
    folder = tmp_path_factory.mktemp("cli")
    model = etgnn.build_model({"model": {"hidden_channels": 8, "triplet_channels": 4, "num_blocks": 1},
                               "targets": {"dipole": {"key": "mu", "level": "structure", "rank": 1}}})
    model.save(folder / "model.pt")
    ase.io.write(folder / "in.extxyz", [molecule("H2O")])
    (folder / "blocker").write_text("a regular file\n")
    return folder


#: commands writing below the regular file ``blocker``: (argv, the path the message names)
BLOCKED = {
    "predict": (["predict", "{d}/model.pt", "{d}/in.extxyz", "-o", "{d}/blocker/out.extxyz"], "{d}/blocker"),
    "config-reference": (["config-reference", "-o", "{d}/blocker/ref.md"], "{d}/blocker/ref.md"),
    "export": (["export", "{d}/model.pt", "-o", "{d}/blocker/m.pt2"], "{d}/blocker"),
}


@pytest.mark.parametrize("name", BLOCKED)
def test_an_output_below_a_regular_file_is_a_message_naming_the_path(name, files, capsys):
    argv, path = BLOCKED[name]
    assert main([a.format(d=files) for a in argv]) == 1
    err = capsys.readouterr().err
    path = path.format(d=files)
    assert err.startswith(f"etgnn: error: FileSystemError: {path}: ") and err.count("\n") == 1, err
    assert "is a regular file, not a folder" in err and "Traceback" not in err


def test_os_error_messages_name_the_path_and_what_to_do():
    """One message per common errno, built from the OSError alone."""
    def msg(code, name="/runs/x"):
        return str(FileSystemError.from_os_error(OSError(code, "strerror", name)))

    assert msg(errno.EACCES) == ("/runs/x: permission denied: choose a folder you can write to "
                                 "(or read, for an input) (PermissionError: strerror)")
    assert msg(errno.EROFS) == "/runs/x: read-only file system: choose another folder (OSError: strerror)"
    assert msg(errno.ENOSPC) == "/runs/x: no space left on the device (OSError: strerror)"
    assert msg(errno.ENOENT) == "/runs/x: no such file or folder (FileNotFoundError: strerror)"
    assert msg(errno.EISDIR) == "/runs/x: is a folder, a file was expected (IsADirectoryError: strerror)"
    assert msg(errno.EIO) == "/runs/x: strerror (OSError)"
    assert str(FileSystemError.from_os_error(OSError("no errno at all"))) == "no errno at all (OSError)"


def test_a_folder_that_cannot_be_written(files, capsys, monkeypatch):
    """As root no folder is unwritable: the PermissionError is raised where the output is opened."""
    real_write = Path.write_text

    def deny(self, *args, **kwargs):
        if self.name == "ref.md":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", deny)
    assert main(["config-reference", "-o", str(files / "ro" / "ref.md")]) == 1
    assert capsys.readouterr().err == (f"etgnn: error: FileSystemError: {files / 'ro' / 'ref.md'}: permission denied: "
                                       "choose a folder you can write to (or read, for an input) "
                                       "(PermissionError: Permission denied)\n")
