"""Turn decoded video into fixed-size frames at a fixed rate, and keep them in a work file for later stages.

- **Decode**: PyAV, frames in stream order with their presentation time in seconds.
- **Resample**: output frame ``k`` shows the source frame nearest in time to ``t0 + k / fps`` (ties go to the
  earlier frame); a source at 30 fps resampled to 15 keeps every other frame, one at 10 fps resampled to 20
  shows each frame twice. Frames never chosen are not converted at all, which is most of the saving when
  going down in rate.
- **Resize and crop**: swscale (through ``VideoFrame.reformat``, area interpolation, which averages instead
  of skipping pixels when shrinking) scales the short side to ``S`` in the same pass as the YUV -> RGB
  conversion; the centre ``S x S`` is kept.
- **Work files**: ``work/<id>.frames`` holds the frames as raw uint8 ``(n, S, S, 3)``, written under a
  temporary name and renamed when whole; per-frame arrays (actions, rewards, ...) go beside it in
  ``work/<id>.npz``. The filter and shard stages read clip windows from them with ``np.memmap``, so no stage
  holds a whole video in memory. Delete ``work/`` once ``dataset.json`` exists.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from wm_video.utils.atomic import AtomicFile, DataWriteError, atomic_write_bytes

T = TypeVar("T")
WORK_DIR = "work"
_EPS = 1e-6  # seconds: timestamps computed from different time bases agree to well within this


class DecodeError(Exception):
    """A video broke while decoding; ``code`` and ``reason`` go into the manifest."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def square_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """``(scaled_w, scaled_h, x0, y0)``: scale so the short side is ``size``, then crop ``size x size`` at
    ``(x0, y0)`` (the centre)."""
    scale = size / min(width, height)
    sw, sh = max(size, round(width * scale)), max(size, round(height * scale))
    return sw, sh, (sw - size) // 2, (sh - size) // 2


class SquareResizer:
    """``frame -> uint8 (S, S, 3)``: swscale resize of the short side to ``size`` plus a centre crop.

    Args:
        size: output height and width in pixels.
        interpolation: swscale filter name (``AREA``, ``BILINEAR``, ``BICUBIC``, ``LANCZOS``, ...).
    """

    def __init__(self, size: int, interpolation: str = "AREA") -> None:
        self.size, self.interpolation = size, interpolation.upper()
        self._sws = VideoReformatter()  # keeps its swscale context between frames of the same size

    def __call__(self, frame: Any) -> np.ndarray:
        s = self.size
        sw, sh, x0, y0 = square_geometry(frame.width, frame.height, s)
        rgb = self._sws.reformat(frame, width=sw, height=sh, format="rgb24",
                                 interpolation=self.interpolation).to_ndarray()
        return np.ascontiguousarray(rgb[y0:y0 + s, x0:x0 + s])  # (S, S, 3)


def resample(frames: Iterable[tuple[float, T]], fps: float, frame_duration: float) -> Iterator[T]:
    """Nearest-in-time resampling of ``(time_s, item)`` pairs (increasing times) to a constant ``fps``.

    Output ``k`` is the item nearest to ``t0 + k / fps`` (``t0``: the first item's time); the stream covers
    ``[t0, t_last + frame_duration)``, so ``n`` frames at rate ``r`` give ``n * fps / r`` frames. An item
    chosen for several outputs is yielded that many times (callers convert it once).
    """
    t0, k = None, 0
    prev: tuple[float, T] | None = None
    for t, item in frames:
        if t0 is None:
            t0 = t
        while t0 + k / fps <= t + _EPS:
            target = t0 + k / fps
            # the later item wins only when strictly nearer: ties keep the earlier one
            yield prev[1] if prev is not None and target - prev[0] <= t - target + _EPS else item
            k += 1
        prev = (t, item)
    if prev is None or t0 is None:
        return
    end = prev[0] + frame_duration
    while t0 + k / fps < end - _EPS:
        yield prev[1]
        k += 1


def decoded_frames(path: str | os.PathLike, fps_hint: float | None = None) -> Iterator[tuple[float, Any]]:
    """``(time_s, av.VideoFrame)`` for every frame of the first video stream; raises :class:`DecodeError`
    (never a PyAV error) when the data breaks off, naming the time it broke at."""
    t = 0.0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or fps_hint or 30.0)
            for i, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else i / rate
                yield t, frame
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:
        raise DecodeError("corrupt", f"decoding failed after {t:.2f} s ({type(e).__name__}: {e})") from e


def frames_at(path: str | os.PathLike, targets: list[float], tolerance: float) -> Iterator[Any]:
    """The decoded frame nearest each target time (seconds, non-decreasing), for videos whose frames belong to
    known timestamps (LeRobot: an episode's rows, possibly a slice of a file holding many episodes).

    Seeks to the keyframe before the first target and stops decoding after the last. Raises
    :class:`DecodeError` when no frame lies within ``tolerance`` of a target, or the video ends first.
    """
    i, prev, t = 0, None, 0.0

    def pick(target: float, cands: list[tuple[float, Any]]) -> Any:
        best_t, best = min(cands, key=lambda c: abs(c[0] - target))  # ties: the earlier frame (listed first)
        if abs(best_t - target) > tolerance:
            raise DecodeError("frames_missing", f"no video frame within {tolerance * 1000:.0f} ms of "
                                                f"t={target:.3f} s (nearest at {best_t:.3f} s)")
        return best

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if targets and targets[0] > tolerance:
                container.seek(int((targets[0] - tolerance) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.time if frame.time is not None else 0.0)
                while i < len(targets) and targets[i] <= t + _EPS:
                    yield pick(targets[i], ([prev] if prev is not None else []) + [(t, frame)])
                    i += 1
                if i == len(targets):
                    return
                prev = (t, frame)
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:
        raise DecodeError("corrupt", f"decoding failed after {t:.2f} s ({type(e).__name__}: {e})") from e
    while i < len(targets):  # past the last frame: only the last one can be near enough
        if prev is None:
            raise DecodeError("frames_missing", "video stream holds no frame")
        if targets[i] - prev[0] > tolerance:
            raise DecodeError("truncated", f"video ends at {prev[0]:.3f} s, frames are needed up to "
                                           f"{targets[-1]:.3f} s")
        yield prev[1]
        i += 1


class FrameWriter:
    """Append uint8 ``(S, S, 3)`` frames to ``work/<key>.frames``; :meth:`commit` renames it into place.

    Use as a context manager: leaving it by an exception removes the temporary file.
    """

    def __init__(self, work_dir: str | os.PathLike, key: str, size: int) -> None:
        self.path = frames_path(work_dir, key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.shape, self.count = (size, size, 3), 0
        # No fsync: a work file is intermediate, and one cut short by a crash is caught by its size (see
        # work_complete) and redone, while fsyncing hundreds of MB of frames would cost the clip stage dearly.
        self._out = AtomicFile(self.path, fsync=False)  # .NAME.tmp-PID until commit()
        self._file = self._out.file

    def append(self, frame: np.ndarray) -> None:
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise ValueError(f"work frame must be uint8 {self.shape}, got {frame.dtype} {frame.shape}")
        self._file.write(frame.tobytes())
        self.count += 1

    def commit(self) -> int:
        try:
            self._out.commit()
        except OSError as e:
            self.abort()
            raise DataWriteError(e.errno, f"could not write work file {self.path}: {e.strerror}") from e
        return self.count

    def abort(self) -> None:
        self._out.abort()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def frames_path(work_dir: str | os.PathLike, key: str) -> Path:
    return Path(work_dir) / f"{key}.frames"


def arrays_path(work_dir: str | os.PathLike, key: str) -> Path:
    return Path(work_dir) / f"{key}.npz"


def read_frames(work_dir: str | os.PathLike, key: str, size: int) -> np.ndarray:
    """The work frames of ``key`` as a read-only memmap ``(n, S, S, 3)``."""
    path = frames_path(work_dir, key)
    frame_bytes = size * size * 3
    n_bytes = path.stat().st_size
    if n_bytes % frame_bytes:
        raise DataWriteError(0, f"work file {path} holds {n_bytes} bytes, not whole {size}x{size} frames")
    if n_bytes == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(n_bytes // frame_bytes, size, size, 3))


def write_arrays(work_dir: str | os.PathLike, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Per-frame arrays of ``key`` (``.npz``, no pickles), written atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(arrays_path(work_dir, key), buf.getvalue())


def read_arrays(work_dir: str | os.PathLike, key: str) -> dict[str, np.ndarray]:
    path = arrays_path(work_dir, key)
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def work_complete(work_dir: str | os.PathLike, key: str, frames: int, size: int, arrays: bool) -> bool:
    """True when the work files of a finished clip-stage record are all there, at the recorded size."""
    path = frames_path(work_dir, key)
    if not path.exists() or path.stat().st_size != frames * size * size * 3:
        return False
    return not arrays or arrays_path(work_dir, key).exists()
