"""Start states of the gymnasium env (:mod:`wm_video.envs.world_model_gym`): windows of a world model's context
length, from a frame dataset's clips (held-out by default), a video file, images or a frames array. A context shorter
than the window is padded in front by repeating its first frame (and first action), so every start fills the window
alike."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wm_video.data.frame_files import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    frame_dataset_info,
    read_image_folder,
    read_images,
    read_video_frames,
)
from wm_video.data.reader import iter_clips, shard_paths
from wm_video.data.split import split_dataset

MAX_STARTS = 256  # start states read from a dataset: enough variety, a bounded load time


@dataclass
class StartStates:
    """Contexts to start episodes from: ``frames`` ``(N, t0, h, w, 3)`` uint8 and ``actions`` ``(N, t0 - 1[, a])``
    between them (None: the null action); ``sources`` names each (``DIR#clip_key``, a file)."""

    frames: np.ndarray
    actions: np.ndarray | None
    sources: list[str]

    def __len__(self) -> int:
        return len(self.frames)


def _windows(frames: np.ndarray, length: int, source: str) -> StartStates:
    """Non-overlapping windows of ``length`` frames of an action-free sequence ``(t, h, w, 3)``; a shorter one is
    padded in front by repeating its first frame."""
    if len(frames) < length:
        frames = np.concatenate([np.repeat(frames[:1], length - len(frames), 0), frames])
    starts = range(0, len(frames) - length + 1, length)
    return StartStates(np.stack([frames[o:o + length] for o in starts]), None,
                       [f"{source}@{o}" for o in starts])


def starts_from_data(path: str | os.PathLike, resolution: int, length: int, split: str = "heldout",
                     val_fraction: float | None = None, limit: int = MAX_STARTS) -> StartStates:
    """The first ``length`` frames (and the actions between them) of up to ``limit`` clips of a frame dataset (a
    shorter clip padded in front, see the module docstring): of its held-out episodes (``split="heldout"``, the
    dataset's recorded split, :mod:`wm_video.data.split`), the others (``"train"``) or all (``"all"``)."""
    if split not in ("heldout", "train", "all"):
        raise ValueError(f"split: expected 'heldout', 'train' or 'all', got {split!r}")
    info = frame_dataset_info(path, resolution, "start states")
    parts = split_dataset(path, val_fraction, info)
    part = None if split == "all" else getattr(parts, split)
    if split == "heldout" and not parts.heldout_clips:
        raise ValueError(f"start states {path}: no held-out clips ({parts.problem or parts.rule}); pass "
                         "split='train' or 'all' to start from the other clips")
    urls = shard_paths(path, info)
    frames, actions, sources = [], [], []
    for i, url in enumerate(urls):
        if part is not None and part.shards is not None and part.shards and i not in part.shards:
            continue
        for clip in iter_clips(url, info.action_space):
            if part is not None and not part.keeps(clip.meta.episode_id):
                continue
            f = clip.frames[:length]
            a = None if clip.actions is None else clip.actions[:len(f) - 1]  # the actions between the frames
            if len(f) < length:  # a clip shorter than the context: padded in front, as a still start
                pad = length - len(f)
                f = np.concatenate([np.repeat(f[:1], pad, 0), f])
                if a is not None:
                    a = np.concatenate([np.repeat(clip.actions[:1], pad, 0), a])
            frames.append(f)
            actions.append(a)
            sources.append(f"{path}#{clip.key}")
            if len(frames) >= limit:
                break
        if len(frames) >= limit:
            break
    if not frames:
        raise ValueError(f"start states {path}: no {split} clips")
    acts = None if any(a is None for a in actions) else np.stack(actions)
    return StartStates(np.stack(frames), acts, sources)


def load_starts(spec: Any, resolution: int, length: int, split: str = "heldout") -> StartStates:
    """Start states from ``spec``: a dataset folder, a video file, a folder of images, a list of image files, or
    frames ``(t, h, w, 3)`` uint8 (see the module docstring)."""
    if isinstance(spec, np.ndarray):
        if spec.ndim != 4 or spec.shape[1:] != (resolution, resolution, 3) or spec.dtype != np.uint8:
            raise ValueError(f"context: expected frames (t, {resolution}, {resolution}, 3) uint8, got {spec.dtype} "
                             f"{spec.shape}")
        return _windows(spec, length, "frames")
    if isinstance(spec, (list, tuple)):
        return _windows(read_images(spec, resolution), length, "images")
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"context {p}: no such file or folder")
    if p.is_dir() and (p / "dataset.json").exists():
        return starts_from_data(p, resolution, length, split)
    if p.is_dir():
        return _windows(read_image_folder(p, resolution), length, str(p))
    if p.suffix.lower() in VIDEO_SUFFIXES:
        return _windows(read_video_frames(p, resolution), length, str(p))
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return _windows(read_images([p], resolution), length, str(p))
    raise ValueError(f"context {p}: expected a dataset folder, a video file ({', '.join(sorted(VIDEO_SUFFIXES))}), "
                     "a folder of images or image files")
