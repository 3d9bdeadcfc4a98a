"""Each play-through of ``wm-video play``, kept: an mp4 to watch and a shard in the project's data format to replay
or train on.

A play-through runs from a reset to the next reset or episode end. Its frames are the start frame (the last
context frame) and every predicted frame but the last, each with the action taken after it and that action's
outcome from the heads, as simulator collection writes episodes (``actions[i]`` after ``frames[i]``). The folder:

    RECORD_DIR/playthrough-0000.mp4        every frame, at the model's fps
    RECORD_DIR/data/shard-000000.tar       the play-through cut into clips of ``clip_len`` frames
    RECORD_DIR/data/dataset.json           the index over every play-through's shard (``ClipLoader`` reads it)

Numbers continue after what the folder already holds, so nothing is overwritten; every file appears whole under
its name (write, then rename). A play-through shorter than ``clip_len`` gets its mp4 but no clips (counted in the
summary as too short), as collection skips too-short episodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wm_video.data.reader import load_dataset_info
from wm_video.data.schema import ActionSpace, Clip, ClipMeta
from wm_video.data.writer import ShardWriter, clip_starts, finalize_dataset, read_sidecar, shard_name
from wm_video.utils.video_io import write_mp4

_NUMBERED = re.compile(r"^(?:playthrough-(\d+)\.mp4|shard-(\d+)\.tar)$")


@dataclass
class Recording:
    """What one finished play-through wrote."""

    video: str
    shard: str | None
    frames: int
    clips: int


@dataclass
class Recorder:
    """Collects play-throughs and writes them (see the module docstring).

    Args:
        root: the recordings folder (made if absent).
        action_space: the world model's action space (the shards' space).
        resolution: frame size.
        fps: the model's frame rate (the mp4's and the dataset's).
        clip_len: frames per clip of the shards.
        source: what the dataset index records as its source (the world model's folder).
    """

    root: Path
    action_space: ActionSpace
    resolution: int
    fps: float
    clip_len: int = 8
    source: dict[str, Any] = field(default_factory=dict)
    recordings: list[Recording] = field(default_factory=list)
    too_short: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.clip_len < 2:
            raise ValueError(f"record clip_len must be >= 2, got {self.clip_len}")
        index = self.root / "data" / "dataset.json"
        if index.is_file():  # recordings of another model's action space cannot share one dataset
            theirs = load_dataset_info(index)
            if theirs.action_space.to_dict() != self.action_space.to_dict():
                raise ValueError(f"{index}: field 'action_space' is {theirs.action_space.to_dict()}, this world "
                                 f"model's is {self.action_space.to_dict()}; record into another folder")
        self._frames: list[np.ndarray] = []
        self._actions: list[Any] = []
        self._rewards: list[float] = []
        self._ends: list[bool] = []
        self.start_name = ""

    def start(self, frame: np.ndarray, start_name: str) -> None:
        """A new play-through from ``frame`` ``(h, w, 3)`` uint8 (the previous one should be finished first)."""
        self._frames, self._actions, self._rewards, self._ends = [frame], [], [], []
        self.start_name = start_name

    def add(self, action: Any, reward: float, terminated: bool, frame: np.ndarray) -> None:
        """The action taken after the last frame, its outcome, and the frame it led to."""
        self._actions.append(action)
        self._rewards.append(float(reward))
        self._ends.append(bool(terminated))
        self._frames.append(frame)

    @property
    def steps(self) -> int:
        return len(self._actions)

    def finish(self) -> Recording | None:
        """Write the play-through so far (None when no step was taken) and start nothing new."""
        if not self._actions:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        k = self._next_number()
        video = write_mp4(np.stack(self._frames), self.root / f"playthrough-{k:04d}.mp4", self.fps)
        n = len(self._actions)
        frames = np.stack(self._frames[:n])  # the last frame has no action after it
        starts = clip_starts(n, self.clip_len, self.clip_len)
        shard = None
        if starts:
            shard = self._write_shard(k, frames, starts)
        else:
            self.too_short += 1
        rec = Recording(video=str(video), shard=None if shard is None else str(shard), frames=len(self._frames),
                        clips=len(starts))
        self.recordings.append(rec)
        self._frames, self._actions, self._rewards, self._ends = [], [], [], []
        return rec

    def _next_number(self) -> int:
        used = [-1]
        for p in [*self.root.iterdir(), *(self.root / "data").iterdir()]:
            m = _NUMBERED.match(p.name)
            if m:
                used.append(int(m.group(1) or m.group(2)))
        return max(used) + 1

    def _write_shard(self, k: int, frames: np.ndarray, starts: list[int]) -> Path:
        space = self.action_space
        if space.kind == "discrete":
            actions = np.asarray(self._actions, np.int64)
        elif space.kind == "continuous":
            actions = np.asarray(self._actions, np.float32).reshape(len(self._actions), -1)
        else:
            actions = None
        rewards, ends = np.asarray(self._rewards, np.float32), np.asarray(self._ends, bool)
        path = self.root / "data" / shard_name(k)
        episode_id = f"play-{k:04d}"
        with ShardWriter(path, space, "raw", self.fps) as writer:
            for s in starts:
                sl = slice(s, s + self.clip_len)
                meta = ClipMeta(episode_id=episode_id, clip_start=s, num_frames=self.clip_len, fps=self.fps,
                                source="wm-video play", fields=[],
                                extra={"start": self.start_name, "episode_length": len(frames),
                                       "rewards": "the world model's reward head"})
                writer.write(Clip(frames[sl], meta, None if actions is None else actions[sl], rewards[sl], ends[sl]))
            writer.close({"episode_returns": [float(rewards.sum())], "episode_lengths": [len(frames)],
                          "successes": [None]})
        shards = sorted(p for p in (self.root / "data").glob("shard-*.tar") if read_sidecar(p) is not None)
        finalize_dataset(self.root / "data", shards, resolution=[self.resolution, self.resolution], fps=self.fps,
                         clip_len=self.clip_len, storage="raw", action_space=space,
                         source={"kind": "play", **self.source}, val_fraction=None)
        return path
