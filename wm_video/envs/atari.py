"""Atari 2600 games through ale-py (ROMs ship inside the wheel): ids ``ALE/<Game>-v5``."""

from __future__ import annotations

import numpy as np

from wm_video.envs.base import Action, SimEnv, StepResult, require_sim
from wm_video.envs.convert import resize_frame, space_to_action_space

ALE_FRAME_RATE = 60.0  # the console's frames per second; the env shows one of every `frameskip`


def register_atari() -> None:
    """Register the ``ALE/`` ids with gymnasium (idempotent)."""
    gym = require_sim("gymnasium")
    ale_py = require_sim("ale_py")
    gym.register_envs(ale_py)


class AtariEnv(SimEnv):
    """An ALE game with RGB frames resized from 210x160 to ``size`` x ``size``.

    The v5 defaults are kept (frameskip 4, sticky actions with probability 0.25, minimal action set); sticky
    actions draw from the env's RNG, which ``reset(seed)`` seeds, so episodes stay reproducible.
    """

    family = "atari"

    def __init__(self, env_id: str, size: int = 64, max_episode_steps: int | None = None,
                 resample: str = "area") -> None:
        super().__init__(env_id, size, max_episode_steps)
        self.resample = resample
        gym = require_sim("gymnasium")
        register_atari()
        kwargs: dict = {"obs_type": "rgb", "disable_env_checker": True}
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        self._env = gym.make(env_id, **kwargs)
        self.action_space = space_to_action_space(self._env.action_space)
        frameskip = self._env.spec.kwargs.get("frameskip", 4)
        # A (low, high) frameskip is stochastic; its mean is the best single rate to report.
        skip = float(np.mean(frameskip)) if isinstance(frameskip, tuple | list) else float(frameskip)
        self.fps = ALE_FRAME_RATE / skip
        if self.max_episode_steps is None:
            self.max_episode_steps = self._env.spec.max_episode_steps

    def _reset(self, seed: int | None) -> StepResult:
        obs, info = self._env.reset(seed=seed)
        return StepResult(resize_frame(obs, self.size, self.resample), obs, info=dict(info))

    def _step(self, action: Action) -> StepResult:
        obs, reward, terminated, truncated, info = self._env.step(action)
        frame = resize_frame(obs, self.size, self.resample)
        return StepResult(frame, obs, float(reward), bool(terminated), bool(truncated), dict(info))

    def close(self) -> None:
        self._env.close()
