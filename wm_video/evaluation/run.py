"""``evaluate_folder``: the rollout protocol on a world-model folder, with its report written; what ``wm-video eval``
runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wm_video.evaluation.report import write_report
from wm_video.evaluation.rollout_eval import EvalConfig, evaluate_world_model
from wm_video.utils.device import resolve_device
from wm_video.world_model import WorldModel


def evaluate_folder(model: str | Path, data: str | Path, cfg: EvalConfig, out: str | Path, device: str = "auto"
                    ) -> tuple[dict[str, Any], list[Path]]:
    """Score the world model in folder ``model`` on the held-out clips of dataset ``data``; write the report
    (report.json, report.md, one plot per metric) into ``out``. Returns the report and the paths written.

    ``device``: ``auto`` (cuda when a GPU is visible, else cpu), ``cpu`` or ``cuda``."""
    wm = WorldModel.from_pretrained(model).for_domain(cfg.domain).to(resolve_device(device))
    report = evaluate_world_model(wm, str(data), cfg, folder=str(model))
    report["model"] = str(model)
    return report, write_report(report, out)
