"""Scoring protocols: the world model's open-loop rollout and its report (JSON, Markdown, plots), and the dynamics
model's held-out teacher-forced scores (:mod:`.dynamics_scores`, shared by training, fine-tuning and eval/)."""

from wm_video.evaluation.report import write_report
from wm_video.evaluation.rollout_eval import EvalConfig, evaluate_world_model

__all__ = ["EvalConfig", "evaluate_world_model", "write_report"]
