"""What a training checkpoint records to rebuild its part: the model's class and its actual config, as plain values.

Written into every checkpoint by :mod:`.checkpointing` (``export``) and read back by :mod:`.consolidate`; kept in
its own module so the two need not import each other.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn


def export_info(model: nn.Module) -> dict[str, Any]:
    """What rebuilds ``model`` from plain values: ``{"target": "module:Class", "config": {...}}``."""
    cls = type(model)
    config = model.config
    return {"target": f"{cls.__module__}:{cls.__qualname__}",
            "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)}
