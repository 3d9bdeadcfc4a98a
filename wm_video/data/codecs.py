"""Frame storage codecs for clips: ``raw`` (npy), ``png`` (one lossless strip per clip) and ``mp4`` (H.264).

All three take and give uint8 ``(t, h, w, 3)``. ``raw`` and ``png`` are lossless; ``mp4`` uses ``yuv444p``
because 4:2:0 chroma caps 64x64 frames near 32 dB PSNR (see docs/data-format.md), with ``crf`` setting the
quality (0 is lossless, 10 the default is visually lossless at a fraction of the size).
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from wm_video.data.schema import FRAME_STORAGES, SchemaError

EXTENSIONS = {"raw": "frames.npy", "png": "frames.png", "mp4": "frames.mp4", "tokens": "tokens.npy"}


def encode_frames(frames: np.ndarray, storage: str, fps: float = 15.0, crf: int = 10) -> tuple[str, bytes]:
    """Encode uint8 ``(t, h, w, 3)`` frames; returns ``(sample field name, bytes)``."""
    if storage not in FRAME_STORAGES:
        raise SchemaError(f"frame storage must be one of {FRAME_STORAGES}, got {storage!r}")
    if storage in ("raw", "tokens"):
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(frames), allow_pickle=False)
        return EXTENSIONS[storage], buf.getvalue()
    if storage == "png":
        return EXTENSIONS["png"], _encode_png_strip(frames)
    return EXTENSIONS["mp4"], _encode_mp4(frames, fps, crf)


def decode_frames(name: str, data: bytes, num_frames: int | None = None) -> np.ndarray:
    """Decode bytes stored under field ``name`` back to uint8 ``(t, h, w, 3)``.

    ``num_frames`` is needed for ``png`` strips (the strip stacks frames along the height).
    """
    if name == EXTENSIONS["tokens"]:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.ndim != 3 or arr.dtype.kind != "u":
            raise SchemaError(f"field '{name}' decoded to {arr.dtype} {arr.shape}, expected unsigned (t, h, w)")
        return arr
    if name == EXTENSIONS["raw"]:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    elif name == EXTENSIONS["png"]:
        if not num_frames:
            raise SchemaError("decoding a png strip needs num_frames from meta.json")
        arr = _decode_png_strip(data, num_frames)
    elif name == EXTENSIONS["mp4"]:
        arr = _decode_mp4(data)
    else:
        raise SchemaError(f"unknown frame field {name!r}; expected one of {sorted(EXTENSIONS.values())}")
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise SchemaError(f"field '{name}' decoded to {arr.dtype} {arr.shape}, expected uint8 (t, h, w, 3)")
    return arr


def frame_field(sample: dict) -> str | None:
    """The name of the frame field present in a raw webdataset sample, if any."""
    for name in EXTENSIONS.values():
        if name in sample:
            return name
    return None


def _encode_png_strip(frames: np.ndarray) -> bytes:
    t, h, w, c = frames.shape
    buf = io.BytesIO()
    # One image per clip (frames stacked vertically) keeps one tar member per clip; level 1 encodes fast
    # and decodes as fast as level 9, the size difference being small for rendered frames.
    Image.fromarray(np.ascontiguousarray(frames).reshape(t * h, w, c)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _decode_png_strip(data: bytes, num_frames: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img.convert("RGB"))
    if arr.shape[0] % num_frames:
        raise SchemaError(f"png strip of height {arr.shape[0]} does not split into {num_frames} frames")
    return arr.reshape(num_frames, arr.shape[0] // num_frames, arr.shape[1], 3)


def _encode_mp4(frames: np.ndarray, fps: float, crf: int) -> bytes:
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise SchemaError(f"mp4 frame storage needs even height and width, got {h}x{w}")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv444p"
        # Every frame a keyframe would double the size; a short GOP keeps random access within a clip cheap.
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(max(t, 1))}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _decode_mp4(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data), mode="r") as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise SchemaError("mp4 frame field holds no decodable frames")
    return np.stack(frames)
