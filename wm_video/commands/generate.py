"""``wm-video generate``: action-conditioned future video from a world-model folder."""

from __future__ import annotations


def generate(model: str | None = None, context: str | None = None, actions: str | None = None,
             num_frames: int | None = None, context_frames: int | None = None, out: str = "generated.mp4",
             gif: bool = False, side_by_side: bool = False, num_inference_steps: int | None = None,
             temperature: float = 1.0, maskgit_steps: int = 8, seed: int = 0, scale: int = 4,
             device: str = "cpu") -> None:
    """Predict the future of a context video under a sequence of actions; write mp4 (+ GIF) and a JSON trace.

    Predicted reward and termination probability are drawn under each frame (a head that did not pass its quality
    gate in training, per the dynamics part's quality.json, is left out) and written, per step, to OUT.json. With a
    dataset clip as context, its own actions are used when --actions is left out, and --side-by-side puts the
    ground truth beside the prediction.

    Example:
        wm-video generate --model runs/wm --context data/breakout#3 --num-frames 16 --out pred.mp4 --gif --side-by-side

    Args:
        model: world-model folder (from 'wm-video export' or WorldModel.save_pretrained).
        context: a video file, a folder of images, or a dataset folder (DIR, DIR#N for its N-th clip, DIR#KEY).
        actions: .npy, .json or .csv with one action per predicted frame (default: the dataset clip's own).
        num_frames: frames to predict (default: as many as there are actions).
        context_frames: context frames to use (default: 4, at most the model's window).
        out: output mp4 file (not a folder); the trace goes beside it as .json, the GIF as .gif.
        gif: also write a GIF.
        side_by_side: put the ground truth (dataset contexts) to the right of the prediction.
        num_inference_steps: diffusion decoder steps per frame (default: the decoder's own).
        temperature: token sampling temperature (0: argmax, deterministic).
        maskgit_steps: MaskGIT passes per frame.
        seed: random seed; the same seed gives the same video.
        scale: upscaling factor of the written video (nearest neighbour).
        device: cpu or cuda.
    """
    import json
    from pathlib import Path

    if not model or not context:
        raise ValueError("--model and --context are required")
    _check_out(out, gif)

    import numpy as np
    import torch

    from wm_video.data.writer import atomic_write_json
    from wm_video.generation.inputs import check_actions, load_actions, load_context
    from wm_video.generation.pipeline import WorldModelPipeline
    from wm_video.generation.video_io import annotate, prediction_captions, upscale, write_gif, write_mp4
    from wm_video.generation.video_io import side_by_side as beside

    pipe = WorldModelPipeline.from_pretrained(model)
    wm = pipe.model.to(device)
    dyn = wm.dynamics.config
    n_ctx = context_frames or min(4, wm.context_frames)
    if not 1 <= n_ctx <= wm.context_frames:
        raise ValueError(f"--context-frames must be in [1, {wm.context_frames}] (the model's window), got {n_ctx}")
    ctx = load_context(context, wm.resolution, n_ctx)
    kind = dyn.action_type
    if actions is not None:
        if num_frames is None:
            raise ValueError("--num-frames is required with --actions")
        acts = load_actions(actions, num_frames, kind, dyn.num_actions, dyn.action_dim)
    elif ctx.actions is not None and kind != "none":
        steps_left = len(ctx.actions) - (n_ctx - 1)
        num_frames = num_frames or min(steps_left, len(ctx.future) if ctx.future is not None else steps_left)
        acts = check_actions(ctx.actions[n_ctx - 1:], num_frames, kind, dyn.num_actions, dyn.action_dim,
                             f"{ctx.source} (the clip's own actions)")
    elif kind == "none":
        if num_frames is None:
            raise ValueError("--num-frames is required for an action-free model")
        acts = None
    else:
        raise ValueError(f"--actions is required: the model takes {kind} actions and {context} has none")
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
    if side_by_side:
        if ctx.future is None:
            raise ValueError("--side-by-side needs a dataset clip as context (the ground truth)")
        truth = np.concatenate([ctx.frames, ctx.future[: len(pred)]])
        if len(truth) < len(video):  # the clip ends before the prediction: hold its last frame
            truth = np.concatenate([truth, truth[-1:].repeat(len(video) - len(truth), 0)])
        truth = annotate(upscale(truth, scale), ["truth"] * len(video))
        video = beside(video, truth)
    fps = float(json.loads((Path(model) / "world_model.json").read_text()).get("fps", 15.0))
    out_path = write_mp4(video, out, fps)
    trace = {"model": str(model), "context": ctx.source, "context_frames": n_ctx, "num_frames": len(pred),
             "seed": seed, "temperature": temperature, "num_inference_steps": num_inference_steps,
             "head_quality": wm.head_quality,
             "steps": [{"t": i + 1, "action": None if acts is None else np.asarray(acts[i]).tolist(),
                        "reward": float(rewards[i]), "termination_prob": float(terms[i])} for i in range(len(pred))]}
    trace_path = out_path.with_suffix(".json")
    atomic_write_json(trace_path, trace)
    print(f"wrote {out_path} ({len(video)} frames at {fps:g} fps) and {trace_path}")
    if gif:
        print(f"wrote {write_gif(video, out_path.with_suffix('.gif'), fps)}")


def _check_out(file: str, gif: bool) -> None:
    """Refuse, before any work, an --out that is a folder (or whose trace or GIF would land on one): it names the
    mp4 file to write."""
    from pathlib import Path

    from wm_video.utils.atomic import OutputRefused

    out = Path(file)

    for path in (out, out.with_suffix(".json"), *([out.with_suffix(".gif")] if gif else [])):
        if path.is_dir():
            raise OutputRefused(f"--out {out}: {path} is a folder; --out names the mp4 file to write, e.g. "
                                f"{out / 'generated.mp4'}")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputRefused(f"--out {out}: {parent} is a file, not a folder; give a path in a folder")
