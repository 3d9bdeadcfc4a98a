"""What every part's export shares: a folder with ``config.json`` + ``model.safetensors`` (huggingface_hub's
``PyTorchModelHubMixin`` writes and reads them), checked before loading so a wrong folder gets a clear error; and,
when the part came out of ``wm-video train``, ``quality.json``: its held-out metrics and quality-gate verdicts
(:mod:`wm_video.training.quality`), which later stages read (a failed reward head's captions are left out)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
QUALITY = "quality.json"


def check_export(path: Path, config_cls: type, kind: str, required: set[str]) -> None:
    """Clear errors for a folder that is not a ``kind`` export: what is missing, or which config fields are off.

    Fields added to ``config_cls`` after an export was made take their defaults; unknown fields, or missing
    ``required`` ones, mean another kind of model."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; a {kind} export holds {CONFIG} and {WEIGHTS}")
    missing = [name for name in (CONFIG, WEIGHTS) if not (path / name).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not a {kind} export: missing {', '.join(missing)}")
    config = json.loads((path / CONFIG).read_text())
    known = {f.name for f in fields(config_cls)}
    unknown, absent = sorted(set(config) - known), sorted(required - set(config))
    if unknown or absent:
        raise ValueError(f"{path / CONFIG} is not a {kind} config: unknown fields {unknown}, missing {absent}")


def read_quality(path: str | Path) -> dict[str, Any] | None:
    """The ``quality.json`` of an export folder, or None when there is none (a part not made by ``wm-video train``,
    or made before the gates existed) or it is unreadable."""
    file = Path(path) / QUALITY
    try:
        return json.loads(file.read_text()) if file.is_file() else None
    except (OSError, ValueError):
        return None
