"""The error for an optional extra that is not installed, shared by every floor that imports one lazily."""

from __future__ import annotations


class MissingExtraError(ImportError):
    """An optional package is not installed: a simulator (gymnasium, ale-py, mujoco, metaworld; the ``sim`` extra),
    DeepSpeed, or the feature-distance weights (``fd``). The message names the extra that provides it."""
