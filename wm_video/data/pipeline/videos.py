"""Source: plain video files (mp4, webm, mkv, avi), from a folder (searched recursively) or a list file.

Action-free: clips carry frames only (``action_space`` ``none``), for pretraining. Each file is one input
and one episode. A list file has one path per line (blank lines and ``#`` comments skipped; relative paths
are relative to the list file's folder); a listed file that does not exist is an input marked ``broken``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wm_video.data.pipeline.clip import DecodeError, FrameWriter, SquareResizer, decoded_frames, resample
from wm_video.data.pipeline.probe import probe_video
from wm_video.data.pipeline.source import ClipParams, clip_record, input_id, safe_key
from wm_video.data.schema import ActionSpace

log = logging.getLogger(__name__)
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi")
# A file whose frames end this much before its declared duration is truncated (beyond one frame of slack).
_TRUNCATED_FRACTION = 0.9


@dataclass
class VideoSource:
    """Video files under ``src`` (a folder) or listed in ``src`` (a text file).

    Args:
        src: folder of videos, or a text file listing them.
    """

    src: str
    kind: str = "videos"
    has_arrays: bool = False

    def validate(self) -> None:
        if not Path(self.src).exists():
            raise FileNotFoundError(f"--src {self.src}: no such folder or list file")

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, "src": str(Path(self.src).resolve())}

    def _root(self) -> Path:
        src = Path(self.src).resolve()
        return src if src.is_dir() else src.parent

    def inputs(self) -> list[dict[str, Any]]:
        src = Path(self.src)
        if src.is_dir():
            names, other = [], Counter()
            for p in sorted(src.rglob("*")):
                if p.is_file() and not p.name.startswith("."):
                    if p.suffix.lower() in VIDEO_EXTENSIONS:
                        names.append(p.relative_to(src).as_posix())
                    else:
                        other[p.suffix.lower() or "(none)"] += 1
            if other:
                log.info("%s: ignored %d files that are not %s: %s", src, sum(other.values()),
                         "/".join(VIDEO_EXTENSIONS), dict(other))
        else:
            lines = [ln.strip() for ln in src.read_text().splitlines()]
            names = list(dict.fromkeys(ln for ln in lines if ln and not ln.startswith("#")))
        return [{"id": input_id(n), "input": n} for n in names]

    def path(self, ref: dict[str, Any]) -> Path:
        return self._root() / ref["input"]  # an absolute name in a list file stays absolute

    def probe(self, ref: dict[str, Any]) -> dict[str, Any]:
        return probe_video(self.path(ref))

    def default_fps(self, probes: list[dict[str, Any]]) -> float:
        """The most common source rate (rounded to 0.001), so most files are only resized."""
        rates = Counter(round(p["fps"], 3) for p in probes if p["status"] == "ok" and p.get("fps"))
        if not rates:
            raise ValueError(f"{self.src}: no probed video states its frame rate; pass --fps")
        return max(rates.items(), key=lambda kv: (kv[1], -kv[0]))[0]

    def clip(self, ref: dict[str, Any], probe: dict[str, Any], params: ClipParams, work_dir: str) -> dict[str, Any]:
        """Decode, resample to ``params.fps``, resize and crop every frame into ``work/<id>.frames``."""
        src_fps = probe.get("fps") or params.fps
        frame_dur = 1.0 / src_fps
        resize = SquareResizer(params.size, params.interpolation)
        span = {"first": None, "last": None, "decoded": 0}

        def timed():
            for t, frame in decoded_frames(self.path(ref), src_fps):
                span["first"] = t if span["first"] is None else span["first"]
                span["last"], span["decoded"] = t, span["decoded"] + 1
                yield t, frame

        try:
            with FrameWriter(work_dir, ref["id"], params.size) as writer:
                item: Any = None
                rgb: np.ndarray | None = None
                for frame in resample(timed(), params.fps, frame_dur):
                    if frame is not item:  # a frame repeated when going up in rate is converted once
                        item, rgb = frame, resize(frame)
                    writer.append(rgb)
                declared = probe.get("duration")
                decoded = (span["last"] - span["first"] + frame_dur) if span["decoded"] else 0.0
                if declared and decoded < _TRUNCATED_FRACTION * declared - frame_dur:
                    raise DecodeError("truncated", f"truncated: frames stop after {decoded:.2f} s of the "
                                                   f"{declared:.2f} s the file declares")
                n = writer.commit()
        except DecodeError as e:
            return {"status": "broken", "code": e.code, "reason": e.reason}
        return clip_record(ref, params, work_dir, n, source_fps=src_fps, source_frames=span["decoded"])

    def action_space(self) -> ActionSpace:
        return ActionSpace("none")

    def episode_id(self, rec: dict[str, Any]) -> str:
        return f"{safe_key(Path(rec['input']).stem, 40)}-{rec['id'][:8]}"

    def clip_meta(self, rec: dict[str, Any], start: int, arrays: dict[str, np.ndarray]) -> tuple[str, dict]:
        return rec["input"], {"time_s": round(start / rec["fps"], 6)}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "src": os.fspath(self.src)}
