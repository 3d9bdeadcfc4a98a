"""World-model evaluation: the open-loop rollout protocol and its report (JSON, Markdown, plots)."""

from wm_video.evaluation.report import write_report
from wm_video.evaluation.rollout_eval import EvalConfig, evaluate_world_model

__all__ = ["EvalConfig", "evaluate_world_model", "write_report"]
