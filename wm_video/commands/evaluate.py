"""``wm-video eval``: score a world model's predicted futures on held-out clips."""

from __future__ import annotations

from typing import Any

from wm_video.config import load_config
from wm_video.evaluation.report import markdown
from wm_video.evaluation.run import evaluate_folder


def evaluate(*overrides: str, model: str, data: str, out: str = "eval_out", config: str | None = None,
             preset: str = "default", device: str = "auto", **settings: Any) -> None:
    """Open-loop rollouts on held-out clips, scored per horizon against copy-last-frame, shuffled actions, the null
    action and the tokenizer's ceiling, on whole frames, on the pixels that move and on the tokens that change;
    writes OUT/report.json, OUT/report.md and one PNG plot per metric.

    The protocol (wm_video/evaluation/rollout_eval.py) is recorded in the report with every setting. Settings (kind
    ``eval``) resolve as: the preset, the YAML (--config), the flags given, then the trailing FIELD=VALUE overrides.

    A model trained with task text rolls each clip out given its own task text (docs/text-conditioning.md).

    Example:
        wm-video eval --model runs/wm --data data/breakout --horizon 8 --out runs/wm/eval
        wm-video eval --model runs/wm_mt --data data/mw --task "push" --text-guidance-scale 2 --out runs/wm_mt/eval

    Args:
        overrides: dotted overrides of the eval config, e.g. ``max_clips=16``; they beat flags and YAML.
        model: world-model folder.
        data: frame-shard dataset; the held-out episodes its dataset.json records (the split training used) are scored.
        out: report folder.
        config: YAML file with ``kind: eval``.
        preset: named preset the settings start from.
        device: auto (cuda when a GPU is visible, else cpu), cpu or cuda.
        settings: the fields of the eval config, as flags.
        horizon: predicted frames per clip.
        context_frames: context frames per clip.
        max_clips: held-out clips evaluated.
        batch_size: clips rolled out together.
        temperature: token sampling temperature. The default 0 is argmax: deterministic scoring, so two runs and two
            models compare without sampling noise ('wm-video generate' samples at 1 for lively video instead).
        maskgit_steps: MaskGIT passes per frame.
        num_inference_steps: diffusion decoder steps (default: the decoder's own).
        seed: random seed of sampling and of the action shuffle.
        val_fraction: held-out fraction (default: the split dataset.json records; a number: that fraction of its
            episodes, or of its shards for a dataset.json written before splits were recorded).
        guidance_scale: classifier-free guidance on actions (1: the plain model; >1 pushes predictions towards what
            the actions imply, at twice the dynamics cost per frame).
        methods: what is scored: model and the baselines copy_last_frame, shuffled_actions, null_actions,
            tokenizer_ceiling.
        task: one task text for every clip instead of each clip's own (a model trained with task text; e.g. a wrong
            task's, to measure how much the model uses the text); refused for a model trained without text.
        text_encoder: the local text encoder folder (default: the one the model records; nothing is downloaded).
        text_guidance_scale: classifier-free guidance on the task text (1: none; >1 follows the text more strongly,
            0 is the text-free model; recorded in the report's protocol); refused, other than 1, for a model
            trained without text.
    """
    cfg = load_config("eval", preset_name=preset, yaml_path=config, flags=settings, overrides=overrides)
    report, paths = evaluate_folder(model, data, cfg, out, device)
    print(markdown(report))
    print(f"wrote {', '.join(str(p) for p in paths)}")
