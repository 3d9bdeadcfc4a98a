"""Mergeable statistics for actions, rewards and terminations (shard sidecars merge into ``dataset.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RunningStats:
    """Per-dimension count, sum, sum of squares, min and max; exact to merge across shards and processes."""

    count: int = 0
    sum: list[float] = field(default_factory=list)
    sumsq: list[float] = field(default_factory=list)
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)  # (n, a)
        if not len(x):
            return
        if not self.count:
            self.sum, self.sumsq = [0.0] * x.shape[1], [0.0] * x.shape[1]
            self.min, self.max = [float("inf")] * x.shape[1], [float("-inf")] * x.shape[1]
        self.count += len(x)
        self.sum = (np.asarray(self.sum) + x.sum(0)).tolist()
        self.sumsq = (np.asarray(self.sumsq) + (x * x).sum(0)).tolist()
        self.min = np.minimum(self.min, x.min(0)).tolist()
        self.max = np.maximum(self.max, x.max(0)).tolist()

    def merge(self, other: RunningStats) -> RunningStats:
        if not other.count:
            return self
        if not self.count:
            return RunningStats(other.count, list(other.sum), list(other.sumsq), list(other.min), list(other.max))
        return RunningStats(
            self.count + other.count,
            (np.add(self.sum, other.sum)).tolist(),
            (np.add(self.sumsq, other.sumsq)).tolist(),
            np.minimum(self.min, other.min).tolist(),
            np.maximum(self.max, other.max).tolist(),
        )

    def summary(self) -> dict[str, Any]:
        """Mean, std (population), min, max per dimension, for normalisation."""
        if not self.count:
            return {"count": 0}
        mean = np.asarray(self.sum) / self.count
        var = np.maximum(np.asarray(self.sumsq) / self.count - mean**2, 0.0)
        return {"count": self.count, "mean": mean.tolist(), "std": np.sqrt(var).tolist(), "min": self.min,
                "max": self.max}


@dataclass
class ClipStats:
    """Statistics gathered while writing clips: continuous actions, discrete action counts, rewards, terminations."""

    actions: RunningStats = field(default_factory=RunningStats)
    action_counts: list[int] = field(default_factory=list)
    rewards: RunningStats = field(default_factory=RunningStats)
    terminations: int = 0
    frames: int = 0

    def update(self, actions: np.ndarray | None, rewards: np.ndarray | None, terminations: np.ndarray | None,
               num_frames: int) -> None:
        self.frames += num_frames
        if actions is not None:
            if actions.dtype == np.int64:
                counts = np.bincount(actions, minlength=len(self.action_counts))
                if len(counts) > len(self.action_counts):
                    self.action_counts += [0] * (len(counts) - len(self.action_counts))
                self.action_counts = (np.asarray(self.action_counts) + counts).tolist()
            else:
                self.actions.update(actions)
        if rewards is not None:
            self.rewards.update(rewards)
        if terminations is not None:
            self.terminations += int(terminations.sum())

    def merge(self, other: ClipStats) -> ClipStats:
        n = max(len(self.action_counts), len(other.action_counts))
        counts = np.zeros(n, dtype=np.int64)
        counts[: len(self.action_counts)] += np.asarray(self.action_counts, dtype=np.int64)
        counts[: len(other.action_counts)] += np.asarray(other.action_counts, dtype=np.int64)
        return ClipStats(self.actions.merge(other.actions), counts.tolist(), self.rewards.merge(other.rewards),
                         self.terminations + other.terminations, self.frames + other.frames)

    def to_dict(self) -> dict[str, Any]:
        return {"actions": vars(self.actions), "action_counts": self.action_counts, "rewards": vars(self.rewards),
                "terminations": self.terminations, "frames": self.frames}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipStats:
        return cls(RunningStats(**d["actions"]), list(d["action_counts"]), RunningStats(**d["rewards"]),
                   int(d["terminations"]), int(d["frames"]))

    def summary(self) -> dict[str, Any]:
        """The ``stats`` block of ``dataset.json``."""
        out: dict[str, Any] = {"frames": self.frames, "terminations": self.terminations,
                               "rewards": self.rewards.summary()}
        if self.action_counts:
            total = max(sum(self.action_counts), 1)
            out["actions"] = {"counts": self.action_counts, "freq": [c / total for c in self.action_counts]}
        elif self.actions.count:
            out["actions"] = self.actions.summary()
        return out
