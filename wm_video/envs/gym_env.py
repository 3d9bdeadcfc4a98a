"""Any gymnasium env that renders RGB frames: classic control, box2d and MuJoCo.

MuJoCo envs render directly at ``size`` x ``size`` with shadows, reflections and multisampling off (see
:mod:`wm_video.envs.mujoco_render`); the others render at their own resolution (600x400 for classic control and
LunarLander) and are resized with PIL. A few classic-control envs draw a small object in the middle of an empty
canvas; for those (``FRAMING``) a square part of the render around the object is cropped before resizing, so the
object covers a useful number of pixels at 64x64. A framed MuJoCo env is rendered larger (``size / keep``) and
cropped to ``size`` without resizing.
"""

from __future__ import annotations

import numpy as np

from wm_video.envs.base import Action, Expert, SimEnv, StepResult, require_sim
from wm_video.envs.convert import resize_frame, space_to_action_space
from wm_video.envs.heuristics import EXPERTS, expert_name
from wm_video.envs.mujoco_render import ensure_gl_backend, free_renderer, make_render_fast, render_rgb
from wm_video.envs.mujoco_variation import SCENE_FIELDS, MujocoVariation
from wm_video.envs.variation import FRAME_FIELDS, Variation

DEFAULT_FPS = 30.0  # used only when an env declares no render_fps

# (fraction of the render's side kept, vertical centre of the kept square as a fraction of the height): a square crop
# before resizing. Pendulum draws a rod of length 1 in a +-2.2 world box on 500x500: uncropped, the rod is 3 px wide
# at 64x64; 0.6 keeps the whole swing (radius 1.1 with the rod's rounded tip) with a margin and makes it 5 px wide
# and 24 px long. InvertedPendulum's camera follows the cart from afar: its pole is 2 px wide and 20 px long at
# 64x64, so a tilt of 0.2 rad (where the episode ends) moves its tip by 4 px; rendered at 2x and cropped to the pole
# (centred above the cart), it is twice that. The camera stays put, so the crop shows only about half the rail: a
# cart driven far from the centre leaves the frame (the balancer and short episodes keep it near the middle).
# Reacher's default camera shows its arena as a small tilted square in the middle of the render, with the two-link
# arm about 1 px wide at 64x64; the crop keeps the arm's whole reach and makes it 2-3 px wide.
FRAMING = {"Pendulum-v1": (0.6, 0.5), "InvertedPendulum-v5": (0.5, 0.36), "Reacher-v5": (0.45, 0.47)}


def crop_square(frame: np.ndarray, keep: float, centre_y: float) -> np.ndarray:
    """The square of side ``keep`` x the frame's side, centred horizontally and at ``centre_y`` of the height."""
    h, w = frame.shape[:2]
    side = round(min(h, w) * keep)
    top = min(max(round(h * centre_y - side / 2), 0), h - side)
    left = (w - side) // 2
    return frame[top:top + side, left:left + side]


def is_mujoco_spec(spec: object) -> bool:
    """True for gymnasium's own MuJoCo envs (their entry points live in ``gymnasium.envs.mujoco``)."""
    entry = getattr(spec, "entry_point", None)
    return isinstance(entry, str) and entry.startswith("gymnasium.envs.mujoco")


class GymEnv(SimEnv):
    """A gymnasium env made with ``render_mode="rgb_array"``.

    Args:
        env_id: a registered gymnasium id, e.g. ``CartPole-v1``, ``LunarLander-v3``, ``Pusher-v5``.
        size: frame height and width in pixels (default 64).
        max_episode_steps: replaces the env's own time limit (default: keep it).
        fast_render: MuJoCo only; turn off shadows, reflections and multisampling (default True).
    """

    family = "gymnasium"

    def __init__(self, env_id: str, size: int = 64, max_episode_steps: int | None = None,
                 fast_render: bool = True) -> None:
        super().__init__(env_id, size, max_episode_steps)
        ensure_gl_backend()  # before anything imports mujoco; harmless for non-MuJoCo envs
        gym = require_sim("gymnasium")
        spec = gym.spec(env_id)
        self._mujoco = is_mujoco_spec(spec)
        kwargs: dict = {"render_mode": "rgb_array", "disable_env_checker": True}
        self._framing = FRAMING.get(env_id)
        if self._mujoco:
            require_sim("mujoco")
            render_size = round(size / self._framing[0]) if self._framing else size
            kwargs.update(width=render_size, height=render_size)
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        self._env = gym.make(env_id, **kwargs)
        modes = self._env.metadata.get("render_modes", [])
        if "rgb_array" not in modes:
            self._env.close()
            raise ValueError(f"gymnasium env '{env_id}' does not render rgb_array frames (modes: {modes})")
        if self._mujoco:
            # Make the viewer now, before any reset: its free camera aims at the bodies' positions at creation,
            # so a viewer made after the first reset would frame every later episode by that first seed.
            if fast_render:
                make_render_fast(self._env.unwrapped)
            else:
                self._env.unwrapped.mujoco_renderer.render("rgb_array")
        self._scene = MujocoVariation(self._env.unwrapped) if self._mujoco else None
        self.variation_fields = FRAME_FIELDS + SCENE_FIELDS if self._mujoco else FRAME_FIELDS
        self.action_space = space_to_action_space(self._env.action_space)
        self.fps = float(self._env.metadata.get("render_fps") or DEFAULT_FPS)
        if self.max_episode_steps is None:
            self.max_episode_steps = spec.max_episode_steps

    def _frame(self) -> np.ndarray:
        frame = render_rgb(self._env.unwrapped) if self._mujoco else self._env.render()
        if self._framing is not None:
            frame = crop_square(frame, *self._framing)
        if frame.shape[:2] != (self.size, self.size):
            frame = resize_frame(frame, self.size)
        return np.ascontiguousarray(frame)

    def _apply_variation(self, variation: Variation) -> None:
        if self._scene is not None:
            self._scene.apply(variation)

    def _reset(self, seed: int | None) -> StepResult:
        obs, info = self._env.reset(seed=seed)
        return StepResult(self._frame(), obs, info=dict(info))

    def _step(self, action: Action) -> StepResult:
        obs, reward, terminated, truncated, info = self._env.step(action)
        return StepResult(self._frame(), obs, float(reward), bool(terminated), bool(truncated), dict(info))

    @property
    def has_scripted_policy(self) -> bool:
        return expert_name(self.env_id) in EXPERTS

    def make_expert(self) -> Expert:
        build = EXPERTS.get(expert_name(self.env_id))
        if build is None:
            return super().make_expert()
        return build(self._env.unwrapped)

    def close(self) -> None:
        if self._mujoco:
            free_renderer(self._env.unwrapped)
        self._env.close()
