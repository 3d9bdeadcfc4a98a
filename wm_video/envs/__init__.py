"""Real simulators (Atari, gymnasium classic control / box2d / MuJoCo, Meta-World) behind one interface.

Importing this package imports no simulator: each is imported when an env of its family is made, and a
missing one raises :class:`MissingExtraError` naming the ``sim`` extra.
"""

from __future__ import annotations

from wm_video.envs.base import SimEnv, StepResult, UnknownEnvError
from wm_video.envs.policies import Policy, make_policy
from wm_video.envs.registry import list_env_ids, make_env
from wm_video.utils.extras import MissingExtraError

__all__ = [
    "MissingExtraError",
    "Policy",
    "SimEnv",
    "StepResult",
    "UnknownEnvError",
    "list_env_ids",
    "make_env",
    "make_policy",
]
