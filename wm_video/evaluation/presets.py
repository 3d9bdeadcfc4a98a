"""The evaluation protocol's config (:class:`~wm_video.evaluation.rollout_eval.EvalConfig`) as config kind ``eval``,
with its presets: ``default`` (the protocol as reported) and ``debug`` (seconds on a CPU, numbers mean nothing)."""

from __future__ import annotations

from wm_video.config import register_kind, register_preset
from wm_video.evaluation.rollout_eval import EvalConfig

register_kind("eval", EvalConfig)


@register_preset("eval", "default")
def _eval_default() -> EvalConfig:
    return EvalConfig()


@register_preset("eval", "debug")
def _eval_debug() -> EvalConfig:
    return EvalConfig(horizon=2, max_clips=2, batch_size=2, maskgit_steps=1, num_inference_steps=1)
