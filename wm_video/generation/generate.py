"""A world model's predicted future of a context video, written as mp4 (+ GIF) with a JSON trace of the predicted
rewards and terminations: what ``wm-video generate`` and the demo run.

Every argument is checked before the model's weights are loaded (the checks read only its JSON files), so a typo
costs nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_video.generation.config import GenerateConfig
from wm_video.generation.inputs import Context, check_actions, load_actions, load_context
from wm_video.generation.pipeline import WorldModelPipeline
from wm_video.models.dynamics import DynamicsConfig
from wm_video.models.dynamics.model import REQUIRED_FIELDS
from wm_video.models.export import read_config
from wm_video.task_text import check_task_settings, resolve_task, task_embedding
from wm_video.utils.atomic import OutputRefused, atomic_write_json
from wm_video.utils.device import resolve_device
from wm_video.utils.video_io import annotate, prediction_captions, upscale, write_gif, write_mp4
from wm_video.utils.video_io import side_by_side as beside
from wm_video.world_model import read_index

log = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    """What the argument checks need from a world-model folder, read from its JSON files (no weights)."""

    resolution: int
    context_frames: int
    action_type: str
    num_actions: int
    action_dim: int
    text_dim: int = 0

    @classmethod
    def read(cls, model: str | Path, domain: str | None = None) -> ModelSpec:
        """The spec of action domain ``domain`` (None: the model's only one; ValueError naming the domains)."""
        _, parts, info = read_index(model)
        dyn = read_config(parts["dynamics"], DynamicsConfig, "dynamics", REQUIRED_FIELDS).domain_config(domain)
        return cls(info.resolution, dyn.context_frames, dyn.action_type, dyn.num_actions, dyn.action_dim,
                   dyn.text_dim)


@dataclass
class GenerateResult:
    """What :func:`generate_video` wrote: the mp4 (``frames`` frames at ``fps``), the trace and the GIF if asked."""

    video: Path
    trace: Path
    gif: Path | None
    frames: int
    fps: float


def generate_video(model: str | Path, context: str, cfg: GenerateConfig, actions: str | None = None,
                   out: str | Path = "generated.mp4", device: str = "auto") -> GenerateResult:
    """Predict the future of ``context`` under ``actions`` with the world model in folder ``model``.

    Args:
        model: world-model folder.
        context: a video file, a folder of images, or a dataset folder (``DIR``, ``DIR#N`` for its N-th clip,
            ``DIR#KEY``).
        cfg: the generation settings.
        actions: .npy, .json or .csv with one action per predicted frame (None: the dataset clip's own).
        out: the mp4 file to write; the trace goes beside it as .json, the GIF as .gif.
        device: ``auto`` (cuda when a GPU is visible, else cpu), ``cpu`` or ``cuda``.
    """
    check_out(out, cfg.gif)
    cfg.validate()
    if cfg.side_by_side and not is_dataset(context):
        raise ValueError(f"--side-by-side needs a dataset clip as --context (DIR, DIR#N or DIR#KEY, whose real "
                         f"frames go beside the prediction); {context} is not a dataset folder")
    device = resolve_device(device)
    spec = ModelSpec.read(model, cfg.domain)
    check_task_settings(spec.text_dim, cfg, "generate", model)
    n_ctx = cfg.context_frames or min(4, spec.context_frames)
    if n_ctx > spec.context_frames:
        raise ValueError(f"--context-frames must be in [1, {spec.context_frames}] (the model's window), got {n_ctx}")
    ctx = load_context(context, spec.resolution, n_ctx)
    task = resolve_task(spec.text_dim, cfg, "generate", model, default=ctx.task)
    acts, num_frames = _actions(ctx, context, actions, cfg.num_frames, n_ctx, spec)
    truth_label = _truth_label(ctx, actions, num_frames, spec, cfg.side_by_side)

    pipe = WorldModelPipeline.from_pretrained(model, domain=cfg.domain)
    wm = pipe.model.to(device)
    text = task_embedding(wm, cfg, "generate", model, default=ctx.task)
    ctx_acts = None if ctx.actions is None or spec.action_type == "none" else ctx.actions[: n_ctx - 1]
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    result = pipe(ctx.frames, acts, num_frames, context_actions=ctx_acts, num_inference_steps=cfg.num_inference_steps,
                  temperature=cfg.temperature, maskgit_steps=cfg.maskgit_steps, generator=gen, text=text,
                  text_guidance_scale=cfg.text_guidance_scale)
    pred = result.frames[0]  # (t, h, w, 3)
    rewards, terms = result.rewards[0], result.terminations[0]
    video = upscale(np.concatenate([ctx.frames, pred]), cfg.scale)
    captions = [f"context {i + 1}/{n_ctx}" for i in range(n_ctx)]
    video = annotate(video, captions + prediction_captions(rewards[: len(pred)], terms[: len(pred)], wm.head_quality))
    truth_panel = None
    if cfg.side_by_side:
        video, truth_panel = _beside_truth(video, ctx, len(pred), n_ctx, truth_label, cfg.scale)
    fps = float(wm.info.fps)
    video_path = write_mp4(video, out, fps)
    trace = {"model": str(model), "context": ctx.source, "context_frames": n_ctx, "num_frames": len(pred),
             "actions": actions or "the clip's own", "truth": truth_panel,
             "seed": cfg.seed, "temperature": cfg.temperature, "num_inference_steps": cfg.num_inference_steps,
             "head_quality": wm.head_quality, "task": task, "text_guidance_scale": cfg.text_guidance_scale,
             "steps": [{"t": i + 1, "action": None if acts is None else np.asarray(acts[i]).tolist(),
                        "reward": float(rewards[i]), "termination_prob": float(terms[i])} for i in range(len(pred))]}
    trace_path = video_path.with_suffix(".json")
    atomic_write_json(trace_path, trace)
    gif = write_gif(video, video_path.with_suffix(".gif"), fps) if cfg.gif else None
    return GenerateResult(video_path, trace_path, gif, len(video), fps)


def _actions(ctx: Context, context: str, actions: str | None, num_frames: int | None, n_ctx: int, spec: ModelSpec
             ) -> tuple[Any, int]:
    """The actions to predict under (None for an action-free model) and the number of frames to predict."""
    kind = spec.action_type
    if actions is not None:
        acts = load_actions(actions, num_frames, kind, spec.num_actions, spec.action_dim)
        return acts, len(acts)
    if kind == "none":
        num_frames = num_frames or (len(ctx.future) if ctx.future is not None else None)
        if not num_frames:
            raise ValueError("--num-frames is required: the model is action-free and the context has no frames to "
                             "count after it")
        return None, num_frames
    if ctx.actions is None:
        raise ValueError(f"--actions is required: the model takes {kind} actions and {context} has none")
    steps_left = len(ctx.actions) - (n_ctx - 1)
    num_frames = num_frames or min(steps_left, len(ctx.future))
    if num_frames < 1:
        raise ValueError(f"context {ctx.source}: no frames after the {n_ctx} context frames; give --actions or a "
                         f"smaller --context-frames")
    acts = check_actions(ctx.actions[n_ctx - 1:], num_frames, kind, spec.num_actions, spec.action_dim,
                         f"{ctx.source} (the clip's own actions)")
    return acts, num_frames


def _truth_label(ctx: Context, actions: str | None, num_frames: int, spec: ModelSpec, side_by_side: bool) -> str:
    """The truth panel's caption; says so (in the log) where it will not show what the prediction shows."""
    if not side_by_side:
        return "truth"
    label = "truth"
    if actions is not None and spec.action_type != "none":
        label = "truth (clip actions)"
        log.info("--side-by-side with --actions: the truth panel shows %s under its own actions, not what %s "
                 "would give", ctx.source, actions)
    if len(ctx.future) < num_frames:
        log.warning("--side-by-side: %s has %d real frames after the context and %d are predicted; the truth "
                    "panel is blank for the last %d", ctx.source, len(ctx.future), num_frames,
                    num_frames - len(ctx.future))
    return label


def _beside_truth(video: np.ndarray, ctx: Context, n_pred: int, n_ctx: int, label: str, scale: int
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """``video`` with the clip's real frames to its right, and the trace's record of that panel."""
    truth = np.concatenate([ctx.frames, ctx.future[:n_pred]])  # (t, h, w, 3)
    panel = {"label": label, "frames": len(truth) - n_ctx}
    labels = [label] * len(truth)
    if len(truth) < len(video):  # the clip ends before the prediction: blank, not its last frame held
        labels += ["clip ended"] * (len(video) - len(truth))
        truth = np.concatenate([truth, np.zeros((len(video) - len(truth), *truth.shape[1:]), np.uint8)])
    return beside(video, annotate(upscale(truth, scale), labels)), panel


def is_dataset(context: str) -> bool:
    """Whether ``context`` names a dataset folder (or one of its clips), the only context with real future frames."""
    return (Path(context.partition("#")[0]) / "dataset.json").is_file()


def check_out(file: str | Path, gif: bool) -> None:
    """Refuse, before any work, an ``out`` that is a folder (or whose trace or GIF would land on one): it names the
    mp4 file to write."""
    out = Path(file)
    for path in (out, out.with_suffix(".json"), *([out.with_suffix(".gif")] if gif else [])):
        if path.is_dir():
            raise OutputRefused(f"--out {out}: {path} is a folder; --out names the mp4 file to write, e.g. "
                                f"{out / 'generated.mp4'}")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputRefused(f"--out {out}: {parent} is a file, not a folder; give a path in a folder")
