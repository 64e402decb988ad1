"""What every benchmark script repeats: the machine and load header, timing, writing results.

Import it from a script in ``benchmarks/`` (run as ``python benchmarks/x.py`` the folder is on
``sys.path``; a script loaded by path, as the smoke tests do, puts it there first)::

    import _bench

    meta = _bench.machine(threads=1)            # date, CPU, cores, memory, versions, commit, load
    with _bench.Timer() as t:
        work()
    print(t.wall_s, t.cpu_s)
    _bench.write_results(out_dir, "name", data, markdown)   # name.json and name.md
    lines = [_bench.header_line(meta)]          # the machine line of a results/*.md

No dependency but torch (imported only when a function asks for its version or threads).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import time
from pathlib import Path

__all__ = ["REPO", "RESULTS", "GB", "cpu_model", "git_commit", "load_average", "machine", "header_line", "Timer",
           "write_results"]

#: the repository root and the folder of committed results
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
#: bytes per GB (10^9, as every results table states)
GB = 1e9


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string, else ``"?"``."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def git_commit(rev: str = "HEAD", repo: str | os.PathLike = REPO) -> str:
    """Short commit of ``rev`` in ``repo`` (``""`` outside a git checkout)."""
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", rev], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (``None`` where the system has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine(threads: int | None = None) -> dict:
    """The header every result carries: where, when and under what load it was measured.

    Args:
        threads: torch threads the measurement uses (default: torch's current setting).
    """
    import torch

    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    except (ValueError, OSError, AttributeError):
        mem = None
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": int(threads) if threads else torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "loadavg_start": load_average(),
    }


def header_line(meta: dict) -> str:
    """One markdown line naming the machine, the versions and the load of :func:`machine`'s header."""
    mem = f", {meta['memory_gb']:.0f} GB" if meta.get("memory_gb") else ""
    line = (f"- {meta.get('date')}, commit `{meta.get('git_commit')}`: {meta.get('cpu')} ({meta.get('cores')} cores{mem}), "
            f"torch {meta.get('torch')} with {meta.get('torch_threads')} thread(s), python {meta.get('python')}")
    if meta.get("loadavg_start"):
        line += f"; load average {meta['loadavg_start'][0]:.2f} at the start"
        if meta.get("loadavg_end"):
            line += f", {meta['loadavg_end'][0]:.2f} at the end"
    return line


class Timer:
    """Wall-clock and CPU seconds (all threads of this process) of a ``with`` block.

    >>> with Timer() as t:
    ...     _ = sum(range(1000))
    >>> t.wall_s >= 0 and t.cpu_s >= 0
    True
    """

    def __enter__(self) -> "Timer":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self.wall_s = self.cpu_s = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = time.process_time() - self._cpu


def write_results(out_dir: str | os.PathLike, name: str, data: dict, markdown: str | None = None,
                  indent: int = 1) -> list[Path]:
    """Write ``<out_dir>/<name>.json`` (``data``) and, when given, ``<out_dir>/<name>.md``.

    Returns:
        the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}.json"]
    files[0].write_text(json.dumps(data, indent=indent, default=float) + "\n")
    if markdown is not None:
        files.append(out / f"{name}.md")
        files[1].write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    return files
