"""The world model as a gymnasium environment: ``WorldModelGymEnv`` (one episode) and ``WorldModelVectorEnv`` (a
batch of episodes in ONE batched :class:`~wm_video.world_model_env.WorldModelEnv`, not N copies).

    import gymnasium as gym
    import wm_video.envs  # registers wm_video/WorldModel-v0
    env = gym.make("wm_video/WorldModel-v0", model="runs/wm")            # starts from the held-out clips
    obs, info = env.reset(seed=0)                                        # (h, w, 3) uint8
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    envs = gym.make_vec("wm_video/WorldModel-v0", num_envs=16, model="runs/wm")

Spaces: ``Discrete(n)`` for a discrete world model, a ``Box`` with the dataset's bounds (the index's action space
``low``/``high``, else the recorded action statistics' min/max) for a continuous one, ``Discrete(1)`` (the null
action) for an action-free one; observations are ``Box(0, 255, (h, w, 3), uint8)``. The reward is the reward head's
expected reward; ``terminated`` is the termination head's probability above ``termination_threshold``; ``truncated``
comes after ``horizon`` steps. ``info`` gives the termination probability and ``heads``, whether each head passed
its quality gate (:attr:`~wm_video.world_model.WorldModel.head_quality`: False means its output is the constant
baseline and means nothing; empty when the world model records no gates).

Start states (:class:`~wm_video.envs.start_states.StartStates`), each a window of ``model.context_frames`` frames
(and the actions between them):

- a dataset folder (``data=DIR``; default: the dataset the world model was exported with, ``world_model.json``'s
  ``source.data``), its held-out episodes by default (``split="train"`` or ``"all"`` for the others);
- a video file, a folder of images, or a list of image files (``context=PATH``);
- ``options={"context": ...}`` in ``reset`` picks one for that episode: an index into the start states, a path as
  above, or frames ``(t, h, w, 3)`` uint8.

A context shorter than the model's (one image, a short clip) is padded in front by repeating its first frame (and,
for a clip, its first action), so that every start fills the dynamics model's window alike: the vector env's rows
restart alone only from contexts as long as the history they join.

``reset(seed=s)`` makes the episode deterministic: the start state is drawn by ``self.np_random`` and the token
sampling and decoder noise come from a torch generator seeded with ``s``. The vector env seeds row ``i`` with
``s + i`` (gymnasium's convention) for its start state and shares one torch generator over the batch, so with
``temperature=0`` and ``maskgit_steps=1`` (no random draw at all) row ``i`` equals a single env reset with ``s + i``,
step by step; with sampling, the rows equal single envs in distribution, not draw for draw. The vector env resets
an ended row at the next ``step`` (gymnasium's ``NEXT_STEP`` autoreset: that step ignores the row's action and
returns its new first frame, reward 0, not done) with :meth:`~wm_video.world_model_env.WorldModelEnv.reset_rows`,
the other rows going on.

A world model trained with task text takes one task for every episode: ``task="open drawer"`` (required for such a
model), with ``text_encoder=`` (default: the folder the model records) and ``text_guidance_scale=``
(:mod:`wm_video.task_text`; refused for a model without text).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from wm_video.data.reader import load_dataset_info
from wm_video.envs.start_states import load_starts
from wm_video.task_text import TaskTextSettings, task_embedding
from wm_video.world_model import RenderSettings, WorldModel, read_index
from wm_video.world_model_env import WorldModelEnv

ENV_ID = "wm_video/WorldModel-v0"


def load_world_model(model: WorldModel | str | os.PathLike, device: str = "cpu") -> WorldModel:
    """``model`` itself, the world model in the folder ``model``, or a hub repo id (``owner/name``, from the hub cache
    or downloaded): a clear error when it is none of these."""
    if isinstance(model, WorldModel):
        return model
    p = Path(model)
    if p.is_dir():
        read_index(p)  # FileNotFoundError naming the folder when it holds no world_model.json
    return WorldModel.from_pretrained(model, map_location=device)


def action_space_of(model: WorldModel) -> spaces.Space:
    """The gymnasium action space of one env: ``Discrete(n)``, a ``Box`` with the dataset's bounds, or
    ``Discrete(1)`` (the null action) for an action-free world model."""
    cfg = model.dynamics.config
    if cfg.action_type == "discrete":
        return spaces.Discrete(cfg.num_actions)
    if cfg.action_type == "none":
        return spaces.Discrete(1)
    space, stats = model.info.action_space, (model.info.stats.get("actions") or {})
    low, high = space.get("low", stats.get("min")), space.get("high", stats.get("max"))
    dim = cfg.action_dim
    low = np.full(dim, -np.inf, np.float32) if low is None else np.asarray(low, np.float32)
    high = np.full(dim, np.inf, np.float32) if high is None else np.asarray(high, np.float32)
    return spaces.Box(low, high, (dim,), np.float32)


class _Batch:
    """What the single and the vector env share: the world model, its batched env, the start states, and the
    conversions between gymnasium's arrays and the env's tensors."""

    def __init__(self, model: WorldModel | str | os.PathLike, size: int, *, data: str | os.PathLike | None,
                 context: Any, split: str, horizon: int, maskgit_steps: int, temperature: float,
                 top_k: int | None, render: RenderSettings | bool, use_cache: bool, termination_threshold: float,
                 device: str, domain: str | None, text: TaskTextSettings) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.model = load_world_model(model, device).for_domain(domain).eval()
        folder = None if isinstance(model, WorldModel) else str(model)
        self.task = text.task if self.model.dynamics.config.text_dim else None
        embedding = task_embedding(self.model, text, "world-model env", folder)
        self.horizon, self.threshold, self.split = horizon, termination_threshold, split
        self.length = self.model.context_frames
        res = self.model.resolution
        self.generator = torch.Generator(self.model.device)
        settings = render if isinstance(render, RenderSettings) else True  # observations need frames
        self.env = WorldModelEnv(self.model, maskgit_steps, temperature, top_k=top_k, render=settings,
                                 use_cache=use_cache, generator=self.generator, text=embedding,
                                 text_guidance_scale=text.text_guidance_scale)
        spec = context if context is not None else (data or self.model.info.source.get("data"))
        if spec is None:
            raise ValueError("start states: give data=DATASET_DIR or context=VIDEO|IMAGES (the world model records "
                             "no training dataset in its world_model.json)")
        if isinstance(spec, (str, os.PathLike)) and (Path(spec) / "dataset.json").is_file():
            self.model.check_data_actions(load_dataset_info(spec).action_space, f"{spec}/dataset.json")
        self.starts = load_starts(spec, res, self.length, split)
        self.single_action_space = action_space_of(self.model)
        self.single_observation_space = spaces.Box(0, 255, (res, res, 3), np.uint8)
        self.size = size
        self.steps = np.zeros(size, np.int64)
        self.heads = self.model.head_quality

    def pick(self, rng: np.random.Generator, options: dict | None) -> tuple[np.ndarray, np.ndarray | None]:
        """One start state ``(t0, h, w, 3)`` (and its actions): ``options["context"]`` or one drawn by ``rng``."""
        choice = (options or {}).get("context")
        starts = self.starts
        if choice is not None and not isinstance(choice, (int, np.integer)):
            starts, choice = load_starts(choice, self.model.resolution, self.length, self.split), 0
        i = int(rng.integers(len(starts))) if choice is None else int(choice)
        if not 0 <= i < len(starts):
            raise ValueError(f"options['context']: start state {i} of {len(starts)}")
        frames = starts.frames[i]
        acts = None if starts.actions is None else starts.actions[i]
        return frames, acts

    def context(self, picks: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        frames = torch.from_numpy(np.stack([f for f, _ in picks])).permute(0, 1, 4, 2, 3)  # (b, t0, 3, h, w)
        if any(a is None for _, a in picks) or self.model.action_type == "none":
            return frames, None
        return frames, torch.from_numpy(np.stack([a for _, a in picks]))

    def reset(self, picks: list[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
        frames, actions = self.context(picks)
        self.env.reset(frames, actions)
        self.steps[:] = 0
        return np.stack([f[-1] for f, _ in picks])  # (b, h, w, 3): the last context frame

    def reset_rows(self, rows: np.ndarray, picks: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
        frames, actions = self.context(picks)
        self.env.reset_rows(torch.from_numpy(rows), frames, actions)
        self.steps[rows] = 0

    def actions(self, actions: Any) -> torch.Tensor | None:
        """Checked gymnasium actions ``(b,)`` / ``(b, a)`` -> the env's tensor (None for an action-free model)."""
        if self.model.action_type == "none":
            return None
        if self.model.action_type == "discrete":
            return torch.as_tensor(np.asarray(actions, np.int64).reshape(self.size))
        return torch.as_tensor(np.asarray(actions, np.float32).reshape(self.size, -1))

    def step(self, actions: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                          np.ndarray]:
        out = self.env.step(actions)
        obs = ((out.frames.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # (b, 3, h, w)
        obs = obs.permute(0, 2, 3, 1).cpu().numpy()  # (b, h, w, 3)
        p_end = out.terminations.float().cpu().numpy()
        self.steps += 1
        return (obs, out.rewards.float().cpu().numpy().astype(np.float64), p_end > self.threshold,
                self.steps >= self.horizon, p_end)




class WorldModelGymEnv(gym.Env):
    """One imagined episode at a time, as a ``gymnasium.Env`` (see the module docstring).

    Args:
        model: a world-model folder (``wm-video export``) or a loaded :class:`~wm_video.world_model.WorldModel`.
        data: a frame dataset to start from (default: the one the world model records, ``source.data``).
        context: start from this instead: a video file, a folder of images, image files, frames
            ``(t, h, w, 3)`` uint8, or a dataset folder.
        split: which clips of the dataset: ``heldout`` (default), ``train`` or ``all``.
        horizon: steps before an episode is truncated (default 64).
        maskgit_steps: MaskGIT passes per frame (default 8, as generation and evaluation; fewer is faster).
        temperature: token sampling temperature (default 1; 0: argmax).
        top_k: sample among the ``top_k`` most likely tokens.
        render: True (the model's render settings) or a :class:`~wm_video.world_model.RenderSettings`.
        use_cache: the dynamics model's KV cache (default True).
        termination_threshold: ``terminated`` when the termination head's probability is above it (default 0.5).
        device: ``cpu`` (default) or ``cuda``.
        render_mode: ``rgb_array`` (default) or None.
        domain: the action domain of a world model trained on several (``WorldModel.domains``; its start states'
            data must be of that domain); None (the default) for a model of one action space.
        task: the task text of every episode, for a world model trained with task text (required for one).
        text_encoder: its local text encoder folder (default: the one the model records).
        text_guidance_scale: classifier-free guidance on the task text (default 1: none; 0: the text-free model).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, model: WorldModel | str | os.PathLike, *, data: str | os.PathLike | None = None,
                 context: Any = None, split: str = "heldout", horizon: int = 64, maskgit_steps: int = 8,
                 temperature: float = 1.0, top_k: int | None = None, render: RenderSettings | bool = True,
                 use_cache: bool = True, termination_threshold: float = 0.5, device: str = "cpu",
                 render_mode: str | None = "rgb_array", domain: str | None = None, task: str | None = None,
                 text_encoder: str | None = None, text_guidance_scale: float = 1.0) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected 'rgb_array' or None, got {render_mode!r}")
        self._batch = _Batch(model, 1, data=data, context=context, split=split, horizon=horizon,
                             maskgit_steps=maskgit_steps, temperature=temperature, top_k=top_k, render=render,
                             use_cache=use_cache, termination_threshold=termination_threshold, device=device,
                             domain=domain, text=TaskTextSettings(task, text_encoder, text_guidance_scale))
        self.action_space = self._batch.single_action_space
        self.observation_space = self._batch.single_observation_space
        self.metadata = {**self.metadata, "render_fps": self._batch.model.info.fps}
        self.render_mode = render_mode
        self.world_model = self._batch.model
        self._obs: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._batch.generator.manual_seed(seed)
        self._obs = self._batch.reset([self._batch.pick(self.np_random, options)])[0]
        return self._obs, {"heads": dict(self._batch.heads)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("WorldModelGymEnv.step before reset()")
        if not self.action_space.contains(action):
            raise ValueError(f"{action!r} ({type(action).__name__}) is not an action of {self.action_space}")
        obs, reward, terminated, truncated, p_end = self._batch.step(self._batch.actions(action))
        self._obs = obs[0]
        return (self._obs, float(reward[0]), bool(terminated[0]), bool(truncated[0]),
                {"termination_prob": float(p_end[0]), "heads": dict(self._batch.heads)})

    def render(self) -> np.ndarray | None:
        return None if self.render_mode is None or self._obs is None else self._obs.copy()

    @property
    def start_names(self) -> list[str]:
        """Where each start state comes from (``options={"context": i}`` picks the ``i``-th)."""
        return list(self._batch.starts.sources)

    @property
    def temperature(self) -> float:
        return float(self._batch.env.rollout.temperature)

    @property
    def task(self) -> str | None:
        """The task text of every episode (None: a model without text)."""
        return self._batch.task

    @property
    def text(self) -> torch.Tensor | None:
        """The task text's embedding ``(text_dim,)`` the world model is conditioned on (None: no text)."""
        return self._batch.env.text

    def set_sampling(self, temperature: float | None = None, render: RenderSettings | None = None) -> None:
        """Change the token sampling temperature and/or the render settings for the next steps."""
        if temperature is not None:
            self._batch.env.rollout.temperature = float(temperature)
        if render is not None:
            self._batch.env.settings = render


class WorldModelVectorEnv(VectorEnv):
    """``num_envs`` imagined episodes in one batched ``WorldModelEnv``, as a ``gymnasium.vector.VectorEnv`` with
    ``NEXT_STEP`` autoreset (see the module docstring).

    Args:
        num_envs: the batch size N.
        model, data, context, split, horizon, maskgit_steps, temperature, top_k, render, use_cache,
        termination_threshold, device, render_mode, domain, task, text_encoder, text_guidance_scale: as
        :class:`WorldModelGymEnv`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 15,
                                          "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, model: WorldModel | str | os.PathLike, *, data: str | os.PathLike | None = None,
                 context: Any = None, split: str = "heldout", horizon: int = 64, maskgit_steps: int = 8,
                 temperature: float = 1.0, top_k: int | None = None, render: RenderSettings | bool = True,
                 use_cache: bool = True, termination_threshold: float = 0.5, device: str = "cpu",
                 render_mode: str | None = "rgb_array", domain: str | None = None, task: str | None = None,
                 text_encoder: str | None = None, text_guidance_scale: float = 1.0) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected 'rgb_array' or None, got {render_mode!r}")
        self._batch = _Batch(model, num_envs, data=data, context=context, split=split, horizon=horizon,
                             maskgit_steps=maskgit_steps, temperature=temperature, top_k=top_k, render=render,
                             use_cache=use_cache, termination_threshold=termination_threshold, device=device,
                             domain=domain, text=TaskTextSettings(task, text_encoder, text_guidance_scale))
        self.num_envs = num_envs
        self.single_action_space = self._batch.single_action_space
        self.single_observation_space = self._batch.single_observation_space
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.metadata = {**self.metadata, "render_fps": self._batch.model.info.fps}
        self.render_mode = render_mode
        self.world_model = self._batch.model
        self._rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_envs)]
        self._autoreset = np.zeros(num_envs, bool)
        self._obs: np.ndarray | None = None

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)] if not isinstance(
            seed, Sequence) else list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset: {len(seeds)} seeds for {self.num_envs} envs")
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seeds[0])
        self._rngs = [gym.utils.seeding.np_random(s)[0] if s is not None else r for s, r in zip(seeds, self._rngs,
                                                                                                 strict=True)]
        if seeds[0] is not None:
            self._batch.generator.manual_seed(seeds[0])
        self._obs = self._batch.reset([self._batch.pick(r, options) for r in self._rngs])
        self._autoreset[:] = False
        return self._obs.copy(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("WorldModelVectorEnv.step before reset()")
        if not self.action_space.contains(np.asarray(actions)):
            raise ValueError(f"{actions!r} is not a batch of actions of {self.action_space}")
        b = self._batch
        obs, rewards, terminated, truncated, p_end = b.step(b.actions(actions))
        rows = np.flatnonzero(self._autoreset)
        if len(rows):  # NEXT_STEP: the rows that ended last step start again, their actions and step ignored
            picks = [b.pick(self._rngs[i], None) for i in rows]
            b.reset_rows(rows, picks)
            obs[rows] = np.stack([f[-1] for f, _ in picks])
            rewards[rows], terminated[rows], truncated[rows], p_end[rows] = 0.0, False, False, 0.0
        self._autoreset = terminated | truncated
        self._obs = obs
        return obs.copy(), rewards, terminated, truncated, {"termination_prob": p_end}

    def render(self) -> tuple[np.ndarray, ...] | None:
        return None if self.render_mode is None or self._obs is None else tuple(self._obs)


def register() -> None:
    """Register :data:`ENV_ID` with gymnasium (done when this module is imported; again is harmless)."""
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=f"{__name__}:WorldModelGymEnv",
                     vector_entry_point=f"{__name__}:WorldModelVectorEnv")


register()
