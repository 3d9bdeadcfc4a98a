"""The ``--device`` every verb takes: ``auto`` (the default) picks the GPU when there is one."""

from __future__ import annotations

DEVICE_HELP = "auto (cuda when a GPU is visible, else cpu), cpu, cuda or cuda:N"


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; any other name is checked, so a wrong one (or
    ``cuda`` on a machine without a GPU) is a ValueError before any work."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise ValueError(f"--device {device!r}: not a device; use {DEVICE_HELP}") from e
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no GPU is visible to torch; use --device auto or cpu")
    return device
