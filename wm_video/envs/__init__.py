"""Real simulators (Atari, gymnasium classic control / box2d / MuJoCo, Meta-World) behind one interface.

Importing this package imports no simulator: each is imported when an env of its family is made, and a
missing one raises :class:`MissingExtraError` naming the ``sim`` extra.

The world model as a gymnasium env (``WorldModelGymEnv``, ``WorldModelVectorEnv``, :mod:`.world_model_gym`) is
imported, and ``wm_video/WorldModel-v0`` registered, on first use of either name (or of that module)::

    from wm_video.envs import WorldModelGymEnv     # or: import wm_video.envs.world_model_gym
    env = gymnasium.make("wm_video/WorldModel-v0", model="runs/wm")
"""

from __future__ import annotations

from wm_video.envs.base import SimEnv, StepResult, UnknownEnvError
from wm_video.envs.policies import Policy, make_policy
from wm_video.envs.registry import list_env_ids, make_env
from wm_video.utils.extras import MissingExtraError

_GYM = ("WorldModelGymEnv", "WorldModelVectorEnv")


def __getattr__(name: str) -> object:
    if name in _GYM:  # imports gymnasium, which importing this package must not
        from wm_video.envs import world_model_gym

        return getattr(world_model_gym, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MissingExtraError",
    "Policy",
    "SimEnv",
    "StepResult",
    "UnknownEnvError",
    "WorldModelGymEnv",
    "WorldModelVectorEnv",
    "list_env_ids",
    "make_env",
    "make_policy",
]
