"""Shared fixtures: tiny datasets written with the real shard writer into ``tmp_path``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import wm_video.registry  # noqa: F401  (registers every config kind, as the CLI does)

os.environ.setdefault("MUJOCO_GL", "egl")


def make_clip(episode: int, start: int, t: int = 4, size: int = 8, kind: str = "discrete", rng=None):
    from wm_video.data.schema import Clip, ClipMeta

    rng = rng or np.random.default_rng(episode * 1000 + start)
    frames = rng.integers(0, 256, size=(t, size, size, 3), dtype=np.uint8)
    actions = None
    if kind == "discrete":
        actions = rng.integers(0, 6, size=(t,)).astype(np.int64)
    elif kind == "continuous":
        actions = rng.uniform(-1, 1, size=(t, 3)).astype(np.float32)
    rewards = terms = None
    if kind != "none":
        rewards = rng.normal(size=(t,)).astype(np.float32)
        terms = np.zeros(t, dtype=bool)
        terms[-1] = start > 0
    meta = ClipMeta(episode_id=f"ep{episode:04d}", clip_start=start, num_frames=t, fps=15.0, source="test", fields=[])
    return Clip(frames, meta, actions, rewards, terms)


def action_space(kind: str):
    from wm_video.data.schema import ActionSpace

    return {"discrete": ActionSpace("discrete", n=6), "continuous": ActionSpace("continuous", dim=3, low=[-1] * 3,
            high=[1] * 3), "none": ActionSpace("none")}[kind]


def write_dataset(root: Path, shards: int = 4, clips_per_shard: int = 6, storage: str = "raw", kind: str = "discrete",
                  t: int = 4, size: int = 8) -> list:
    """Write a dataset; returns every clip written, in write order."""
    from wm_video.data.writer import ShardWriter, finalize_dataset

    root.mkdir(parents=True, exist_ok=True)
    clips, paths = [], []
    for s in range(shards):
        path = root / f"shard-{s:06d}.tar"
        with ShardWriter(path, action_space(kind), storage) as w:
            for i in range(clips_per_shard):
                clip = make_clip(s, i * t, t, size, kind)
                w.write(clip)
                clips.append(clip)
            w.close()
        paths.append(path)
    finalize_dataset(root, paths, resolution=[size, size], fps=15.0, clip_len=t, storage=storage,
                     action_space=action_space(kind), source={"kind": "test"})
    return clips


def write_token_dataset(root: Path, shards: int = 3, clips_per_shard: int = 8, t: int = 6, grid: int = 4,
                        vocab: int = 16, seed: int = 0, tasks: list[str] | None = None) -> None:
    """Token shards with action-driven dynamics: one object token walks the grid by its discrete action (0 stay,
    1 right, 2 down, 3 left, 4 up, 5 stay), on a background of token 0; stepping into a wall gives reward 1, and
    clips of odd episodes end with a termination. ``tasks``: task texts given to the clips in turn (meta.json
    extra.task)."""
    from wm_video.data.schema import Clip, ClipMeta
    from wm_video.data.writer import ShardWriter, finalize_dataset

    moves = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0), (0, 0)]
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = root / f"shard-{s:06d}.tar"
        with ShardWriter(path, action_space("discrete"), "tokens") as w:
            for i in range(clips_per_shard):
                frames = np.zeros((t, grid, grid), dtype=np.uint8)
                actions = rng.integers(0, 6, size=t).astype(np.int64)
                rewards, terms = np.zeros(t, np.float32), np.zeros(t, bool)
                y, x, obj = *rng.integers(0, grid, size=2), int(rng.integers(1, vocab))
                for k in range(t):
                    frames[k, y, x] = obj
                    dy, dx = moves[actions[k]]
                    ny, nx = min(max(y + dy, 0), grid - 1), min(max(x + dx, 0), grid - 1)
                    rewards[k] = float((ny, nx) == (y, x) and (dy, dx) != (0, 0))
                    y, x = ny, nx
                terms[-1] = i % 2 == 1
                meta = ClipMeta(episode_id=f"ep{s:03d}{i:03d}", clip_start=0, num_frames=t, fps=15.0, source="test",
                                fields=[], extra={"task": tasks[i % len(tasks)]} if tasks else {})
                w.write(Clip(frames, meta, actions, rewards, terms))
            w.close()
        paths.append(path)
    tokens = {"vocab_size": vocab, "dtype": "uint8", "tokenizer": "synthetic", "frame_resolution": [grid * 8] * 2,
              "tokens_per_frame": grid * grid}
    finalize_dataset(root, paths, resolution=[grid, grid], fps=15.0, clip_len=t, storage="tokens",
                     action_space=action_space("discrete"), source={"kind": "test"}, tokens=tokens)


def fit_losses(model, batch: dict, steps: int, log_key: str = "loss", lr: float = 3e-3) -> list[float]:
    """Adam steps of ``model.compute_loss`` on one fixed batch; returns ``logs[log_key]`` at every step."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, logs = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(logs[log_key]))
    return losses


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a test module. The 2 test cores are shared with other work: torch's two OpenMP
    threads then spin against other processes and a step of the tiny test models takes many times longer. One
    thread is as deterministic and far faster there."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    clips = write_dataset(root)
    return root, clips
