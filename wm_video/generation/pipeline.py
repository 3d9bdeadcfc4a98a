"""``WorldModelPipeline``: context video + actions -> predicted future video, rewards and terminations.

    pipe = WorldModelPipeline.from_pretrained("runs/wm")
    out = pipe(video=context, actions=actions, num_frames=16, num_inference_steps=4, temperature=1.0,
               generator=torch.Generator().manual_seed(0), output_type="np")
    out.frames        # (b, T, h, w, 3) uint8 ("np") or (b, T, 3, h, w) float in [-1, 1] ("pt")

The call's vocabulary follows diffusers pipelines (``num_inference_steps`` for the decoder, ``generator``,
``output_type``); the stepping is :class:`~wm_video.world_model_env.WorldModelEnv`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from wm_video.utils import progress
from wm_video.utils.video_io import to_uint8
from wm_video.world_model import RenderSettings, WorldModel
from wm_video.world_model_env import WorldModelEnv


@dataclass
class GenerationOutput:
    """``frames``: the ``T`` predicted frames; ``rewards`` ``(b, T)`` and ``terminations`` ``(b, T)``
    (probabilities), the outcome of each action; ``tokens`` ``(b, T, h', w')``."""

    frames: np.ndarray | torch.Tensor
    rewards: np.ndarray | torch.Tensor
    terminations: np.ndarray | torch.Tensor
    tokens: np.ndarray | torch.Tensor


def as_model_video(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Context video as ``(b, t, 3, h, w)``: accepts ``(t, h, w, 3)`` / ``(b, t, h, w, 3)`` uint8 arrays (the
    usual layout of decoded video) or model-layout tensors."""
    x = torch.as_tensor(np.ascontiguousarray(video)) if isinstance(video, np.ndarray) else video
    if x.ndim == 4:
        x = x[None]
    if x.ndim == 5 and x.shape[-1] == 3 and x.shape[2] != 3:
        x = x.permute(0, 1, 4, 2, 3)
    return x


class WorldModelPipeline:
    """Action-conditioned video generation with a :class:`WorldModel`."""

    def __init__(self, model: WorldModel) -> None:
        self.model = model

    @classmethod
    def from_pretrained(cls, path: str | Path, domain: str | None = None) -> WorldModelPipeline:
        """The world model in ``path`` (a folder or a hub repo id), as its action domain ``domain`` sees it (None:
        a model of one action space; see :meth:`WorldModel.for_domain`)."""
        return cls(WorldModel.from_pretrained(path).for_domain(domain))

    @torch.no_grad()
    def __call__(self, video: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor | None = None,
                 num_frames: int | None = None, context_actions: np.ndarray | torch.Tensor | None = None,
                 num_inference_steps: int | None = None, temperature: float = 1.0, maskgit_steps: int = 8,
                 top_k: int | None = None, sampler: str | None = None, generator: torch.Generator | None = None,
                 output_type: Literal["np", "pt"] = "np", show_progress: bool | None = None,
                 text: torch.Tensor | None = None, text_guidance_scale: float = 1.0) -> GenerationOutput:
        """Predict ``num_frames`` frames after the context.

        Args:
            video: context frames, ``(t, h, w, 3)`` / ``(b, t, h, w, 3)`` uint8 or ``(b, t, 3, h, w)``.
            actions: one action per predicted frame, ``(T,)`` / ``(b, T)`` ids or ``(T, a)`` / ``(b, T, a)``
                floats; the first is taken after the last context frame. None: action-free (null action).
            num_frames: frames to predict (default: the number of actions).
            context_actions: the actions between context frames, ``(b, t - 1[, a])`` (None: the null action).
            num_inference_steps: diffusion decoder steps per frame (default: the decoder's).
            temperature: token sampling temperature (0: argmax).
            maskgit_steps: MaskGIT passes per frame.
            top_k: sample among the top-k tokens.
            sampler: diffusion sampler, ``euler`` or ``dpmsolver``.
            generator: the random source; the same seed gives the same video.
            output_type: ``np`` (uint8 ``(b, T, h, w, 3)``) or ``pt`` (float ``(b, T, 3, h, w)`` in [-1, 1]).
            show_progress: progress bar over frames (default: on terminals).
            text: the task-text embedding of every row, ``(text_dim,)``, for a model trained with task text
                (:func:`~wm_video.task_text.task_embedding`; None: no text).
            text_guidance_scale: classifier-free guidance on the text (1: none; 0: the text-free model).
        """
        if output_type not in ("np", "pt"):
            raise ValueError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        x = as_model_video(video)
        b = x.shape[0]
        unbatched = 2 if self.model.action_type == "continuous" else 1  # ndim of one row's (T[, a]) actions
        acts = None if actions is None else torch.as_tensor(actions)
        if acts is not None and acts.ndim == unbatched:
            acts = acts[None].expand(b, *acts.shape)
        if num_frames is None:
            if acts is None:
                raise ValueError("give actions or num_frames (an action-free generation)")
            num_frames = acts.shape[1]
        if acts is not None and acts.shape[1] < num_frames:
            raise ValueError(f"actions: {acts.shape[1]} steps for {num_frames} frames (one action per frame)")
        ctx_acts = None if context_actions is None else torch.as_tensor(context_actions)
        if ctx_acts is not None and ctx_acts.ndim == unbatched:
            ctx_acts = ctx_acts[None].expand(b, *ctx_acts.shape)
        env = WorldModelEnv(self.model, maskgit_steps, temperature, top_k=top_k,
                            render=RenderSettings(num_inference_steps, sampler), generator=generator, text=text,
                            text_guidance_scale=text_guidance_scale)
        env.reset(x.to(self.model.device), ctx_acts)
        frames, rewards, terms, tokens = [], [], [], []
        bar = progress(total=num_frames, desc="generating", unit="frame", enable=show_progress)
        for i in range(num_frames):
            out = env.step(None if acts is None else acts[:, i])
            frames.append(out.frames)
            rewards.append(out.rewards)
            terms.append(out.terminations)
            tokens.append(out.tokens)
            bar.update(1)
        bar.close()
        f, r, d, k = (torch.stack(v, 1) for v in (frames, rewards, terms, tokens))
        if output_type == "pt":
            return GenerationOutput(f, r, d, k)
        return GenerationOutput(to_uint8(f), r.float().cpu().numpy(), d.float().cpu().numpy(), k.cpu().numpy())
