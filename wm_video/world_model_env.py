"""``WorldModelEnv``: the world model as a batched environment, the one object generation, evaluation, planning
and play step through.

    env = WorldModelEnv(WorldModel.from_pretrained("runs/wm"), temperature=1.0,
                        render=RenderSettings(num_inference_steps=4))
    env.reset(context_frames, context_actions)      # (b, t0, 3, h, w) uint8 or [-1, 1]; (b, t0 - 1[, a])
    out = env.step(actions)                         # (b,) int64 or (b, a) float
    out.frames, out.rewards, out.terminations       # (b, 3, h, w) in [-1, 1], (b,), (b,) probabilities
    env.reset_rows(rows, frames, actions)           # (k,) rows start again from (k, t0, 3, h, w), the rest go on

Token dynamics run through the KV-cached :class:`~wm_video.models.dynamics.sampling.Rollout`, so each step
costs the same however long the rollout; frames are rendered per step (``render=False`` skips it, for planners
that only need tokens, rewards and terminations). A decoder trained with the previous-frame condition gets the
last context frame, then its own renders.

``reset`` and ``step`` are where the inputs are validated, once per call: the context's shape and pixels, and the
actions' type, shape and values (one host read per call). The rollout and the render then run inside
:func:`~wm_video.models.checks.validated`, so the models do not read the same values again, nor the tokens they
made themselves (``WM_VIDEO_CHECKS=1`` turns those checks back on, :mod:`wm_video.models.checks`). A caller that
makes its own actions (a planner) may step inside ``validated()`` too, skipping the per-step action check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wm_video.models.checks import validated
from wm_video.models.dynamics.sampling import Rollout
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.world_model import RenderSettings, WorldModel


@dataclass
class EnvStep:
    """One step for the whole batch: ``tokens`` ``(b, h', w')``; ``frames`` ``(b, 3, h, w)`` in [-1, 1] (None
    when not rendering); ``rewards`` ``(b,)`` expected reward; ``terminations`` ``(b,)`` probability that the step
    ended the episode."""

    tokens: torch.Tensor
    frames: torch.Tensor | None
    rewards: torch.Tensor
    terminations: torch.Tensor


class WorldModelEnv:
    """Batched imagined environment over a :class:`WorldModel`.

    Args:
        model: the world model.
        maskgit_steps: MaskGIT passes per frame of the dynamics model.
        temperature: token sampling temperature (0: argmax, deterministic).
        top_k: sample among the ``top_k`` most likely tokens.
        render: decode frames at every step: True (default) with the model's own render settings, a
            :class:`~wm_video.world_model.RenderSettings` (decoder steps, sampler, keep_still) with those, False
            not at all (``EnvStep.frames`` is None).
        use_cache: KV cache for the dynamics model (False recomputes the window each step).
        generator: random source of token sampling and decoder noise; the same seed gives the same rollout.
        guidance_scale: classifier-free guidance on actions, ``s >= 0``: the token logits are
            ``uncond + s * (cond - uncond)``, ``cond`` given the actions, ``uncond`` with every frame's action (the
            context's included) replaced by the null action, the unconditional model trained by
            ``null_action_prob``. 1 (default) is the plain model at no extra cost; ``s > 1`` follows the actions
            more strongly, 0 ignores them. Any other value than 1 runs the dynamics model on a doubled batch
            (about twice the compute and KV-cache memory per step); rewards and terminations stay conditional.
        text: one task-text embedding ``(text_dim,)`` (a model trained with task text;
            :func:`~wm_video.task_text.task_embedding`), every row's text when :meth:`reset` and :meth:`reset_rows`
            are given none (None: no text, the unconditional model).
        text_guidance_scale: classifier-free guidance on the task text, ``s_t >= 0`` (models with text): 1 (default)
            is the plain model, 0 the text-free one
            (:class:`~wm_video.models.dynamics.sampling.Rollout`).
    """

    def __init__(self, model: WorldModel, maskgit_steps: int = 8, temperature: float = 1.0, *,
                 top_k: int | None = None, render: RenderSettings | bool = True, use_cache: bool = True,
                 generator: torch.Generator | None = None, guidance_scale: float = 1.0,
                 text: torch.Tensor | None = None, text_guidance_scale: float = 1.0) -> None:
        if not isinstance(render, (bool, RenderSettings)):
            raise TypeError(f"render: expected True, False or a RenderSettings, got {type(render).__name__}")
        self.model = model
        self.render = render is not False
        self.settings = render if isinstance(render, RenderSettings) else RenderSettings()
        self.generator = generator
        self.rollout = Rollout(model.dynamics, maskgit_steps, temperature, top_k, use_cache, generator,
                               guidance_scale, text_guidance_scale=text_guidance_scale)
        if text is not None and text.ndim != 1:
            raise ValueError(f"text: expected one task's embedding (text_dim,), got shape {tuple(text.shape)}")
        self.text = text
        self._prev: torch.Tensor | None = None  # the last frame (b, 3, h, w) and its tokens (b, h', w')
        self._prev_tokens: torch.Tensor | None = None
        self.batch_size = 0
        self.t = 0

    def check_actions(self, actions: torch.Tensor | None, lead: tuple[int, ...], where: str = "actions") -> None:
        """Actions fit the model's action space: ``lead`` + ``()`` integer ids in range or ``lead + (a,)`` finite
        floats (the values are not read inside :func:`~wm_video.models.checks.validated`)."""
        if actions is None:
            return
        if not torch.is_tensor(actions):
            raise TypeError(f"{where}: expected a tensor, got {type(actions).__name__}")
        self.model.dynamics.actions.check(actions, lead, where)

    @torch.no_grad()
    def reset(self, context_frames: torch.Tensor, context_actions: torch.Tensor | None = None,
              text: torch.Tensor | None = None) -> torch.Tensor:
        """Start every batch row from its context ``(b, t0, 3, h, w)`` (uint8 or float in [-1, 1]) and the actions
        taken between context frames ``(b, t0 - 1)`` / ``(b, t0 - 1, a)`` (None: the null action); ``text``: each
        row's task-text embedding ``(b, text_dim)`` for a model trained with task text (None: no text, the
        unconditional model; the env's ``text``, if it has one). Returns the context's tokens ``(b, t0, h', w')``."""
        model = self.model
        model.check_frames(context_frames, "context")
        b, t0 = context_frames.shape[:2]
        if t0 < 1:
            raise ValueError("context: needs at least 1 frame")
        if context_actions is not None and context_actions.shape[1:2] == (t0,):
            context_actions = context_actions[:, : t0 - 1]
        if context_actions is not None and t0 > 1:
            self.check_actions(context_actions, (b, t0 - 1), "context actions")
        tokens = model.encode(context_frames)  # checks the pixels of a float context
        with validated():  # the tokenizer's tokens and the actions checked above
            self.rollout.start(tokens, context_actions if t0 > 1 else None, text=self._rows_text(text, b))
            self._prev = to_model_frames(context_frames[:, -1]).to(model.device)
        self._prev_tokens = tokens[:, -1]
        self.batch_size, self.t = b, 0
        return tokens

    @torch.no_grad()
    def reset_rows(self, rows: torch.Tensor, context_frames: torch.Tensor,
                   context_actions: torch.Tensor | None = None, text: torch.Tensor | None = None) -> torch.Tensor:
        """Start the batch rows ``rows`` ``(k,)`` afresh from their contexts ``(k, t0, 3, h, w)`` (and actions and
        text, as in :meth:`reset`) while the other rows go on
        (:meth:`~wm_video.models.dynamics.sampling.Rollout.restart_rows`: the context must fill the window as the
        batch's history does). Returns the contexts' tokens."""
        if self.batch_size == 0:
            raise RuntimeError("WorldModelEnv.reset_rows before reset(context_frames)")
        model = self.model
        model.check_frames(context_frames, "context")
        k, t0 = context_frames.shape[:2]
        rows = torch.as_tensor(rows, dtype=torch.long)
        if rows.shape != (k,) or (k and (rows.min() < 0 or rows.max() >= self.batch_size)):
            raise ValueError(f"reset_rows: rows {rows.tolist()} for {k} contexts of a batch of {self.batch_size}")
        if context_actions is not None and context_actions.shape[1:2] == (t0,):
            context_actions = context_actions[:, : t0 - 1]
        if context_actions is not None and t0 > 1:
            self.check_actions(context_actions, (k, t0 - 1), "context actions")
        tokens = model.encode(context_frames)
        with validated():
            self.rollout.restart_rows(rows, tokens, context_actions if t0 > 1 else None, self._rows_text(text, k))
            self._prev[rows.to(self._prev.device)] = to_model_frames(context_frames[:, -1]).to(model.device)
        self._prev_tokens[rows.to(self._prev_tokens.device)] = tokens[:, -1]
        return tokens

    def _rows_text(self, text: torch.Tensor | None, b: int) -> torch.Tensor | None:
        """``text`` as given, else the env's one task for each of ``b`` rows, else None."""
        if text is not None or self.text is None:
            return text
        return self.text.to(self.model.device)[None].expand(b, -1)

    @torch.no_grad()
    def step(self, actions: torch.Tensor | None = None) -> EnvStep:
        """Take ``actions`` ``(b,)`` / ``(b, a)`` (None: the null action) -> the next frame, reward, termination."""
        if self.batch_size == 0:
            raise RuntimeError("WorldModelEnv.step before reset(context_frames)")
        self.check_actions(actions, (self.batch_size,))  # before the device copy: a CPU tensor costs no sync
        with validated():  # the actions checked above, the tokens made by the dynamics model
            out = self.rollout.step(None if actions is None else actions.to(self.model.device))
            frames = None
            if self.render:
                frames = self.model.decode(out.tokens[:, None], self._prev, prev_tokens=self._prev_tokens,
                                           render=self.settings, generator=self.generator)[:, 0]
                self._prev = frames
        self._prev_tokens = out.tokens
        self.t += 1
        return EnvStep(tokens=out.tokens, frames=frames, rewards=out.reward, terminations=out.termination)
