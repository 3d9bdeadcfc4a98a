"""Small shared helpers: progress display that suits both terminals and batch logs."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from wm_video.utils.atomic import atomic_write_bytes


def interactive() -> bool:
    """True on a terminal outside a SLURM batch job: show progress bars; otherwise print plain log lines."""
    in_batch = "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    return sys.stderr.isatty() and not in_batch


def progress(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
             enable: bool | None = None) -> Any:
    """A tqdm bar on terminals; under batch jobs a bar that prints a line at most every 30 s."""
    from tqdm.auto import tqdm

    show = interactive() if enable is None else enable
    if show:
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, mininterval=30, ascii=True, file=sys.stderr,
                disable=enable is False)


def emit_json(result: dict, out: str | None = None) -> None:
    """Print an evaluation or benchmark result as indented JSON, and also write it to ``out`` when given
    (atomically: a result file is whole or absent)."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        atomic_write_bytes(out, (text + "\n").encode())
