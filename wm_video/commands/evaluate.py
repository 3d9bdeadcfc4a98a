"""``wm-video eval``: score a world model's predicted futures on held-out clips."""

from __future__ import annotations


def evaluate(*, model: str, data: str, horizon: int = 8, context_frames: int = 4, out: str = "eval_out",
             max_clips: int = 64, batch_size: int = 8, temperature: float = 0.0, maskgit_steps: int = 8,
             num_inference_steps: int | None = None, seed: int = 0, val_fraction: float | None = None,
             guidance_scale: float = 1.0, device: str = "auto") -> None:
    """Open-loop rollouts on held-out clips, scored per horizon against copy-last-frame, shuffled actions, the null
    action and the tokenizer's ceiling, on whole frames, on the pixels that move and on the tokens that change;
    writes OUT/report.json, OUT/report.md and one PNG plot per metric.

    The protocol (wm_video/evaluation/rollout_eval.py) is recorded in the report with every setting.

    Example:
        wm-video eval --model runs/wm --data data/breakout --horizon 8 --out runs/wm/eval

    Args:
        model: world-model folder.
        data: frame-shard dataset; the held-out episodes its dataset.json records (the split training used) are scored.
        horizon: predicted frames per clip.
        context_frames: context frames per clip.
        out: report folder.
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
        device: auto (cuda when a GPU is visible, else cpu), cpu or cuda.
    """
    from wm_video.evaluation import EvalConfig, evaluate_world_model, write_report
    from wm_video.evaluation.report import markdown
    from wm_video.utils.device import resolve_device
    from wm_video.world_model import WorldModel

    wm = WorldModel.from_pretrained(model).to(resolve_device(device))
    cfg = EvalConfig(horizon=horizon, context_frames=context_frames, max_clips=max_clips, batch_size=batch_size,
                     temperature=temperature, maskgit_steps=maskgit_steps, num_inference_steps=num_inference_steps,
                     seed=seed, val_fraction=val_fraction, guidance_scale=guidance_scale)
    report = evaluate_world_model(wm, data, cfg)
    report["model"] = str(model)
    paths = write_report(report, out)
    print(markdown(report))
    print(f"wrote {', '.join(str(p) for p in paths)}")
