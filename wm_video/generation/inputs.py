"""Context video and action files for generation, each checked before any work starts.

Context: a video file (mp4, webm, mkv, avi, mov; decoded with PyAV, short side scaled to the model's
resolution and centre-cropped), a folder of images (png, jpg; sorted by name), or a clip of a shard dataset
(``DATASET_DIR`` for its first clip, ``DATASET_DIR#N`` for the N-th, ``DATASET_DIR#KEY`` by clip key), which also
brings its actions and the ground-truth future. Actions: ``.npy``, ``.json`` (a list, or ``{"actions": [...]}``)
or ``.csv`` (one row per step; a header line is skipped).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the readers live in data/ (the gymnasium env, a lower floor, reads contexts too)
from wm_video.data.frame_files import VIDEO_SUFFIXES, frame_dataset_info, read_image_folder, read_video_frames
from wm_video.data.reader import iter_clips, shard_paths


@dataclass
class Context:
    """Context frames ``(t, h, w, 3)`` uint8 at the model's resolution; with a dataset clip also its actions
    ``(t_clip, ...)``, rewards and terminations over the whole clip (the frames after the context are the ground
    truth ``future``) and its task text (``meta.json`` ``extra.task``, None where it has none)."""

    frames: np.ndarray
    source: str
    actions: np.ndarray | None = None
    future: np.ndarray | None = None
    rewards: np.ndarray | None = None
    terminations: np.ndarray | None = None
    task: str | None = None


def load_context(spec: str, resolution: int, num_frames: int) -> Context:
    """Load ``num_frames`` context frames from ``spec`` (see the module docstring); clear errors naming the file
    and what was expected, before any model work."""
    path, _, pick = spec.partition("#")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"context {p}: no such file or folder")
    if p.is_dir() and (p / "dataset.json").exists():
        return _dataset_context(p, pick, resolution, num_frames)
    if pick:
        raise ValueError(f"context {spec}: '#...' selects a clip of a dataset folder, and {p} is not one")
    if p.is_dir():
        frames = read_image_folder(p, resolution)
    elif p.suffix.lower() in VIDEO_SUFFIXES:
        frames = read_video_frames(p, resolution)
    else:
        raise ValueError(f"context {p}: expected a video file ({', '.join(sorted(VIDEO_SUFFIXES))}), a folder of "
                         "images or a dataset folder")
    if len(frames) < num_frames:
        raise ValueError(f"context {p}: has {len(frames)} frames, the generation needs {num_frames} context frames")
    return Context(frames[-num_frames:], str(p))


def _dataset_context(p: Path, pick: str, resolution: int, num_frames: int) -> Context:
    info = frame_dataset_info(p, resolution, "context")
    index = int(pick) if pick.isdigit() else None
    i = 0
    for url in shard_paths(p, info):
        for clip in iter_clips(url, info.action_space):
            if (index is None and (not pick or clip.key == pick)) or index == i:
                if clip.frames.shape[1:] != (resolution, resolution, 3):
                    raise ValueError(f"context {p}#{clip.key}: frames of shape {clip.frames.shape[1:]} in {url}, "
                                     f"though its dataset.json says {resolution}x{resolution} RGB")
                if len(clip.frames) < num_frames:
                    raise ValueError(f"context {p}#{pick or 0}: clip has {len(clip.frames)} frames, the "
                                     f"generation needs {num_frames} context frames")
                return Context(clip.frames[:num_frames], f"{p}#{clip.key}", clip.actions,
                               clip.frames[num_frames:], clip.rewards, clip.terminations, clip.meta.task)
            i += 1
    raise ValueError(f"context {p}: no clip {pick!r} (the dataset has {i} clips)")


def load_actions(path: str, num_frames: int | None, action_type: str, num_actions: int = 0, action_dim: int = 0
                 ) -> np.ndarray:
    """Actions for ``num_frames`` steps from ``.npy``/``.json``/``.csv``: int64 ``(T,)`` ids in
    ``[0, num_actions)`` or float32 ``(T, action_dim)`` finite values; longer files are cut to ``num_frames``
    (None: every action in the file)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"actions {p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".json":
            data = json.loads(p.read_text())
            arr = np.asarray(data["actions"] if isinstance(data, dict) else data, dtype=np.float64)
        elif suffix == ".csv":
            with open(p, newline="") as f:
                rows = [r for r in csv.reader(f) if r]
            if rows and not _numeric(rows[0]):
                rows = rows[1:]
            arr = np.asarray([[float(v) for v in r] for r in rows], dtype=np.float64)
            if arr.ndim == 2 and arr.shape[1] == 1 and action_type == "discrete":
                arr = arr[:, 0]
        else:
            raise ValueError(f"actions {p}: expected a .npy, .json or .csv file")
    except (ValueError, KeyError, TypeError, EOFError, OSError) as e:
        if str(e).startswith(f"actions {p}"):
            raise
        raise ValueError(f"actions {p}: unreadable ({type(e).__name__}: {e})") from e
    return check_actions(arr, num_frames, action_type, num_actions, action_dim, str(p))


def check_actions(arr: np.ndarray, num_frames: int | None, action_type: str, num_actions: int, action_dim: int,
                  where: str) -> np.ndarray:
    if action_type == "none":
        raise ValueError(f"actions {where}: the model is action-free (action_type 'none'); leave actions out")
    arr = np.asarray(arr)
    if arr.ndim == 0:
        raise ValueError(f"actions {where}: a single value (shape ()), expected one action per frame")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"actions {where}: expected numbers, got dtype {arr.dtype}")
    if num_frames is not None and len(arr) < num_frames:
        raise ValueError(f"actions {where}: {len(arr)} steps, the generation needs {num_frames} (one per frame)")
    arr = arr[:num_frames]
    if len(arr) == 0:
        raise ValueError(f"actions {where}: no steps, expected one action per frame")
    num_frames = len(arr)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise ValueError(f"actions {where}: NaN or infinite value at {bad}")
    if action_type == "discrete":
        if arr.ndim != 1:
            raise ValueError(f"actions {where}: expected {num_frames} integer action ids (shape ({num_frames},)), "
                             f"got shape {arr.shape}")
        if np.issubdtype(arr.dtype, np.floating) and (arr != np.round(arr)).any():
            bad = int(np.argwhere(arr != np.round(arr))[0, 0])
            raise ValueError(f"actions {where}: expected integer action ids, got {arr[bad]} at step {bad}")
        if arr.min() < 0 or arr.max() >= num_actions:
            raise ValueError(f"actions {where}: ids must be in [0, {num_actions}), got [{arr.min()}, {arr.max()}]")
        return arr.astype(np.int64)
    if arr.ndim != 2 or arr.shape[1] != action_dim:
        raise ValueError(f"actions {where}: expected shape ({num_frames}, {action_dim}) for {action_dim}-dimensional "
                         f"continuous actions, got {arr.shape}")
    return arr.astype(np.float32)


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True
