"""``wm-video generate``: action-conditioned future video from a world-model folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def generate(*, model: str, context: str, actions: str | None = None, num_frames: int | None = None,
             context_frames: int | None = None, out: str = "generated.mp4", gif: bool = False,
             side_by_side: bool = False, num_inference_steps: int | None = None, temperature: float = 1.0,
             maskgit_steps: int = 8, seed: int = 0, scale: int = 4, device: str = "auto") -> None:
    """Predict the future of a context video under a sequence of actions; write mp4 (+ GIF) and a JSON trace.

    Predicted reward and termination probability are drawn under each frame (a head that did not pass its quality
    gate in training, per the dynamics part's quality.json, is left out) and written, per step, to OUT.json. With a
    dataset clip as context, its own actions are used when --actions is left out, and --side-by-side puts the
    clip's real frames beside the prediction; with --actions the truth panel still shows what the clip's own
    actions gave, and is labelled so. Every argument is checked before the model is loaded.

    Example:
        wm-video generate --model runs/wm --context data/breakout#3 --num-frames 16 --out pred.mp4 --gif --side-by-side

    Args:
        model: world-model folder (from 'wm-video export' or WorldModel.save_pretrained).
        context: a video file, a folder of images, or a dataset folder (DIR, DIR#N for its N-th clip, DIR#KEY).
        actions: .npy, .json or .csv with one action per predicted frame (default: the dataset clip's own).
        num_frames: frames to predict (default: as many as there are actions: all of the --actions file, or the
            clip's own actions up to the clip's end).
        context_frames: context frames to use (default: 4, at most the model's window).
        out: output mp4 file (not a folder); the trace goes beside it as .json, the GIF as .gif.
        gif: also write a GIF.
        side_by_side: put the dataset clip's real frames (the context must be a dataset clip) to the right of the
            prediction; where the clip ends before the prediction, the panel is blank and a warning says so.
        num_inference_steps: diffusion decoder steps per frame (default: the decoder's own).
        temperature: token sampling temperature. The default 1 samples, which keeps the video lively (argmax
            rollouts tend to freeze or smear motion); 0 is argmax, deterministic (what 'wm-video eval' scores).
        maskgit_steps: MaskGIT passes per frame.
        seed: random seed; the same seed gives the same video.
        scale: upscaling factor of the written video (nearest neighbour).
        device: auto (cuda when a GPU is visible, else cpu), cpu or cuda.
    """
    import numpy as np
    import torch

    from wm_video.generation.inputs import check_actions, load_actions, load_context
    from wm_video.generation.pipeline import WorldModelPipeline
    from wm_video.generation.video_io import annotate, prediction_captions, upscale, write_gif, write_mp4
    from wm_video.generation.video_io import side_by_side as beside
    from wm_video.utils.atomic import atomic_write_json
    from wm_video.utils.device import resolve_device

    # ---- every argument, before the model is loaded
    _check_out(out, gif)
    for flag, value, low in (("--num-frames", num_frames, 1), ("--context-frames", context_frames, 1),
                             ("--num-inference-steps", num_inference_steps, 1), ("--maskgit-steps", maskgit_steps, 1),
                             ("--scale", scale, 1), ("--temperature", temperature, 0)):
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if side_by_side and not _is_dataset(context):
        raise ValueError(f"--side-by-side needs a dataset clip as --context (DIR, DIR#N or DIR#KEY, whose real "
                         f"frames go beside the prediction); {context} is not a dataset folder")
    device = resolve_device(device)
    spec = _ModelSpec.read(model)
    n_ctx = context_frames or min(4, spec.context_frames)
    if n_ctx > spec.context_frames:
        raise ValueError(f"--context-frames must be in [1, {spec.context_frames}] (the model's window), got {n_ctx}")
    ctx = load_context(context, spec.resolution, n_ctx)
    kind = spec.action_type
    if actions is not None:
        acts = load_actions(actions, num_frames, kind, spec.num_actions, spec.action_dim)
        num_frames = len(acts)
    elif kind == "none":
        num_frames = num_frames or (len(ctx.future) if ctx.future is not None else None)
        if not num_frames:
            raise ValueError("--num-frames is required: the model is action-free and the context has no frames to "
                             "count after it")
        acts = None
    elif ctx.actions is not None:
        steps_left = len(ctx.actions) - (n_ctx - 1)
        num_frames = num_frames or min(steps_left, len(ctx.future))
        if num_frames < 1:
            raise ValueError(f"context {ctx.source}: no frames after the {n_ctx} context frames; give --actions or a "
                             f"smaller --context-frames")
        acts = check_actions(ctx.actions[n_ctx - 1:], num_frames, kind, spec.num_actions, spec.action_dim,
                             f"{ctx.source} (the clip's own actions)")
    else:
        raise ValueError(f"--actions is required: the model takes {kind} actions and {context} has none")
    truth_label = "truth"
    if side_by_side:
        if actions is not None and kind != "none":
            truth_label = "truth (clip actions)"
            log.info("--side-by-side with --actions: the truth panel shows %s under its own actions, not what %s "
                     "would give", ctx.source, actions)
        if len(ctx.future) < num_frames:
            log.warning("--side-by-side: %s has %d real frames after the context and %d are predicted; the truth "
                        "panel is blank for the last %d", ctx.source, len(ctx.future), num_frames,
                        num_frames - len(ctx.future))

    # ---- the model
    pipe = WorldModelPipeline.from_pretrained(model)
    wm = pipe.model.to(device)
    ctx_acts = None if ctx.actions is None or kind == "none" else ctx.actions[: n_ctx - 1]
    gen = torch.Generator(device=device).manual_seed(seed)
    result = pipe(ctx.frames, acts, num_frames, context_actions=ctx_acts, num_inference_steps=num_inference_steps,
                  temperature=temperature, maskgit_steps=maskgit_steps, generator=gen)
    pred = result.frames[0]  # (T, h, w, 3)
    rewards, terms = result.rewards[0], result.terminations[0]
    video = upscale(np.concatenate([ctx.frames, pred]), scale)
    captions = [f"context {i + 1}/{n_ctx}" for i in range(n_ctx)]
    captions += prediction_captions(rewards[: len(pred)], terms[: len(pred)], wm.head_quality)
    video = annotate(video, captions)
    truth_panel = None
    if side_by_side:
        truth = np.concatenate([ctx.frames, ctx.future[: len(pred)]])  # (t, h, w, 3)
        truth_panel = {"label": truth_label, "frames": len(truth) - n_ctx}
        labels = [truth_label] * len(truth)
        if len(truth) < len(video):  # the clip ends before the prediction: blank, not its last frame held
            labels += ["clip ended"] * (len(video) - len(truth))
            truth = np.concatenate([truth, np.zeros((len(video) - len(truth), *truth.shape[1:]), np.uint8)])
        video = beside(video, annotate(upscale(truth, scale), labels))
    out_path = write_mp4(video, out, spec.fps)
    trace = {"model": str(model), "context": ctx.source, "context_frames": n_ctx, "num_frames": len(pred),
             "actions": actions or "the clip's own", "truth": truth_panel,
             "seed": seed, "temperature": temperature, "num_inference_steps": num_inference_steps,
             "head_quality": wm.head_quality,
             "steps": [{"t": i + 1, "action": None if acts is None else np.asarray(acts[i]).tolist(),
                        "reward": float(rewards[i]), "termination_prob": float(terms[i])} for i in range(len(pred))]}
    trace_path = out_path.with_suffix(".json")
    atomic_write_json(trace_path, trace)
    print(f"wrote {out_path} ({len(video)} frames at {spec.fps:g} fps) and {trace_path}")
    if gif:
        print(f"wrote {write_gif(video, out_path.with_suffix('.gif'), spec.fps)}")


@dataclass
class _ModelSpec:
    """What the argument checks need from a world-model folder, read from its JSON files (no weights)."""

    resolution: int
    context_frames: int
    fps: float
    action_type: str
    num_actions: int
    action_dim: int

    @classmethod
    def read(cls, model: str) -> _ModelSpec:
        from wm_video.models.dynamics import DynamicsConfig
        from wm_video.models.dynamics.model import REQUIRED_FIELDS
        from wm_video.models.export import read_config
        from wm_video.world_model import read_index

        _, parts, info = read_index(model)
        dyn = read_config(parts["dynamics"], DynamicsConfig, "dynamics", REQUIRED_FIELDS)
        return cls(info.resolution, dyn.context_frames, float(info.fps), dyn.action_type, dyn.num_actions,
                   dyn.action_dim)


def _is_dataset(context: str) -> bool:
    """Whether ``context`` names a dataset folder (or one of its clips), the only context with real future frames."""
    return (Path(context.partition("#")[0]) / "dataset.json").is_file()


def _check_out(file: str, gif: bool) -> None:
    """Refuse, before any work, an --out that is a folder (or whose trace or GIF would land on one): it names the
    mp4 file to write."""
    from wm_video.utils.atomic import OutputRefused

    out = Path(file)

    for path in (out, out.with_suffix(".json"), *([out.with_suffix(".gif")] if gif else [])):
        if path.is_dir():
            raise OutputRefused(f"--out {out}: {path} is a folder; --out names the mp4 file to write, e.g. "
                                f"{out / 'generated.mp4'}")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputRefused(f"--out {out}: {parent} is a file, not a folder; give a path in a folder")
