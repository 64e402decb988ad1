"""Where the graph cache lives, how big it is, and ``etgnn cache info`` / ``etgnn cache clean``.

Graphs are derived data: :func:`etgnn.data.dataset.load_structures_dataset` stores them in one
SQLite file per (data file content, targets, graph settings) in ``data.cache_dir``.  The default,
``cache_dir: user``, is a per-user folder shared by every run (so tuning trials and reruns start at
once): ``$ETGNN_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/etgnn/graphs``, else
``~/.cache/etgnn/graphs``.  ``cache_dir: null`` disables the cache; any other value is a folder
(relative paths in a config file resolve against the file's folder).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import FileSystemError

from .._paths import input_path

__all__ = ["USER", "user_cache_dir", "resolve_cache_dir", "cache_files", "cache_size", "clean_cache",
           "describe_cache", "add_parser"]

#: the ``data.cache_dir`` value naming the per-user cache folder
USER = "user"


def user_cache_dir() -> Path:
    """``$ETGNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/etgnn/graphs``, else ``~/.cache/etgnn/graphs``."""
    if os.environ.get("ETGNN_CACHE_DIR"):
        return Path(os.environ["ETGNN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "etgnn" / "graphs"


def resolve_cache_dir(value: str | None) -> Path | None:
    """The folder a ``data.cache_dir`` value names (``None``: caching disabled)."""
    if value is None or value == "":
        return None
    return user_cache_dir() if value == USER else Path(value).expanduser()


def _entries(folder: Path) -> list[Path]:
    """Everything named ``*.sqlite`` in ``folder`` (files, folders, links), sorted."""
    if folder.exists() and not folder.is_dir():
        raise FileSystemError(f"graph cache {folder}: is a regular file, not a folder")
    return sorted(folder.glob("*.sqlite")) if folder.is_dir() else []


def _is_cache_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def cache_files(folder: Path) -> list[Path]:
    """The graph cache files in ``folder``: regular ``*.sqlite`` files (nothing else there is touched,
    not even a folder or a link with such a name).

    Raises:
        FileSystemError: ``folder`` is a regular file.
    """
    return [p for p in _entries(folder) if _is_cache_file(p)]


def _size(path: Path) -> int:
    """Bytes of ``path``; 0 if it vanished meanwhile (another run cleaning the same cache)."""
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def cache_size(folder: Path) -> int:
    """Bytes held by the cache files in ``folder``."""
    return sum(_size(p) for p in cache_files(folder))


def describe_cache(folder: Path) -> str:
    """One line: ``graph cache FOLDER: N file(s), X MB (etgnn cache clean empties it)``, then the
    entries named like cache files that are not (folders, links), which are left alone."""
    entries = _entries(folder)
    files = [p for p in entries if _is_cache_file(p)]
    odd = [f"{p.name} ({'link' if p.is_symlink() else 'folder' if p.is_dir() else 'not a regular file'})"
           for p in entries if not _is_cache_file(p)]
    size = sum(_size(p) for p in files)
    return (f"graph cache {folder}: {len(files)} file(s), {size / 1e6:.1f} MB "
            f"(etgnn cache clean{'' if folder == user_cache_dir() else f' --dir {folder}'} empties it)"
            + (f"; left alone, not cache files: {', '.join(odd)}" if odd else ""))


def clean_cache(folder: Path) -> tuple[int, int, list[tuple[Path, OSError]]]:
    """Delete the cache files in ``folder``, going on past any that cannot be deleted.

    Returns:
        ``(files, bytes, failures)``: how many files and bytes were removed, and ``(path, error)``
        of each file left in place.
    """
    removed, size, failures = 0, 0, []
    for p in cache_files(folder):
        n = _size(p)
        try:
            p.unlink(missing_ok=True)
        except OSError as exc:
            failures.append((p, exc))
            continue
        removed, size = removed + 1, size + n
    return removed, size, failures


def add_parser(subparsers) -> None:
    """Register ``etgnn cache info`` and ``etgnn cache clean``."""
    p = subparsers.add_parser("cache", help="size of the graph cache, or empty it",
                              description=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["info", "clean"], help="info: where and how big; clean: delete the cache files")
    p.add_argument("--dir", metavar="DIR", help="cache folder (default: the per-user folder, or data.cache_dir of "
                   "--config)")
    p.add_argument("--config", metavar="CONFIG", type=input_path, help="use the data.cache_dir of this config file")
    p.set_defaults(func=_run)


def _run(args) -> int:
    folder = Path(args.dir).expanduser() if args.dir else None
    if folder is None and args.config:
        from ..config import load_config
        from ..errors import ConfigError

        folder = resolve_cache_dir(load_config(args.config).data.cache_dir)
        if folder is None:
            raise ConfigError(f"{args.config}: data.cache_dir is null (no graph cache)")
    folder = folder or user_cache_dir()
    if args.action == "info":
        print(describe_cache(folder))
    else:
        n, size, failures = clean_cache(folder)
        print(f"removed {n} graph cache file(s), {size / 1e6:.1f} MB, from {folder}")
        if failures:
            left = ", ".join(f"{p} ({exc.strerror or exc})" for p, exc in failures)
            raise FileSystemError(f"could not remove {len(failures)} of {n + len(failures)} graph cache file(s) "
                                  f"from {folder}: {left}")
    return 0
