"""Closed-loop control of a real simulator by a planner, a trained actor or the random baseline, through one code
path.

Every real step: the last ``context_frames`` real frames (at the model's resolution) and the actions between them
go to ``agent.plan``, which replans from scratch (CEM keeps only its warm start) and returns the action taken.
Recorded episodes become an mp4 with three panels per step: the real frame that followed, the frame the chosen
plan imagined for that step, and the frame it imagined at the end of its horizon (rendered by a separate
``WorldModelEnv`` with ``render=True``; rendering is left out of the decision timing).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from wm_video.data.schema import ActionSpace
from wm_video.envs.convert import resize_frame
from wm_video.planning.scoring import Plan, repeat_context
from wm_video.utils import progress
from wm_video.utils.video_io import annotate, side_by_side, to_uint8, upscale, write_mp4
from wm_video.world_model import RenderSettings
from wm_video.world_model_env import WorldModelEnv


class Agent(Protocol):
    """What the closed loop drives: planners (:class:`~wm_video.planning.cem.CEMPlanner`,
    :class:`~wm_video.planning.mcts.MCTSPlanner`), :class:`~wm_video.planning.imagination.ActorAgent` and
    :class:`RandomAgent`. ``imagined_frames`` counts the token frames it has imagined so far."""

    imagined_frames: int

    def reset(self) -> None: ...

    def plan(self, context: torch.Tensor, context_actions: torch.Tensor | None = None) -> Plan: ...


class RandomAgent:
    """Uniformly random actions (the baseline): discrete ids, or continuous within the bounds.

    Args:
        action_space: the simulator's action space (continuous needs bounds).
        seed: random seed.
    """

    def __init__(self, action_space: ActionSpace, seed: int = 0) -> None:
        if action_space.kind == "continuous" and (action_space.low is None or action_space.high is None):
            raise ValueError("random policy: a continuous action space without bounds has no uniform distribution")
        if action_space.kind not in ("discrete", "continuous"):
            raise ValueError(f"random policy: no actions in a {action_space.kind!r} action space")
        self.space, self.rng = action_space, np.random.default_rng(seed)
        self.imagined_frames = 0

    def reset(self) -> None:
        pass

    def plan(self, context: torch.Tensor, context_actions: torch.Tensor | None = None) -> Plan:
        s = self.space
        if s.kind == "discrete":
            a = torch.tensor(int(self.rng.integers(s.n)))
        else:
            a = torch.from_numpy(self.rng.uniform(s.low, s.high).astype(np.float32))
        return Plan(action=a, actions=a[None])


def check_env_fits(model: Any, space: ActionSpace, env_id: str) -> None:
    """The simulator takes the actions the world model was trained on; ValueError otherwise."""
    c = model.dynamics.config
    if c.action_type != space.kind:
        raise ValueError(f"{env_id}: takes {space.kind} actions, the world model {c.action_type} ones")
    if space.kind == "discrete" and space.n != c.num_actions:
        raise ValueError(f"{env_id}: has {space.n} actions, the world model {c.num_actions}")
    if space.kind == "continuous" and space.dim != c.action_dim:
        raise ValueError(f"{env_id}: actions have {space.dim} dimensions, the world model's {c.action_dim}")


class PlanRenderer:
    """Frames of a plan: resets a rendering ``WorldModelEnv`` (batch 1) with the context and steps the plan.

    Args:
        model: the world model.
        max_steps: most plan steps rendered (None: all).
        maskgit_steps, temperature, num_inference_steps: as for :class:`~wm_video.world_model_env.WorldModelEnv`.
        generator: random source of sampling and decoder noise.
        text, text_guidance_scale: the task text's embedding and its guidance, as for the ``WorldModelEnv``.
    """

    def __init__(self, model: Any, max_steps: int | None = None, maskgit_steps: int = 8, temperature: float = 0.0,
                 num_inference_steps: int | None = None, generator: torch.Generator | None = None,
                 text: torch.Tensor | None = None, text_guidance_scale: float = 1.0) -> None:
        self.model, self.max_steps = model, max_steps
        self.env = WorldModelEnv(model, maskgit_steps, temperature, render=RenderSettings(num_inference_steps),
                                 generator=generator, text=text, text_guidance_scale=text_guidance_scale)

    @torch.no_grad()
    def __call__(self, context: torch.Tensor, context_actions: torch.Tensor | None, actions: torch.Tensor
                 ) -> tuple[np.ndarray, np.ndarray]:
        """-> frames ``(T, h, w, 3)`` uint8 and predicted rewards ``(T,)``."""
        device = self.model.device
        frames, acts = repeat_context(context, context_actions, 1, device)
        self.env.reset(frames, acts)
        out_frames, rewards = [], []
        for a in actions[: self.max_steps]:
            out = self.env.step(a[None].to(device))
            out_frames.append(to_uint8(out.frames[0]))
            rewards.append(float(out.rewards[0]))
        return np.stack(out_frames), np.array(rewards)


def summarize(returns: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation, standard error, min and max of episode returns."""
    x = np.asarray(returns, dtype=np.float64)
    n = len(x)
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    return {"episodes": n, "mean": float(x.mean()) if n else math.nan, "std": std,
            "stderr": std / math.sqrt(n) if n else math.nan, "min": float(x.min()) if n else math.nan,
            "max": float(x.max()) if n else math.nan, "returns": [float(v) for v in x]}


