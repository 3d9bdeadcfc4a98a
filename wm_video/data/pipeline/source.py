"""What a pipeline source is (video files, LeRobot episodes), and what its clip stage is asked to produce.

A source lists its inputs and does the two per-input stages, probe and clip, inside worker processes; it
must never raise for a bad input, but return a record saying why (see ``manifest.py``). The shared stages
(filter, shard, stats) only read the records and the work files, so a new source needs no change there.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from wm_video.data.pipeline.clip import read_frames
from wm_video.data.pipeline.filter import window_features
from wm_video.data.schema import ActionSpace
from wm_video.data.writer import clip_starts


@dataclass(frozen=True)
class ClipParams:
    """The clip stage's settings, resolved (``fps`` is never None here).

    Args:
        size: output frames are ``size x size`` (short side scaled to it, centre crop).
        clip_len: frames per clip.
        stride: frames between clip starts; the last clip of an input is aligned to its end.
        fps: output frame rate.
        interpolation: swscale filter for resizing.
    """

    size: int
    clip_len: int
    stride: int
    fps: float
    interpolation: str = "area"


class Source(Protocol):
    """The interface the pipeline runner drives; see ``videos.py`` and ``lerobot.py``."""

    kind: str  # "videos" | "lerobot": recorded in dataset.json
    has_arrays: bool  # True when the clip stage writes per-frame arrays (work/<id>.npz)

    def validate(self) -> None:
        """Check the source as a whole (paths, metadata, chosen fields); raise a clear error naming them."""

    def settings(self) -> dict[str, Any]:
        """The source's choices that change the output (checked on reruns into the same folder)."""

    def inputs(self) -> list[dict[str, Any]]:
        """Every input in a stable order, each a JSON-able dict with unique ``id`` and ``input`` (a name)."""

    def probe(self, ref: dict[str, Any]) -> dict[str, Any]:
        """``{"status": "ok", ...metadata}`` or ``{"status": "broken", "code", "reason"}``."""

    def default_fps(self, probes: list[dict[str, Any]]) -> float:
        """The output rate when the user gives none, from the ``ok`` probe records."""

    def clip(self, ref: dict[str, Any], probe: dict[str, Any], params: ClipParams, work_dir: str) -> dict[str, Any]:
        """Write ``work/<id>.frames`` (and ``.npz``); return the record, ``ok`` ones with :func:`clip_record`."""

    def action_space(self) -> ActionSpace: ...

    def episode_id(self, rec: dict[str, Any]) -> str:
        """The shard episode id of an input (letters, digits, ``-`` and ``_`` only: it starts sample keys)."""

    def clip_meta(self, rec: dict[str, Any], start: int, arrays: dict[str, np.ndarray]) -> tuple[str, dict]:
        """``(meta.source, meta.extra)`` for the clip of ``rec`` starting at ``start`` (``arrays``: its window)."""

    def describe(self) -> dict[str, Any]:
        """What ``dataset.json`` records under ``source`` about where the data came from."""


def input_id(name: str) -> str:
    """A stable id for an input name: 16 hex digits of its SHA-1 (names can be long or hold any character)."""
    return hashlib.sha1(name.encode()).hexdigest()[:16]


def safe_key(text: str, max_len: int = 48) -> str:
    """``text`` reduced to ``[A-Za-z0-9_-]``: webdataset splits sample keys at the first dot."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:max_len] or "x"


def clip_record(ref: dict[str, Any], params: ClipParams, work_dir: str, frames: int, **fields: Any) -> dict[str, Any]:
    """The ``ok`` record of an input whose ``frames`` work frames are written: its clip windows with the
    filter's features (computed here, while the frames are in the page cache)."""
    starts = clip_starts(frames, params.clip_len, params.stride)
    clips = window_features(read_frames(work_dir, ref["id"], params.size), starts, params.clip_len) if starts else []
    return {"status": "ok", "frames": frames, "fps": params.fps, **fields, "clips": clips}
