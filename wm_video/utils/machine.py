"""Which machine and which run produced a result: one record for every report, evaluation and benchmark.

:func:`machine_record` returns a plain JSON-ready dict with fixed key names, so results written by the library
(evaluation reports, planning reports, the demo summary) and by the ``eval/`` scripts can be compared field by field;
:func:`machine_summary` is the same record as one line for Markdown pages and printed tables.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

DATE_FORMAT = "%Y-%m-%d %H:%M UTC"  # the ``date`` field: minutes are enough to find a run in a log, and it sorts


def machine_record(threads: bool = True, device: str | None = None, argv: Sequence[str] | None = None,
                   git: bool = True) -> dict[str, Any]:
    """Where and when this process runs, as a JSON-ready dict.

    Always present (``str`` unless noted):

    - ``date``: now, in UTC, ``"YYYY-MM-DD HH:MM UTC"`` (:data:`DATE_FORMAT`).
    - ``hostname``: the host's name (``socket.gethostname()``).
    - ``platform``: OS, kernel and C library (``platform.platform()``).
    - ``machine``: the CPU architecture, e.g. ``"x86_64"``.
    - ``cpu``: the CPU model where the OS says it (Linux ``/proc/cpuinfo``), else the architecture.
    - ``cpus`` (``int | None``): logical CPUs of the machine (``os.cpu_count()``; None when unknown).
    - ``python``, ``torch``: their versions.
    - ``cuda`` (``str | None``): the CUDA version torch was built with (None on CPU builds).
    - ``gpu`` (``str | None``): the GPU's name when ``device`` is a CUDA device; without ``device``, the current
      GPU's when this process has already started CUDA (a record never starts CUDA itself); else None.

    Present when asked for:

    - ``threads`` (``int``, with ``threads=True``, the default): torch's intra-op CPU threads
      (``torch.get_num_threads()``, so it reflects ``torch.set_num_threads``). Leave it out for work torch does not
      do (video decoding, simulators).
    - ``device``: ``device`` as given (``"cpu"``, ``"cuda"``, ``"cuda:1"``), when given.
    - ``command``: :func:`command_line` of ``argv``, when given (pass ``sys.argv`` for the script's own).
    - ``git_commit`` (``str | None``, with ``git=True``, the default): :func:`git_commit` of this code's checkout.
    """
    record: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(DATE_FORMAT),
        "hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "gpu": _gpu_name(device)}
    if threads:
        record["threads"] = torch.get_num_threads()
    if device is not None:
        record["device"] = str(device)
    if argv is not None:
        record["command"] = command_line(argv)
    if git:
        record["git_commit"] = git_commit()
    return record


def machine_summary(record: dict[str, Any] | None = None) -> str:
    """``record`` (default: a fresh :func:`machine_record`) as one line, e.g.
    ``"Intel Xeon (x86_64), 2 CPUs, python 3.11.7, torch 2.13.0, 2 threads"``; fields a record lacks (older result
    files) are left out."""
    r = machine_record(git=False) if record is None else record
    cpu, arch = r.get("cpu"), r.get("machine")
    parts = [f"{cpu} ({arch})" if cpu and arch and cpu != arch else str(cpu or arch or "unknown CPU")]
    if r.get("cpus"):
        parts.append(f"{r['cpus']} CPUs")
    parts += [f"{name} {r[name]}" for name in ("python", "torch") if r.get(name)]
    if r.get("threads"):
        parts.append(f"{r['threads']} threads")
    if r.get("gpu"):
        parts.append(str(r["gpu"]))
    return ", ".join(parts)


def command_line(argv: Sequence[str] | None = None) -> str:
    """``argv`` (default ``sys.argv``) as a shell command one can paste back: a script is prefixed with
    ``python``, an installed entry point (``.../bin/wm-video``) is shortened to its name."""
    args = [str(a) for a in (sys.argv if argv is None else argv)]
    if not args:
        return ""
    if args[0].endswith(".py"):
        args.insert(0, "python")
    elif os.sep in args[0]:
        args[0] = Path(args[0]).name
    return shlex.join(args)


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit checked out where ``path`` lies (default: this package's source), with ``"-dirty"`` appended when
    tracked files differ from it; None outside a git checkout or without git."""
    where = str(path if path is not None else Path(__file__).resolve().parent)
    git = ["git", "--no-optional-locks", "-C", where]  # no index refresh: a record never writes to the checkout
    try:
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 1 else "")


def cpu_name() -> str:
    """The CPU model (Linux: ``model name`` in ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name(device: str | None) -> str | None:
    if device is None:  # asking torch.cuda for a name would start CUDA (seconds, memory) in a CPU-only run
        return torch.cuda.get_device_name() if torch.cuda.is_initialized() else None
    dev = torch.device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