@dataclass
class ClosedLoopResult:
    """Per-episode ``returns`` and ``lengths``; ``decisions`` taken in ``decide_seconds`` (time inside
    ``agent.plan``); ``imagined_frames`` token frames imagined meanwhile; ``wall_seconds`` all included (simulator,
    rendering, video); ``videos`` written; ``reward_terms`` the per-episode sums of the simulator's reward parts
    where its step info reports them as numbers under ``reward_*`` keys (MuJoCo's ``reward_dist`` and
    ``reward_ctrl``), so a return can be read apart (e.g. reaching against saving torque)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    decisions: int = 0
    decide_seconds: float = 0.0
    imagined_frames: int = 0
    wall_seconds: float = 0.0
    videos: list[str] = field(default_factory=list)
    reward_terms: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        s = summarize(self.returns)
        per_s = self.decide_seconds or math.nan
        s.update(lengths=self.lengths, decisions=self.decisions, decisions_per_s=self.decisions / per_s,
                 imagined_frames=self.imagined_frames, imagined_frames_per_s=self.imagined_frames / per_s,
                 decide_seconds=self.decide_seconds, wall_seconds=self.wall_seconds, videos=self.videos)
        if self.reward_terms:
            s["reward_terms"] = {k: summarize(v) for k, v in self.reward_terms.items()}
        return s


def model_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """A simulator frame ``(h, w, 3)`` uint8 at the model's resolution ``(size, size, 3)``."""
    return resize_frame(frame, size) if frame.shape[:2] != (size, size) else frame


def env_action_of(action: torch.Tensor, sim: Any) -> tuple[Any, torch.Tensor]:
    """A plan's action -> what the simulator takes, and the model-side action actually executed."""
    if sim.action_space.kind == "discrete":
        a = int(action)
        return a, torch.tensor(a, dtype=torch.long)
    a = sim.clip_action(action.detach().cpu().numpy())
    return a, torch.from_numpy(a)


def _write_video(panels: dict[str, tuple[list[np.ndarray], list[str]]], path: Path, fps: float, scale: int) -> str:
    videos = [annotate(upscale(np.stack(frames), scale), captions) for frames, captions in panels.values()]
    return str(write_mp4(side_by_side(*videos), path, fps))


