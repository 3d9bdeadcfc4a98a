"""Real contexts to start imagined episodes from (:class:`~wm_video.planning.imagination.StartStates`): windows of
dataset clips, or frames recorded from the simulator under the random policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_video.data.frame_files import frame_dataset_info
from wm_video.data.reader import iter_clips, shard_paths
from wm_video.planning.closed_loop import RandomAgent, env_action_of, model_frame
from wm_video.planning.imagination import StartStates

SEED_OFFSET = 100_000  # start-state episodes use seeds far from the evaluation episodes' (seed + i)


def _stack(windows: list[np.ndarray], acts: list[list[torch.Tensor]]) -> StartStates:
    frames = torch.from_numpy(np.stack(windows)).permute(0, 1, 4, 2, 3).contiguous()  # (N, t0, 3, h, w)
    actions = torch.stack([torch.stack(a) for a in acts]) if acts and acts[0] else None
    return StartStates(frames, actions)


def start_states_from_env(sim: Any, count: int, context_frames: int, resolution: int, seed: int = 0,
                          stride: int = 4) -> StartStates:
    """Play the random policy in ``sim`` and keep the last ``context_frames`` frames (and the actions between
    them) every ``stride`` steps, until ``count`` windows are kept."""
    if count < 1 or context_frames < 1 or stride < 1:
        raise ValueError("start states: count, context_frames and stride must be >= 1")
    agent = RandomAgent(sim.action_space, seed)
    windows, acts = [], []
    for ep in range(100 * count):
        res = sim.reset(seed=seed + SEED_OFFSET + ep)
        frames, actions, t = [model_frame(res.frame, resolution)], [], 0
        while len(windows) < count:
            if len(frames) >= context_frames and t % stride == 0:
                windows.append(np.stack(frames[-context_frames:]))
                acts.append(actions[len(actions) - context_frames + 1:] if context_frames > 1 else [])
            env_action, taken = env_action_of(agent.plan(None).action, sim)
            res = sim.step(env_action)
            frames.append(model_frame(res.frame, resolution))
            actions.append(taken)
            t += 1
            if res.terminated or res.truncated:
                break
        if len(windows) >= count:
            return _stack(windows, acts)
    raise ValueError(f"start states: {sim.env_id}'s episodes never reached {context_frames} frames")


def start_states_from_data(path: str | Path, count: int, context_frames: int, resolution: int) -> StartStates:
    """Windows of ``context_frames`` frames (non-overlapping, in stored order) from a frame dataset's clips."""
    info = frame_dataset_info(path, resolution, "start states")
    windows, acts = [], []
    for url in shard_paths(path, info):
        for clip in iter_clips(url, info.action_space):
            for o in range(0, len(clip.frames) - context_frames + 1, context_frames):
                windows.append(clip.frames[o:o + context_frames])
                a = [] if clip.actions is None else [torch.as_tensor(x) for x in clip.actions[o:o + context_frames - 1]]
                acts.append(a)
                if len(windows) >= count:
                    return _stack(windows, acts)
    if not windows:
        raise ValueError(f"start states {path}: no clip has {context_frames} frames")
    return _stack(windows, acts)
