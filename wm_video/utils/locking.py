"""One process at a time in a folder: the lock a training run holds on its run folder.

Two runs with the same ``--out`` would resume the same checkpoint and overwrite each other's files. A run holds an
exclusive ``flock`` on ``OUT/.wm-video.lock``, and writes its PID, host and start time into the file so the next one
can say who holds it. The kernel drops a flock when its process ends, however it ends, so the lock of a killed run
is simply taken over. On a file system without flock (some Lustre and NFS mounts) the recorded PID decides: a
holder that is gone from this host is taken over; one on another host is refused (the message says which file to
delete once that run is surely over).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from wm_video.utils.atomic import pid_alive

log = logging.getLogger(__name__)

LOCK_FILE = ".wm-video.lock"
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class FolderInUse(ValueError):
    """Another process holds the folder's lock; the message names the folder and that process (a ``ValueError``,
    so the CLI prints it as one line)."""


class FolderLock:
    """Exclusive hold of ``folder`` (created if needed) by this process; a context manager.

    Args:
        folder: the folder to hold, e.g. a run folder.
        what: how the error names the folder (``run folder``).
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run folder") -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FolderInUse(f"{self.what} {self.folder} is in use by {_describe(_read(fd))}: wait for it to "
                                  "end, or use another --out") from None
            except OSError as e:
                if e.errno not in _NO_FLOCK:
                    raise
                self._check_recorded_holder(fd)
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "since": datetime.datetime.now().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _check_recorded_holder(self, fd: int) -> None:
        holder = _read(fd)
        pid, host = holder.get("pid"), holder.get("host")
        if not isinstance(pid, int) or (pid == os.getpid() and host == socket.gethostname()):
            return
        if host == socket.gethostname() and not pid_alive(pid):
            log.info("taking over %s: process %d that held it is gone", self.path, pid)
            return
        raise FolderInUse(f"{self.what} {self.folder} is in use by {_describe(holder)} (this file system has no "
                          f"flock: if that process is gone, delete {self.path}): wait for it, or use another --out")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # no holder recorded: what a file system without flock goes by
        os.close(self._fd)  # drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if "pid" not in holder:
        return "another process"
    since = f", since {holder['since']}" if holder.get("since") else ""
    return f"PID {holder['pid']} on {holder.get('host', '?')}{since}"
