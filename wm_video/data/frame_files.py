"""Frames from a video file, a folder of images or a frame dataset at a model's square resolution: the contexts that
generation and the gymnasium env start from.

A video (mp4, webm, mkv, avi, mov, gif) is decoded with PyAV, its short side scaled to the resolution and
centre-cropped; images (png, jpg, bmp, webp) are sorted by name, centre-cropped square and box-resized.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image

from wm_video.data.pipeline.clip import SquareResizer
from wm_video.data.reader import load_dataset_info
from wm_video.data.schema import DatasetInfo

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
# Context images are scaled down to the model's resolution (at most a few hundred pixels), so nothing needs more than
# 4096x4096; the size is read from the header, before an image is decoded (8192x8192 RGB alone is 200 MB).
MAX_IMAGE_PIXELS = 4096 * 4096


def read_video_frames(p: str | os.PathLike, resolution: int) -> np.ndarray:
    """Every frame of the video ``p`` as ``(t, resolution, resolution, 3)`` uint8; ValueError naming the file."""
    p = Path(p)
    resize = SquareResizer(resolution)
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise ValueError(f"context {p}: no video stream")
            frames = [resize(f) for f in container.decode(container.streams.video[0])]
    except av.error.FFmpegError as e:
        raise ValueError(f"context {p}: unreadable video ({e})") from e
    if not frames:
        raise ValueError(f"context {p}: no decodable frames")
    return np.stack(frames)


def read_image_folder(p: str | os.PathLike, resolution: int) -> np.ndarray:
    """The images of the folder ``p``, sorted by name, as ``(t, resolution, resolution, 3)`` uint8."""
    p = Path(p)
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"context {p}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
    return read_images(files, resolution)


def read_images(files: Sequence[str | os.PathLike], resolution: int) -> np.ndarray:
    """The image files ``files``, in the order given, as ``(t, resolution, resolution, 3)`` uint8."""
    frames = []
    for f in files:
        try:
            with warnings.catch_warnings():  # PIL warns, then refuses, past its own (much larger) pixel limit
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(f)  # reads the header only
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise ValueError(f"context {f}: {img.width}x{img.height} pixels, more than a context image may "
                                     f"have ({MAX_IMAGE_PIXELS} pixels); scale it down first")
                img = img.convert("RGB")
        except (OSError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ValueError(f"context {f}: unreadable image ({e})") from e
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        frames.append(np.asarray(img.resize((resolution, resolution), Image.Resampling.BOX)))
    return np.stack(frames)


def frame_dataset_info(p: str | os.PathLike, resolution: int, where: str) -> DatasetInfo:
    """The ``DatasetInfo`` of a frame dataset whose frames are ``resolution`` square; ValueError (naming ``where``)
    for token shards or another resolution."""
    info = load_dataset_info(p)
    if info.frame_storage == "tokens":
        raise ValueError(f"{where} {p}: holds tokens; give the frame dataset it was tokenized from")
    if info.resolution != [resolution, resolution]:
        raise ValueError(f"{where} {p}: frames are {info.resolution[0]}x{info.resolution[1]}, the model needs "
                         f"{resolution}x{resolution}")
    return info
