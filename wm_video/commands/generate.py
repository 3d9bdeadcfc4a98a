"""``wm-video generate``: action-conditioned future video from a world-model folder."""

from __future__ import annotations

from typing import Any

from wm_video.config import load_config
from wm_video.generation.generate import generate_video


def generate(*overrides: str, model: str, context: str, actions: str | None = None, out: str = "generated.mp4",
             config: str | None = None, preset: str = "default", device: str = "auto", **settings: Any) -> None:
    """Predict the future of a context video under a sequence of actions; write mp4 (+ GIF) and a JSON trace.

    Predicted reward and termination probability are drawn under each frame (a head that did not pass its quality
    gate in training, per the dynamics part's quality.json, is left out) and written, per step, to OUT.json. With a
    dataset clip as context, its own actions are used when --actions is left out, and --side-by-side puts the
    clip's real frames beside the prediction; with --actions the truth panel still shows what the clip's own
    actions gave, and is labelled so. Every argument is checked before the model is loaded.

    A world model trained with task text is conditioned on --task TEXT (default: the dataset clip's own task; other
    contexts need --task), its encoder from --text-encoder or the folder the model records; --text-guidance-scale
    S > 1 follows the text more strongly (docs/text-conditioning.md). The trace records the task and the scale.

    Settings (kind ``generate``, wm_video/generation/config.py) resolve as: the preset, the YAML (--config), the
    flags given, then the trailing FIELD=VALUE overrides.

    Example:
        wm-video generate --model runs/wm --context data/breakout#3 --num-frames 16 --out pred.mp4 --gif --side-by-side
        wm-video generate --model runs/wm_mt --context data/mw#0 --task "open drawer" --text-guidance-scale 2

    Args:
        overrides: dotted overrides of the generate config, e.g. ``temperature=0``; they beat flags and YAML.
        model: world-model folder (from 'wm-video export' or WorldModel.save_pretrained).
        context: a video file, a folder of images, or a dataset folder (DIR, DIR#N for its N-th clip, DIR#KEY).
        actions: .npy, .json or .csv with one action per predicted frame (default: the dataset clip's own).
        out: output mp4 file (not a folder); the trace goes beside it as .json, the GIF as .gif.
        config: YAML file with ``kind: generate``.
        preset: named preset the settings start from.
        device: auto (cuda when a GPU is visible, else cpu), cpu or cuda.
        settings: the fields of the generate config, as flags.
    """
    cfg = load_config("generate", preset_name=preset, yaml_path=config, flags=settings, overrides=overrides)
    result = generate_video(model, context, cfg, actions=actions, out=out, device=device)
    print(f"wrote {result.video} ({result.frames} frames at {result.fps:g} fps) and {result.trace}")
    if result.gif:
        print(f"wrote {result.gif}")
