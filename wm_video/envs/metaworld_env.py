"""Meta-World (v3 tasks, Sawyer arm) through its single-task env classes: ids ``metaworld/<task>``,
e.g. ``metaworld/reach-v3``, ``metaworld/push-v3``, ``metaworld/pick-place-v3``.

Each reset draws a new object and goal position from the env's seeded RNG (``seeded_rand_vec``), so
``reset(seed)`` is reproducible and different seeds give different tasks. The goal is observable (the last 3
of the 39 observation values), which is what the scripted experts in ``metaworld.policies`` read.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

from wm_video.data.schema import ActionSpace
from wm_video.envs.base import Action, Expert, SimEnv, StepResult, require_sim
from wm_video.envs.mujoco_render import ensure_gl_backend, free_renderer, make_render_fast, render_rgb
from wm_video.envs.mujoco_variation import SCENE_FIELDS, MujocoVariation
from wm_video.envs.variation import FRAME_FIELDS, Variation

PREFIX = "metaworld/"
DEFAULT_MAX_EPISODE_STEPS = 200  # the experts solve the tasks tried in 50-150 steps
# corner2's view (fovy 60) moved to where the table fills the frame: at 64x64 the objects stay several pixels
# wide. This is exactly the model's own `corner4` camera, but corner2 exists in every task's scene.
DEFAULT_CAMERA = "corner2"
DEFAULT_CAMERA_POS = (0.75, 0.075, 0.7)


def task_names() -> list[str]:
    """All Meta-World v3 task names (``reach-v3``, ...)."""
    metaworld = _import_metaworld()
    return sorted(metaworld.ALL_V3_ENVIRONMENTS)


def task_text(env_id: str) -> str | None:
    """The task text a Meta-World clip carries (``meta.json`` ``extra.task``, for text conditioning): the task's
    name without its version, dashes as spaces (``metaworld/reach-v3`` -> ``reach``, ``pick-place-v3`` ->
    ``pick place``); None for an id that is not Meta-World's."""
    if not env_id.startswith(PREFIX):
        return None
    return re.sub(r"-v\d+$", "", env_id.removeprefix(PREFIX)).replace("-", " ")


def _import_metaworld() -> Any:
    ensure_gl_backend()
    return require_sim("metaworld")


class MetaWorldEnv(SimEnv):
    """One Meta-World task rendered from a fixed camera.

    Args:
        env_id: ``metaworld/<task>``, a task from :func:`task_names`.
        size: frame height and width in pixels (default 64).
        max_episode_steps: episode cap (default 200; Meta-World's own is 500).
        camera: a camera name of the scene (default ``corner2``).
        camera_pos: move that camera to this world position in metres (default (0.75, 0.075, 0.7); None keeps it).
        fast_render: turn off shadows, reflections and multisampling (default True).
    """

    family = "metaworld"
    variation_fields = FRAME_FIELDS + SCENE_FIELDS

    def __init__(self, env_id: str, size: int = 64, max_episode_steps: int | None = None,
                 camera: str = DEFAULT_CAMERA, camera_pos: tuple[float, float, float] | None = DEFAULT_CAMERA_POS,
                 fast_render: bool = True) -> None:
        super().__init__(env_id, size, max_episode_steps or DEFAULT_MAX_EPISODE_STEPS)
        metaworld = _import_metaworld()
        mujoco = require_sim("mujoco")
        self.task = env_id.removeprefix(PREFIX)
        if self.task not in metaworld.ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown Meta-World task '{self.task}'")
        env = metaworld.ALL_V3_ENVIRONMENTS[self.task](render_mode="rgb_array", camera_name=camera, width=size,
                                                       height=size)
        # What metaworld's goal-observable constructors do, minus their reset from the global numpy RNG:
        env._partially_observable = False  # the goal goes into the observation (the experts need it)
        env.__dict__.pop("sawyer_observation_space", None)  # a cached_property that depends on the line above
        env._freeze_rand_vec = False  # new object/goal positions at every reset ...
        env.seeded_rand_vec = True  # ... drawn from env.np_random, which reset(seed) seeds
        env._set_task_called = True
        # Meta-World raises if stepped past max_path_length; make its truncation coincide with our cap.
        env.max_path_length = self.max_episode_steps
        if camera_pos is not None:
            cam_id = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
            if cam_id < 0:
                raise ValueError(f"Meta-World scene has no camera '{camera}'")
            env.model.cam_pos[cam_id] = np.asarray(camera_pos, dtype=np.float64)
        if fast_render:
            make_render_fast(env)
        else:
            env.mujoco_renderer.render("rgb_array")  # make the viewer now, like make_render_fast does
        self._env = env
        self._scene = MujocoVariation(env)
        self.action_space = ActionSpace("continuous", dim=4, low=[-1.0] * 4, high=[1.0] * 4)
        self.fps = float(env.metadata.get("render_fps") or round(1.0 / env.dt))

    def _frame(self) -> np.ndarray:
        # The Sawyer scene's cameras come out upside down from gymnasium's renderer: flip the rows.
        return np.ascontiguousarray(render_rgb(self._env)[::-1])

    def _apply_variation(self, variation: Variation) -> None:
        self._scene.apply(variation)

    def _reset(self, seed: int | None) -> StepResult:
        if seed is not None:
            self._env.seed(seed)  # Meta-World's reset() ignores its seed argument
        obs, info = self._env.reset()
        return StepResult(self._frame(), obs, info={**info, "success": False})

    def _step(self, action: Action) -> StepResult:
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self._env.step(a)
        info = dict(info)
        info["success"] = bool(info.get("success", False))
        return StepResult(self._frame(), obs, float(reward), bool(terminated), bool(truncated), info)

    @property
    def has_scripted_policy(self) -> bool:
        return True

    def make_expert(self) -> Expert:
        policies = require_sim("metaworld.policies")
        expert = policies.ENV_POLICY_MAP[self.task]()

        def act(obs: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():  # the experts warn on every step that their gains saturate
                warnings.simplefilter("ignore", UserWarning)
                a = expert.get_action(obs)
            return np.clip(np.asarray(a, dtype=np.float32), -1.0, 1.0)

        return act

    def close(self) -> None:
        free_renderer(self._env)
        self._env.close()
