"""The report of a closed-loop run (``wm-video plan`` / ``imagine-train``): each agent's returns, its margin over
the random policy on the same episode seeds, speed and the compute used; as JSON and as a short Markdown page."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from wm_video.utils.atomic import atomic_write_bytes, atomic_write_json
from wm_video.utils.machine import machine_record


def add_margins(results: dict[str, dict[str, Any]]) -> None:
    """Give each agent's summary its margin over ``random`` (in return units and in standard errors of the
    difference), where the random policy ran."""
    base = results.get("random")
    if base is None:
        return
    for name, r in results.items():
        if name != "random":
            se = math.hypot(r["stderr"], base["stderr"])
            r["margin_over_random"] = r["mean"] - base["mean"]
            r["margin_stderrs"] = (r["mean"] - base["mean"]) / se if se > 0 else None


def compute_record(device: str, wall_s: float) -> dict[str, Any]:
    """Where a run ran (:func:`~wm_video.utils.machine.machine_record` on ``device``) and how long it took
    (``wall_seconds``)."""
    return {**machine_record(device=device), "wall_seconds": wall_s}


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``out/report.json`` and ``out/report.md``; returns their paths."""
    out = Path(out)
    paths = [out / "report.json", out / "report.md"]
    atomic_write_json(paths[0], report)
    atomic_write_bytes(paths[1], markdown(report).encode())
    return paths


def markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown page: returns per agent, the margin over random, speed, compute."""
    title = report["kind"]
    lines = [f"# {title}: {report.get('env')}", "", f"Model: `{report['model']}`", ""]
    if report.get("training"):
        t = report["training"]
        last = t["history"][-1] if t["history"] else {}
        lines += [f"Training: {t['iterations']} steps in {t['seconds']:.1f} s, {t['imagined_frames']} imagined frames "
                  f"({t['imagined_frames_per_s']:.1f}/s); last imagined return {last.get('imagined_return', 0):.3f}, "
                  f"critic loss {last.get('critic_loss', 0):.4f}.", ""]
    if report["results"]:
        lines += ["| agent | episodes | mean return | std | stderr | margin over random (stderrs) | decisions/s | "
                  "imagined frames/s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, r in report["results"].items():
            margin = r.get("margin_stderrs")
            lines.append(f"| {name} | {r['episodes']} | {r['mean']:.2f} | {r['std']:.2f} | {r['stderr']:.2f} | "
                         f"{'-' if margin is None else f'{margin:.1f}'} | {r['decisions_per_s']:.2f} | "
                         f"{r['imagined_frames_per_s']:.1f} |")
        lines.append("")
    c = report["compute"]
    lines += [f"Compute: {c['wall_seconds']:.1f} s wall on {c['gpu'] or c['device']} ({c['cpus']} CPUs, "
              f"{c['threads']} torch threads).", "", "Settings:", "", "```",
              *(f"{k}: {v}" for k, v in report["settings"].items()), "```", ""]
    return "\n".join(lines)
