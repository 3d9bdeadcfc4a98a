"""Outputs that lose nothing: a file or folder appears under its final name whole or not at all, and an existing
folder keeps everything the project did not write.

Every write goes to ``.NAME.tmp-PID`` in the destination's own folder (same file system, so the rename is atomic
on POSIX) and is renamed to ``NAME`` when complete. A process killed mid-write (kill -9, out of memory, a lost
node) leaves only that temporary; :func:`clean_stale_temporaries` removes it at the next start, once no live
process has that PID.

Export folders (:func:`write_folder`) are written the same way, then moved in: an absent ``OUT`` by one rename; an
existing one entry by entry, replacing only the names an export owns (``world_model.json``, ``tokenizer/``, ...)
and keeping anything else there. A non-empty folder that is not a previous export of the same kind is refused
unless the caller passes ``overwrite`` (``--overwrite``), and a file is never replaced by a folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

# ".NAME.tmp-PID"; files written before this module existed had no leading dot ("last.ckpt.tmp-PID")
_TEMPORARY = re.compile(r"^\.?(?P<name>.+)\.tmp-(?P<pid>\d+)$")


class OutputRefused(ValueError):
    """Writing an output would lose something the project did not write; the message names the path and what to do
    instead (a ``ValueError``, so the CLI prints it as one line)."""


def temporary_path(path: str | os.PathLike) -> Path:
    """``DIR/.NAME.tmp-PID`` for ``DIR/NAME``: where this process writes ``NAME`` before renaming it into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine (a zombie, dead but not yet reaped, counts as gone)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    with contextlib.suppress(OSError, IndexError):  # Linux: state "Z" is a zombie
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


class AtomicFile:
    """A binary file written at ``.NAME.tmp-PID`` and renamed to ``path`` by :meth:`commit`; :meth:`abort` (or
    leaving the ``with`` block by an exception) removes the temporary.

    Args:
        path: final path; its folder must exist.
        fsync: flush to disk before the rename (off for intermediate files that a rerun checks and redoes).
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True) -> None:
        self.path, self.fsync = Path(path), fsync
        self.tmp = temporary_path(self.path)
        self.file: BinaryIO = open(self.tmp, "wb")  # closed in commit() or abort()

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def commit(self) -> Path:
        try:
            self.file.flush()
            if self.fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.file.closed:
            self.commit()


class DataWriteError(OSError):
    """Output could not be written (unwritable folder, disk full); the partial file was removed."""


def why_not_written(e: OSError) -> str:
    """``e`` in a few words a user can act on (disk full, permission denied, ...)."""
    if e.errno == errno.ENOSPC:
        return "no space left on device"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (or read-only file system)"
    return e.strerror or str(e)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then rename; a failure is a
    :class:`DataWriteError` saying why, with the temporary already gone."""
    try:
        with AtomicFile(path) as f:
            f.write(data)
    except OSError as e:
        raise DataWriteError(e.errno, f"could not write {path}: {why_not_written(e)}") from e


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON (2 spaces, a final newline) at ``path``, by :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the temporary path for a writer that takes a file name (a video encoder); renamed to
    ``path`` when the block ends without an exception, removed in every case otherwise."""
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def clean_stale_temporaries(folder: str | os.PathLike, names: Iterable[str] | None = None,
                            prefixes: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporaries (files or folders) in ``folder`` left by processes that are gone; returns them.

    ``names``: final names whose temporaries are the caller's own to remove whatever their PID (the shards a data
    task is about to redo, in a folder shared with array tasks on other hosts, whose PIDs mean nothing here);
    ``prefixes``: the same for every final name that starts with one of them (``ID.`` for all the work files of one
    input). Without either, a temporary goes when its PID is not alive on this machine."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    wanted = None if names is None and prefixes is None else set(names or ())
    starts = tuple(prefixes or ())
    removed = []
    for p in folder.iterdir():
        m = _TEMPORARY.match(p.name)
        if m is None:
            continue
        if wanted is None:
            stale = not pid_alive(int(m["pid"]))
        else:
            stale = m["name"] in wanted or m["name"].startswith(starts)  # startswith(()) is False
        if not stale:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


# ---- folders ---------------------------------------------------------------------------------------------------


def check_output_folder(out: str | os.PathLike, previous: Callable[[Path], bool], owned: Collection[str], what: str,
                        overwrite: bool = False) -> Path:
    """Refuse ``out`` before any work when writing a ``what`` there could lose something: a file, or a non-empty
    folder that is not a previous ``what`` (``previous(out)`` is false) without ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"{out} is a file, not a folder: give a new folder path for the {what}")
    if not out.exists() or overwrite or not any(out.iterdir()) or previous(out):
        return out
    raise OutputRefused(f"{out} is not empty and holds no {what}; nothing was written: give a new or empty folder, "
                        f"or --overwrite to replace only the {what}'s own entries there ({', '.join(sorted(owned))}) "
                        "and keep the rest")


def write_folder(out: str | os.PathLike, write: Callable[[Path], object], previous: Callable[[Path], bool],
                 marker: str, owned: Collection[str], what: str, overwrite: bool = False) -> Path:
    """``write(tmp)`` a complete folder at ``.OUT.tmp-PID``, then move it to ``out``; returns ``out``.

    ``previous(folder)``: whether a folder holds an export of this kind (replaced without ``overwrite``);
    ``marker``: the entry whose presence says such an export is complete; ``owned``: every entry name an export of
    this kind may hold (a part absent this time is removed too). An absent ``out`` is one rename. An existing one
    (checked by :func:`check_output_folder`) is updated entry by entry: the old marker leaves first and the new one
    arrives last, so a crash in between leaves no folder that looks complete, and the old entries stay in
    ``.OUT.old-PID`` beside it; entries not in ``owned`` are never touched."""
    out = check_output_folder(out, previous, owned, what, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        if not out.exists():
            os.replace(tmp, out)
            return out
        new = {p.name for p in tmp.iterdir()}
        aside = out.with_name(f".{out.name}.old-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir()
        for name in sorted(set(owned) | new, key=lambda n: n != marker):  # the marker first
            if os.path.lexists(out / name):
                os.replace(out / name, aside / name)
        for name in sorted(new, key=lambda n: n == marker):  # the marker last
            os.replace(tmp / name, out / name)
        shutil.rmtree(aside, ignore_errors=True)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def shared_temporary_path(path: str | os.PathLike) -> Path:
    """``DIR/NAME.tmp`` for ``DIR/NAME``: the temporary of a folder that several processes write together (the ranks
    of a DeepSpeed checkpoint, on several hosts), so one name without a PID; the caller clears it first."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def replace_folder(tmp: Path, final: Path) -> None:
    """Move a completely written folder ``tmp`` to ``final``; an older ``final`` is moved aside first and deleted
    after, so one complete copy exists at every moment (``final`` or ``final.old``)."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
