"""Probe a video file through PyAV: its metadata, or why it cannot be used. Never raises for a bad file.

A file counts as usable when it opens, has a video stream and that stream yields at least one decoded
picture (a file can open cleanly and still hold nothing decodable). Decoding the whole file is the clip
stage's job; it marks files that break or end early there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av


def probe_video(path: str | os.PathLike) -> dict[str, Any]:
    """``{"status": "ok", "codec", "width", "height", "fps", "duration", "frames", "bytes"}`` for a usable
    video, else ``{"status": "broken", "code", "reason"}``.

    ``fps`` is the stream's average rate (None when the container does not say); ``duration`` is the video's
    length in seconds where the file says (the clip stage compares it with what decodes, to catch truncated
    files); ``frames`` is the container's frame count or None (Matroska and WebM do not store one).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        return _broken("missing" if isinstance(e, FileNotFoundError) else "unreadable",
                       f"cannot read the file: {e.strerror or e}")
    if size == 0:
        return _broken("zero_length", "zero-length file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        return _broken("corrupt", f"not a readable video container ({_msg(e)})")
    try:
        with container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                return _broken("no_video_stream", f"no video stream (streams: {', '.join(kinds)})")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            # The video stream's own duration, else the container's when it holds nothing else (with an audio
            # track the container's can be the audio's); None when neither is known.
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None and len(container.streams) == 1:
                duration = container.duration / 1_000_000  # av.time_base: microseconds
            meta = {"status": "ok", "codec": stream.codec_context.name, "width": stream.codec_context.width,
                    "height": stream.codec_context.height, "fps": round(float(rate), 6) if rate else None,
                    "duration": round(duration, 6) if duration is not None else None,
                    "frames": int(stream.frames) or None, "bytes": size}
            try:
                first = next(container.decode(stream), None)
            except (av.error.FFmpegError, OSError, ValueError) as e:
                return _broken("corrupt", f"video stream does not decode ({_msg(e)})")
            if first is None:
                return _broken("no_frames", "video stream holds no decodable frame")
            if not meta["width"] or not meta["height"]:
                meta["width"], meta["height"] = first.width, first.height
            return meta
    except (av.error.FFmpegError, OSError, ValueError) as e:  # raised while reading headers or closing
        return _broken("corrupt", f"error while reading ({_msg(e)})")


def _broken(code: str, reason: str) -> dict[str, Any]:
    return {"status": "broken", "code": code, "reason": reason}


def _msg(e: BaseException) -> str:
    """FFmpeg errors carry the file name in their text; the manifest names the input already."""
    text = getattr(e, "strerror", None) or str(e)
    return f"{type(e).__name__}: {text}"
