"""One player inside one world model: the imagined episode, who controls it, its settings and its recording.

:class:`PlaySession` is what the page's server drives, one call per frame, and what tests drive without a browser.
It runs the world model as a :class:`~wm_video.envs.WorldModelGymEnv` (start states, heads, horizon), takes actions
from the held keys (:mod:`.controls`) or from a policy, and records every play-through (:mod:`.recorder`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_video.data.schema import ActionSpace
from wm_video.envs import WorldModelGymEnv
from wm_video.planning.closed_loop import RandomAgent
from wm_video.planning.config import PlanConfig
from wm_video.planning.imagination import ActorAgent, ActorCritic
from wm_video.planning.runner import build_planner
from wm_video.planning.scoring import model_action_space
from wm_video.play.config import PlayConfig
from wm_video.play.controls import Controls, controls_for
from wm_video.play.recorder import Recorder, Recording
from wm_video.world_model import RenderSettings

HUMAN = "human"


@dataclass
class Frame:
    """One shown frame and what the page prints beside it."""

    image: np.ndarray  # (h, w, 3) uint8
    step: int
    action: str | None  # what was done to get here (None after a reset)
    reward: float | None  # None where the reward head was not trained
    episode_return: float | None
    termination: float | None  # the termination head's probability, where it was trained
    ended: str | None  # "terminated" or "horizon" when this frame ended the play-through
    model_ms: float  # time the world model took for this frame
    recording: Recording | None = None  # the play-through written when this frame (or the reset to it) ended it


class PlaySession:
    """See the module docstring.

    Args:
        model: a world-model folder.
        cfg: the play settings.
        data: the dataset whose clips are the start states (default: the one the model records).
        context: start from a video or images instead.
        device: ``cpu`` or ``cuda``.
    """

    def __init__(self, model: str | Path, cfg: PlayConfig, *, data: str | None = None, context: str | None = None,
                 device: str = "cpu") -> None:
        cfg.validate()
        self.cfg = cfg
        self.env = WorldModelGymEnv(model, data=data, context=context, split=cfg.split, horizon=cfg.horizon,
                                    maskgit_steps=cfg.maskgit_steps, temperature=cfg.temperature, device=device,
                                    domain=cfg.domain, task=cfg.task, text_encoder=cfg.text_encoder,
                                    text_guidance_scale=cfg.text_guidance_scale)
        self.model = self.env.world_model
        self.set_sampling(decoder_steps=cfg.decoder_steps)  # a model without a diffusion decoder has no steps
        self.controls: Controls = controls_for(self.model)
        heads, stats = self.model.head_quality, self.model.info.stats
        # a head is shown only where it was trained: its gate passed, or no gate recorded and the data had it
        # (an untrained termination head does not end play-throughs either)
        self.shows = {"reward": heads.get("reward") is not False and bool((stats.get("rewards") or {}).get("count")),
                      "termination": heads.get("termination") is not False and bool(stats.get("terminations"))}
        self.policies = self._policies(device)
        self.fps = float(cfg.fps or self.model.info.fps or 15.0)
        space = ActionSpace(**self.model.info.action_space) if self.model.info.action_space else ActionSpace("none")
        self.recorder = Recorder(Path(cfg.record_dir), space, self.model.resolution, self.fps, cfg.clip_len,
                                 {"model": str(model)}) if cfg.record else None
        self.controller = HUMAN
        self.seed = cfg.seed
        self.start_index: int | None = None
        self._history: list[np.ndarray] = []
        self._actions: list[torch.Tensor] = []
        self._return = 0.0
        self._step = 0
        self._last: Frame | None = None
        self.model_ms: deque[float] = deque(maxlen=10_000)  # the world model's time per frame, for benchmarks

    # ---- what the page lists ------------------------------------------------------------------------------------

    @property
    def starts(self) -> list[str]:
        """A name per start state (the page's reset menu)."""
        return self.env.start_names

    @property
    def task(self) -> str | None:
        """The task text every play-through is conditioned on (None: a model without text)."""
        return self.env.task

    @property
    def has_decoder(self) -> bool:
        return self.model.decoder is not None

    def describe(self) -> dict[str, Any]:
        return {"controls": self.controls.describe(), "starts": self.starts, "policies": [HUMAN, *self.policies],
                "shows": self.shows, "fps": self.fps, "has_decoder": self.has_decoder,
                "temperature": self.temperature, "decoder_steps": self.cfg.decoder_steps,
                "max_decoder_steps": getattr(getattr(self.model.decoder, "config", None), "max_inference_steps", None),
                "resolution": self.model.resolution, "task": self.task,
                "text_guidance_scale": self.cfg.text_guidance_scale, "recording": self.recorder is not None,
                "record_dir": str(self.cfg.record_dir) if self.recorder is not None else None}

    # ---- settings -----------------------------------------------------------------------------------------------

    @property
    def temperature(self) -> float:
        return self.env.temperature

    def set_sampling(self, temperature: float | None = None, decoder_steps: int | None = None) -> None:
        """Token sampling temperature (0: argmax) and diffusion decoder steps for the next frames."""
        if temperature is not None:
            if not 0 <= temperature <= 5:
                raise ValueError(f"temperature must be in [0, 5], got {temperature}")
            self.env.set_sampling(temperature=temperature)
        if decoder_steps is not None and self.has_decoder:
            if decoder_steps < 1:
                raise ValueError(f"decoder steps must be >= 1, got {decoder_steps}")
            self.env.set_sampling(render=RenderSettings(num_inference_steps=int(decoder_steps)))
            self.cfg.decoder_steps = int(decoder_steps)

    def set_controller(self, who: str) -> None:
        if who != HUMAN and who not in self.policies:
            raise ValueError(f"controller {who!r}: choose one of {[HUMAN, *self.policies]}")
        self.controller = who

    # ---- the episode --------------------------------------------------------------------------------------------

    def reset(self, start: int | None = None) -> Frame:
        """Finish the current play-through (its recording, if one was written, comes with the returned frame) and
        start a new one, from start state ``start`` (None: a random one)."""
        recording = self.finish()
        options = None if start is None else {"context": int(start)}
        obs, _ = self.env.reset(seed=self.seed, options=options)
        self.seed += 1
        self.start_index = start
        name = self.starts[start] if start is not None else "random start"
        for p in self.policies.values():
            p.reset()
        self._history, self._actions = [obs], []
        self._return, self._step = 0.0, 0
        if self.recorder is not None:
            self.recorder.start(obs, name)
        self._last = Frame(obs, 0, None, 0.0 if self.shows["reward"] else None,
                           0.0 if self.shows["reward"] else None, None, None, 0.0, recording)
        return self._last

    def step(self, held: list[str] | None = None, sliders: list[float] | None = None) -> Frame:
        """One frame: the action from the held keys (human control) or from the policy in control."""
        if self._last is None:
            self.reset(self.start_index)
        action = self._choose(held or [], sliders)
        t0 = time.perf_counter()
        obs, reward, terminated, truncated, info = self.env.step(action)
        ms = (time.perf_counter() - t0) * 1e3
        self.model_ms.append(ms)
        terminated = terminated and self.shows["termination"]
        if self.recorder is not None:
            self.recorder.add(action, reward, terminated, obs)
        self._step += 1
        self._return += reward
        k = self.cfg.policy_context
        self._history = [*self._history, obs][-k:]
        self._actions = [*self._actions, torch.as_tensor(action)][-(k - 1):] if k > 1 else []
        ended = "terminated" if terminated else "horizon" if truncated else None
        name = self.controls.name(int(action)) if self.controls.kind == "discrete" else (
            np.round(np.asarray(action), 3).tolist() if self.controls.kind == "continuous" else "null")
        frame = Frame(obs, self._step, str(name), reward if self.shows["reward"] else None,
                      self._return if self.shows["reward"] else None,
                      info["termination_prob"] if self.shows["termination"] else None, ended, ms)
        self._last = frame
        if ended:
            frame.recording = self.finish()
        return frame

    def finish(self) -> Recording | None:
        """End the current play-through and write it (when a step was taken); the next :meth:`step` starts a new
        one from the same start choice."""
        self._last = None
        return self.recorder.finish() if self.recorder is not None else None

    def _choose(self, held: list[str], sliders: list[float] | None) -> Any:
        if self.controller == HUMAN:
            return self.controls.action(held, sliders)
        ctx = torch.from_numpy(np.stack(self._history)).permute(0, 3, 1, 2)  # (t, 3, h, w) uint8
        ctx_acts = torch.stack(self._actions) if self._actions else None
        a = self.policies[self.controller].plan(ctx, ctx_acts).action
        return int(a) if self.controls.kind == "discrete" else a.detach().cpu().numpy().astype(np.float32)

    def _policies(self, device: str) -> dict[str, Any]:
        """``random`` always (where the actions have a uniform distribution), and the configured policy."""
        space = model_action_space(self.model)
        out: dict[str, Any] = {}
        if space.kind == "discrete" or (space.kind == "continuous" and space.low is not None):
            out["random"] = RandomAgent(space, self.cfg.seed)
        choice = self.cfg.policy
        if not choice:
            return out
        if choice in ("cem", "mcts"):
            plan = PlanConfig(planner=choice, horizon=self.cfg.plan_horizon, seed=self.cfg.seed,
                              text_guidance_scale=self.cfg.text_guidance_scale)
            out[choice] = build_planner(self.model, space, plan, device, self.env.text)[0]
        else:
            actor = ActorCritic.from_pretrained(choice).to(device)
            out["actor"] = ActorAgent(self.model, actor, generator=torch.Generator(device).manual_seed(self.cfg.seed))
        return out
