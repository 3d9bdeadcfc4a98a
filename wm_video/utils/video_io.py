"""Video frames and files, for whatever writes or reads video (generation, planning, evaluation scripts): model
frames to uint8, mp4 (H.264 through PyAV) and GIF (Pillow), side by side with the ground truth, with the predicted
reward and termination drawn on each frame (only for the heads that passed their quality gates). Every file is
written under a temporary name and then renamed."""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw

from wm_video.utils.atomic import atomic_path

log = logging.getLogger(__name__)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(..., 3, h, w)`` float in [-1, 1] -> ``(..., h, w, 3)`` uint8."""
    x = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of ``(t, h, w, 3)`` uint8 (64x64 frames are too small to look at)."""
    return frames if factor <= 1 else frames.repeat(factor, axis=1).repeat(factor, axis=2)


def side_by_side(*videos: np.ndarray, gap: int = 2) -> np.ndarray:
    """``(t, h, w, 3)`` videos of equal length next to each other, separated by a white gap."""
    t, h = videos[0].shape[:2]
    sep = np.full((t, h, gap, 3), 255, np.uint8)
    parts = []
    for v in videos:
        parts += [v, sep]
    return np.concatenate(parts[:-1], axis=2)


def annotate(frames: np.ndarray, lines: list[str]) -> np.ndarray:
    """A caption strip under each frame: ``lines[i]`` for frame ``i``."""
    t, h, w = frames.shape[:3]
    strip = 14
    out = np.zeros((t, h + strip, w, 3), np.uint8)
    out[:, :h] = frames
    for i, text in enumerate(lines):
        img = Image.fromarray(out[i])
        ImageDraw.Draw(img).text((2, h + 1), text, fill=(255, 255, 255))
        out[i] = np.asarray(img)
    return out


def prediction_captions(rewards: np.ndarray, terminations: np.ndarray, heads: dict[str, bool | None] | None = None
                        ) -> list[str]:
    """``t+i r=... end=...`` for each predicted step, leaving out the reward or termination of a head whose quality
    gate did not pass (``heads``: ``WorldModel.head_quality``; False: failed, None: the data had nothing to check it
    on; a head missing from it, as for models trained before the gates, is drawn). One log line says why."""
    heads = heads or {}
    show = {name: heads.get(name, True) is True for name in ("reward", "termination")}
    for name, shown in show.items():
        if not shown:
            why = "failed its quality gate" if heads.get(name) is False else "could not be checked on its data"
            log.info("the dynamics model's %s head %s (its quality.json): its captions are left out", name, why)
    return [" ".join([f"t+{i + 1}", *([f"r={rewards[i]:+.2f}"] if show["reward"] else []),
                      *([f"end={terminations[i]:.2f}"] if show["termination"] else [])]) for i in range(len(rewards))]


def _atomic(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # the encoders are told the format: the temporary's name has no .mp4/.gif
        write(tmp)
    return path


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float, crf: int = 18) -> Path:
    """``(t, h, w, 3)`` uint8 -> H.264 mp4 (yuv420p, so odd sizes are padded to even)."""
    h, w = frames.shape[1:3]
    pad = ((0, 0), (0, h % 2), (0, w % 2), (0, 0))
    frames = np.pad(frames, pad) if h % 2 or w % 2 else frames

    def write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for f in frames:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
            out.mux(stream.encode())

    return _atomic(Path(path), write)


def write_gif(frames: np.ndarray, path: str | os.PathLike, fps: float) -> Path:
    """``(t, h, w, 3)`` uint8 -> looping GIF."""
    images = [Image.fromarray(f) for f in frames]

    def write(tmp: Path) -> None:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps),
                       loop=0)

    return _atomic(Path(path), write)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video file as ``(t, h, w, 3)`` uint8 (for tests and checks)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])
