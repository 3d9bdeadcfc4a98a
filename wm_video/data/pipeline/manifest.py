"""The pipeline manifest: what happened to every input, one JSON line per input per stage.

Each stage keeps its own JSONL file under ``OUT/manifest/`` (``probe.jsonl``, ``clips.jsonl``,
``filter.jsonl``), keyed by the input's ``id``. A record always has ``id``, ``input`` (the file or episode it
describes) and ``status``:

- ``ok``: the stage succeeded;
- ``broken``: the input cannot be read (``code`` and ``reason`` say why: zero-length file, no video stream,
  corrupt or truncated data, a missing file);
- ``filtered``: readable, but dropped by a policy (too short, every clip static or a duplicate);
- ``rejected``: readable, but holds values a trainer cannot use (NaN or infinite actions).

A stage checkpoints its file with write-then-rename every 30 s and at its end, always in input order and with
sorted keys, so the same work gives byte-identical files and a rerun knows exactly which inputs are finished.
The stats stage joins the three files into ``OUT/manifest.jsonl``: one line per input with its final fate.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wm_video.data.schema import SchemaError
from wm_video.utils.atomic import atomic_write_bytes

STATUSES = ("ok", "broken", "filtered", "rejected")
MANIFEST_DIR = "manifest"
FINAL_MANIFEST = "manifest.jsonl"


def record(ref: dict[str, Any], status: str = "ok", code: str | None = None, reason: str | None = None,
           **fields: Any) -> dict[str, Any]:
    """A manifest record for input ``ref`` (needs ``id`` and ``input``); ``code`` is a short machine-readable
    cause used for counting, ``reason`` the sentence a person reads."""
    if status not in STATUSES:
        raise ValueError(f"manifest status must be one of {STATUSES}, got {status!r}")
    rec = {"id": ref["id"], "input": ref["input"], "status": status, **fields}
    if status != "ok":
        rec["code"], rec["reason"] = code or status, reason or status
    return rec


class Manifest:
    """One stage's records, loaded from ``path`` if it exists; :meth:`save` writes them in input order.

    Args:
        path: the JSONL file, e.g. ``OUT/manifest/probe.jsonl``.
        checkpoint_s: :meth:`add` saves at most this often (seconds); :meth:`save` always does.
    """

    def __init__(self, path: str | os.PathLike, checkpoint_s: float = 30.0) -> None:
        self.path = Path(path)
        self.checkpoint_s = checkpoint_s
        self.records: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self._last_save = time.monotonic()
        if self.path.exists():
            for i, line in enumerate(self.path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    self.records[rec["id"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise SchemaError(f"{self.path} line {i}: not a manifest record ({e}); the file was edited "
                                      "by hand or comes from another tool: move it away to redo this stage") from e

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def set_order(self, ids: Iterable[str]) -> None:
        """The input order records are written in (inputs not in it follow, sorted by id)."""
        self._order = list(ids)

    def add(self, rec: dict[str, Any]) -> None:
        self.records[rec["id"]] = rec
        if time.monotonic() - self._last_save >= self.checkpoint_s:
            self.save()

    def ordered(self) -> list[dict[str, Any]]:
        seen = set(self._order)
        keys = [k for k in self._order if k in self.records]
        keys += sorted(k for k in self.records if k not in seen)
        return [self.records[k] for k in keys]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_if_changed(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.ordered()).encode())
        self._last_save = time.monotonic()


def count(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``{"inputs": n, "ok": n, "broken": {code: n}, "filtered": {code: n}, "rejected": {code: n}}``."""
    status: Counter[str] = Counter()
    codes: dict[str, Counter[str]] = {s: Counter() for s in STATUSES[1:]}
    n = 0
    for rec in records:
        n += 1
        status[rec["status"]] += 1
        if rec["status"] != "ok":
            codes[rec["status"]][rec.get("code", rec["status"])] += 1
    return {"inputs": n, "ok": status["ok"], **{s: dict(sorted(codes[s].items())) for s in STATUSES[1:]}}


def write_if_changed(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically unless the file already holds exactly that (a rerun leaves it untouched)."""
    path = Path(path)
    if not path.exists() or path.read_bytes() != data:
        atomic_write_bytes(path, data)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Write records as sorted-key JSON lines, atomically (unless unchanged)."""
    write_if_changed(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
