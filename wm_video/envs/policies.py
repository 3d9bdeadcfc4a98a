"""Behaviour policies for data collection: ``random``, ``scripted`` (the env's expert) and ``noisy`` (the
expert with noise, for coverage of states the expert alone never visits)."""

from __future__ import annotations

import numpy as np

from wm_video.envs.base import Action, SimEnv, StepResult
from wm_video.envs.heuristics import EXPERTS

POLICIES = ("random", "scripted", "noisy")
# Continuous noisy policy: chance per step of replacing the action by a uniformly random one, so the data
# also holds abrupt, off-distribution moves and not only Gaussian jitter around the expert.
CONTINUOUS_RANDOM_PROB = 0.05


class Policy:
    """Maps each :class:`StepResult` to an action: int (discrete) or float32 ``(dim,)`` (continuous)."""

    def __init__(self, env: SimEnv, seed: int) -> None:
        self.env = env
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Called at the start of each episode (the RNG carries on: episodes differ)."""

    def act(self, result: StepResult) -> Action:
        raise NotImplementedError


class RandomPolicy(Policy):
    """Uniformly random actions from the env's action space, each kept for ``hold`` steps (1: a new one every
    step). Holding makes what an action does visible: a torque held for 4 steps swings an arm where one drawn
    afresh every step only jitters it (docs/fidelity.md, E18)."""

    def __init__(self, env: SimEnv, seed: int, hold: int = 1) -> None:
        super().__init__(env, seed)
        if hold < 1:
            raise ValueError(f"hold must be >= 1, got {hold}")
        self.hold, self._left, self._action = hold, 0, None

    def reset(self) -> None:
        self._left = 0

    def act(self, result: StepResult) -> Action:
        if self._left == 0:
            self._action, self._left = self.env.sample_action(self.rng), self.hold
        self._left -= 1
        return self._action


class ScriptedPolicy(Policy):
    """The env's scripted expert, reading ``result.obs``."""

    def __init__(self, env: SimEnv, seed: int) -> None:
        super().__init__(env, seed)
        if not env.has_scripted_policy:
            raise ValueError(
                f"environment '{env.env_id}' has no scripted policy; scripted experts exist for every "
                f"metaworld/* task and for gymnasium {', '.join(sorted(EXPERTS))} (Atari has none); "
                "use policy 'random' instead")
        self._expert = env.make_expert()

    def reset(self) -> None:
        self._expert = self.env.make_expert()  # drop any state a stateful expert kept

    def act(self, result: StepResult) -> Action:
        a = self._expert(result.obs)
        return int(a) if self.env.action_space.kind == "discrete" else self.env.clip_action(a)


class NoisyPolicy(ScriptedPolicy):
    """The expert with noise of level ``noise``.

    Discrete: a random action with probability ``noise``, else the expert's. Continuous: the expert's action
    plus Gaussian noise of std ``noise`` (in action units), clipped to the bounds; with probability
    :data:`CONTINUOUS_RANDOM_PROB` a uniformly random action instead.
    """

    def __init__(self, env: SimEnv, seed: int, noise: float) -> None:
        super().__init__(env, seed)
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.noise = noise

    def act(self, result: StepResult) -> Action:
        expert = super().act(result)
        space = self.env.action_space
        if space.kind == "discrete":
            return self.env.sample_action(self.rng) if self.rng.random() < self.noise else expert
        if self.rng.random() < CONTINUOUS_RANDOM_PROB:
            return self.env.sample_action(self.rng)
        return self.env.clip_action(expert + self.noise * self.rng.standard_normal(space.dim))


def make_policy(name: str, env: SimEnv, seed: int, noise: float = 0.3, hold: int = 1) -> Policy:
    """Make policy ``name`` (``random`` | ``scripted`` | ``noisy``) for ``env`` with its own RNG seeded by
    ``seed``; ``noise`` is used by ``noisy`` only, ``hold`` by ``random`` only. ValueError for an unknown name or
    a missing expert."""
    if name == "random":
        return RandomPolicy(env, seed, hold)
    if name == "scripted":
        return ScriptedPolicy(env, seed)
    if name == "noisy":
        return NoisyPolicy(env, seed, noise)
    raise ValueError(f"unknown policy '{name}'; choose one of {POLICIES}")
