"""The one small interface every simulator hides behind: :class:`SimEnv` returning :class:`StepResult`.

Adapters (Atari, gymnasium, Meta-World) only implement ``_reset``/``_step``; this base class owns what must be
identical across families: the step counter, the ``max_episode_steps`` cap, action checking and sampling.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from wm_video.data.schema import ActionSpace
from wm_video.envs.variation import FRAME_FIELDS, Variation, transform_frame
from wm_video.utils.extras import MissingExtraError

SIM_EXTRA_HINT = "install the 'sim' extra: pip install -e \".[sim]\""
Action = int | np.ndarray
Expert = Callable[[Any], Action]  # the env's low-dim observation -> an action


class UnknownEnvError(ValueError):
    """An environment id that no installed simulator provides."""


def require_sim(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming it and the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"module '{module}' is missing ({e}); {SIM_EXTRA_HINT}") from e


@dataclass
class StepResult:
    """What the env shows after a reset or a step.

    ``frame`` is uint8 ``(size, size, 3)`` RGB, upright. ``obs`` is the env's own low-dim observation (what
    scripted policies read). ``reward`` is the reward of the step that led here (0 after a reset).
    """

    frame: np.ndarray
    obs: np.ndarray | dict
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict = field(default_factory=dict)


class SimEnv(abc.ABC):
    """A simulator rendering square RGB frames.

    Attributes:
        env_id: the id given to :func:`wm_video.envs.make_env`.
        family: ``atari`` | ``gymnasium`` | ``metaworld``.
        size: frame height and width in pixels.
        action_space: what :meth:`step` accepts (int for discrete, float32 ``(dim,)`` for continuous).
        fps: the env's native frame rate in frames per second (one frame per :meth:`step`).
        max_episode_steps: steps after which an episode is truncated (None: no cap beyond the env's own).
        variation_fields: the :class:`Variation` fields this env can apply (MuJoCo envs: all; others: frames).
    """

    env_id: str
    family: str
    size: int
    action_space: ActionSpace
    fps: float
    max_episode_steps: int | None
    variation_fields: tuple[str, ...] = FRAME_FIELDS

    def __init__(self, env_id: str, size: int, max_episode_steps: int | None) -> None:
        if size < 8:
            raise ValueError(f"frame size must be >= 8 pixels, got {size}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.env_id = env_id
        self.size = size
        self.max_episode_steps = max_episode_steps
        self._t = 0
        self._variation, self._variation_pending = Variation(), False

    # --- what adapters implement -------------------------------------------------------------------------------
    @abc.abstractmethod
    def _reset(self, seed: int | None) -> StepResult: ...

    @abc.abstractmethod
    def _step(self, action: Action) -> StepResult: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Free the simulator (GL contexts, emulator); the env is unusable afterwards."""

    def make_expert(self) -> Expert:
        """A fresh scripted expert mapping ``StepResult.obs`` to an action; ValueError where there is none."""
        raise ValueError(f"environment '{self.env_id}' has no scripted policy")

    @property
    def has_scripted_policy(self) -> bool:
        return False

    def _apply_variation(self, variation: Variation) -> None:
        """Set the simulator's scene and dynamics to ``variation`` (only fields in :attr:`variation_fields` are
        changed); called before a reset. Frame fields are applied by this class, so an env that supports only
        those changes nothing here."""
        return None

    # --- shared behaviour --------------------------------------------------------------------------------------
    @property
    def variation(self) -> Variation:
        """The variation set last (the default until :meth:`set_variation` is called)."""
        return self._variation

    def set_variation(self, variation: Variation) -> None:
        """Show ``variation`` from the next reset on: its scene and dynamics are set at that reset, its frame
        transform applies to every frame after it. ``variation`` must hold numbers (``variation.draw(rng)`` turns
        ranges into numbers). ValueError naming the fields this env cannot apply."""
        if variation.is_random:
            raise ValueError(f"{self.env_id}: set_variation takes numbers; draw the ranges first "
                             f"(variation.draw(rng)), got {variation.to_dict()}")
        unsupported = [name for name in variation.changed() if name not in self.variation_fields]
        if unsupported:
            raise ValueError(
                f"environment '{self.env_id}' cannot apply variation field(s) {', '.join(unsupported)}: scene and "
                f"dynamics changes need a MuJoCo env (a gymnasium MuJoCo id or metaworld/*); "
                f"{' and '.join(FRAME_FIELDS)} work with every env")
        self._variation, self._variation_pending = variation, True

    def reset(self, seed: int | None = None) -> StepResult:
        """Start an episode; the same ``seed`` gives the same initial state (and frames, for the same actions).
        ``None`` continues the env's random stream: a sequence of episodes after one seeded reset is reproducible
        too, and Atari avoids the ROM reload (about 90 ms) that every seeded reset costs."""
        self._t = 0
        if self._variation_pending:
            try:
                self._apply_variation(self._variation)
            except ValueError as e:
                raise ValueError(f"environment '{self.env_id}': {e}") from e
            self._variation_pending = False
        res = self._reset(None if seed is None else int(seed))
        res.frame = transform_frame(res.frame, self._variation)
        res.reward, res.terminated, res.truncated = 0.0, False, False
        return res

    def step(self, action: Action) -> StepResult:
        """Apply ``action`` (checked against :attr:`action_space`) and return the next frame and outcome."""
        res = self._step(self.check_action(action))
        res.frame = transform_frame(res.frame, self._variation)
        self._t += 1
        # One cap for every family, so `max_episode_steps` means the same thing whatever the simulator does.
        if self.max_episode_steps is not None and self._t >= self.max_episode_steps and not res.terminated:
            res.truncated = True
        return res

    def check_action(self, action: Action) -> Action:
        """Return ``action`` as the env takes it (int, or float32 ``(dim,)``); ValueError if it does not fit."""
        space = self.action_space
        if space.kind == "discrete":
            a = int(action)
            if not 0 <= a < space.n:
                raise ValueError(f"{self.env_id}: discrete action {a} outside [0, {space.n})")
            return a
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != (space.dim,) or not np.isfinite(a).all():
            raise ValueError(f"{self.env_id}: action must be {space.dim} finite floats, got {action!r}")
        return a

    def sample_action(self, rng: np.random.Generator) -> Action:
        """A uniformly random action: int for discrete, float32 ``(dim,)`` within bounds for continuous
        (standard normal where the space has no bounds)."""
        space = self.action_space
        if space.kind == "discrete":
            return int(rng.integers(space.n))
        if space.low is None or space.high is None:
            return rng.standard_normal(space.dim).astype(np.float32)
        return rng.uniform(space.low, space.high).astype(np.float32)

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        """Clip a continuous action to the bounds (if any) as float32."""
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if self.action_space.low is not None and self.action_space.high is not None:
            a = np.clip(a, self.action_space.low, self.action_space.high).astype(np.float32)
        return a

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env_id!r}, size={self.size}, fps={self.fps:g})"
