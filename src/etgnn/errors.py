"""Exception hierarchy of etgnn.

Every error raised on bad user input derives from :class:`EtgnnError`; messages name the
file, the structure (frame) index and the field involved, what was expected and what was got.
"""

__all__ = ["EtgnnError", "ConfigError", "DataError", "ShapeError", "FileSystemError"]


class EtgnnError(Exception):
    """Base class of all etgnn errors."""


class ConfigError(EtgnnError, ValueError):
    """Invalid configuration: unknown key, bad value, missing section."""


class DataError(EtgnnError, ValueError):
    """Invalid input data: unreadable file, missing field, NaN label, bad structure."""


class ShapeError(DataError):
    """A tensor has the wrong number of values or the wrong shape for its rank/level."""


class FileSystemError(EtgnnError, OSError):
    """A file or folder cannot be read or written: the message names the path and what to do.

    The command line turns every ``OSError`` into one (:meth:`from_os_error`), so a full disk or
    an output path below a regular file ends in one paragraph, not a traceback.
    """

    @classmethod
    def from_os_error(cls, exc: OSError) -> "FileSystemError":
        """The message of ``exc``: its path, what the error number means here, the original text."""
        import errno
        from pathlib import Path

        name, code, text = exc.filename, exc.errno, exc.strerror or str(exc)
        kind = type(exc).__name__
        if name is None:
            return cls(f"{text} ({kind})")
        path = Path(str(name))
        if code == errno.EEXIST and path.exists() and not path.is_dir():
            what = "is a regular file, not a folder: choose another output path or move the file"
        elif code == errno.ENOTDIR:
            blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
            what = (f"{blocker} is a regular file, not a folder: choose another output path or move the file"
                    if blocker is not None and blocker != path else "is not a folder")
        elif code in (errno.EACCES, errno.EPERM):
            what = "permission denied: choose a folder you can write to (or read, for an input)"
        else:
            what = {errno.EROFS: "read-only file system: choose another folder",
                    errno.ENOSPC: "no space left on the device",
                    errno.ENOENT: "no such file or folder",
                    errno.EISDIR: "is a folder, a file was expected"}.get(code)
        other = f" -> {exc.filename2}" if exc.filename2 else ""
        if what is None:
            return cls(f"{name}{other}: {text} ({kind})")
        return cls(f"{name}{other}: {what} ({kind}: {text})")
