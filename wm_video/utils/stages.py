"""A resumable chain of ``wm-video`` commands, each run as its own process: what the suites under ``eval/`` (the
fidelity suite, the multi-domain comparison) build their world models with.

A stage is ``(name, marker, args)``: ``python -m wm_video ARGS`` runs unless ``marker`` (the file the stage writes
last) exists, so rerunning a suite resumes after its last finished stage. Each stage's CPU seconds (user + system
time of its process tree) and wall seconds go to a JSON file beside the outputs, written atomically.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wm_video.utils.atomic import atomic_write_json

Stage = tuple[str, Path, list[str]]


def cpu_seconds_of_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_stages(stages: list[Stage], timings_file: Path, label: str) -> dict[str, Any]:
    """Run each stage whose marker is missing, in order; returns (and keeps in ``timings_file``) the seconds of every
    stage run so far, by name. SystemExit naming the stage and its command when one fails. ``label`` prefixes the
    progress lines (e.g. the suite and the environment)."""
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    for name, marker, args in stages:
        if marker.exists():
            print(f"[{label}] {name} already done, skipped", flush=True)
            continue
        print(f"\n[{label}] {name}: wm-video {' '.join(args)}", flush=True)
        cpu0, t0 = cpu_seconds_of_children(), time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "wm_video", *args])
        if proc.returncode != 0:
            raise SystemExit(f"{label}: stage '{name}' failed with exit status {proc.returncode} "
                             f"(command: wm-video {' '.join(args)})")
        timings[name] = {"cpu_s": round(cpu_seconds_of_children() - cpu0, 1),
                         "wall_s": round(time.perf_counter() - t0, 1)}
        timings_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(timings_file, timings)
    return timings