def run_closed_loop(sim: Any, agent: Agent, model: Any, episodes: int = 10, context_frames: int = 4, seed: int = 0,
                    max_steps: int | None = None, video_dir: str | Path | None = None, video_name: str = "episode",
                    video_episodes: int = 1, renderer: PlanRenderer | None = None, scale: int = 2,
                    show_progress: bool | None = None) -> ClosedLoopResult:
    """Run ``agent`` in the simulator for ``episodes`` episodes (episode ``i`` resets with seed ``seed + i``, so
    agents compared with the same seed face the same starts).

    Args:
        sim: a :class:`~wm_video.envs.SimEnv`.
        agent: what chooses actions (see :class:`Agent`).
        model: the world model (its resolution; its rendering through ``renderer``).
        episodes: episodes to run.
        context_frames: real frames given to the agent at each step (fewer at the start of an episode).
        seed: seed of the first episode.
        max_steps: cap on steps per episode (None: the simulator's own).
        video_dir: where ``{video_name}_episode{i}.mp4`` go (None: no video).
        video_episodes: the first episodes recorded.
        renderer: renders each decision's plan into the video (None: the real frames only).
        scale: upscaling of the video frames.
        show_progress: progress bar over episodes (None: on terminals).
    """
    if episodes < 1 or context_frames < 1:
        raise ValueError(f"episodes and context_frames must be >= 1, got {episodes} and {context_frames}")
    size = model.resolution
    result = ClosedLoopResult()
    start, imagined_before = time.perf_counter(), agent.imagined_frames
    bar = progress(total=episodes, desc=video_name, unit="episode", enable=show_progress)
    for ep in range(episodes):
        agent.reset()
        res = sim.reset(seed=seed + ep)
        frames, actions = [model_frame(res.frame, size)], []
        ret, steps, terms = 0.0, 0, {}
        record = video_dir is not None and ep < video_episodes
        panels: dict[str, tuple[list[np.ndarray], list[str]]] = {"real": ([], [])}
        while True:
            ctx = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # (t, 3, h, w) uint8
            ctx_acts = torch.stack(actions) if actions else None  # (t - 1[, a]), between the frames
            t0 = time.perf_counter()
            plan = agent.plan(ctx, ctx_acts)
            result.decide_seconds += time.perf_counter() - t0
            result.decisions += 1
            env_action, taken = env_action_of(plan.action, sim)
            imagined = renderer(ctx, ctx_acts, plan.actions) if record and renderer is not None else None
            res = sim.step(env_action)
            ret += float(res.reward)
            steps += 1
            for k, v in res.info.items():
                if k.startswith("reward_") and isinstance(v, (int, float, np.floating)) and not isinstance(v, bool):
                    terms[k] = terms.get(k, 0.0) + float(v)
            frames = [*frames, model_frame(res.frame, size)][-context_frames:]
            actions = [*actions, taken][-(context_frames - 1):] if context_frames > 1 else []
            if record:
                panels["real"][0].append(frames[-1])
                panels["real"][1].append(f"real R={ret:.1f}")
                if imagined is not None:
                    img, rew = imagined
                    for name, i in (("next", 0), ("end", -1)):
                        panels.setdefault(name, ([], []))
                        panels[name][0].append(img[i])
                    panels["next"][1].append(f"plan+1 r={rew[0]:+.1f}")
                    panels["end"][1].append(f"plan+{len(img)} R={rew.sum():.1f}")
            if res.terminated or res.truncated or (max_steps is not None and steps >= max_steps):
                break
        result.returns.append(ret)
        result.lengths.append(steps)
        for k, v in terms.items():
            result.reward_terms.setdefault(k, []).append(v)
        if record:
            path = Path(video_dir) / f"{video_name}_episode{ep:03d}.mp4"
            result.videos.append(_write_video(panels, path, float(getattr(sim, "fps", 15.0)), scale))
        bar.update(1)
        bar.set_postfix(R=f"{ret:.1f}", steps=steps)
    bar.close()
    result.imagined_frames = agent.imagined_frames - imagined_before
    result.wall_seconds = time.perf_counter() - start
    return result
