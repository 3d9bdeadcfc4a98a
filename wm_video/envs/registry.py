"""Environment ids: :func:`make_env` dispatches an id to its adapter, :func:`list_env_ids` lists them.

``ALE/...`` goes to Atari, ``metaworld/...`` to Meta-World, anything else to gymnasium.
"""

from __future__ import annotations

import difflib

from wm_video.envs.atari import AtariEnv, register_atari
from wm_video.envs.base import SimEnv, UnknownEnvError, require_sim
from wm_video.envs.gym_env import GymEnv
from wm_video.envs.metaworld_env import PREFIX, MetaWorldEnv, task_names
from wm_video.envs.variation import Variation

FAMILIES = ("atari", "gymnasium", "metaworld")
LIST_HINT = "run 'wm-video data envs' to list valid ids"
# gymnasium modules whose envs render rgb_array frames with what the sim extra installs.
_GYM_MODULES = ("gymnasium.envs.classic_control", "gymnasium.envs.box2d", "gymnasium.envs.mujoco")


def family_of(env_id: str) -> str:
    """``atari`` | ``metaworld`` | ``gymnasium``, from the id's prefix alone."""
    if env_id.startswith("ALE/"):
        return "atari"
    if env_id.startswith("metaworld/"):
        return "metaworld"
    return "gymnasium"


def _atari_ids() -> list[str]:
    gym = require_sim("gymnasium")
    register_atari()
    return sorted(k for k in gym.registry if k.startswith("ALE/"))


def _gym_ids() -> list[str]:
    gym = require_sim("gymnasium")
    ids = []
    for env_id, spec in gym.registry.items():
        entry = spec.entry_point
        # Entry points that are functions are the stubs gymnasium keeps for removed mujoco-py versions.
        if isinstance(entry, str) and entry.startswith(_GYM_MODULES):
            ids.append(env_id)
    return ids


def _metaworld_ids() -> list[str]:
    return [PREFIX + t for t in task_names()]


def list_env_ids(family: str | None = None) -> list[str]:
    """Valid ids for ``family`` (``atari`` | ``gymnasium`` | ``metaworld``) or for all, in that order.

    Nothing is instantiated: Atari and gymnasium ids come from gymnasium's registry, Meta-World's from its
    task table. Raises :class:`MissingExtraError` when a needed simulator package is not installed.
    """
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown env family '{family}'; choose one of {FAMILIES}")
    listers = {"atari": _atari_ids, "gymnasium": _gym_ids, "metaworld": _metaworld_ids}
    return [i for fam in FAMILIES if family in (None, fam) for i in listers[fam]()]


def _unknown(env_id: str, known: list[str]) -> UnknownEnvError:
    close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return UnknownEnvError(f"unknown environment id '{env_id}'; {hint}{LIST_HINT}")


def make_env(env_id: str, size: int = 64, max_episode_steps: int | None = None,
             variation: Variation | None = None) -> SimEnv:
    """Make the simulator for ``env_id`` rendering ``size`` x ``size`` RGB frames.

    Args:
        env_id: ``ALE/<Game>-v5``, a gymnasium id that renders rgb frames (``CartPole-v1``, ``LunarLander-v3``,
            ``Pusher-v5``, ...) or ``metaworld/<task>-v3``.
        size: frame height and width in pixels (default 64).
        max_episode_steps: episode cap in steps (default: the env's own; 200 for Meta-World).
        variation: a fixed domain variation shown from the first reset on (default: none; see
            :meth:`SimEnv.set_variation`).

    Raises:
        ValueError: ``variation`` holds ranges or fields this env cannot apply.
        UnknownEnvError: no installed simulator has this id (the message names close matches).
        MissingExtraError: the simulator package for this id is not installed.
    """
    family = family_of(env_id)
    known = list_env_ids(family)
    if env_id not in known:
        if family == "gymnasium":
            # Other registered gymnasium envs (toy_text, third-party) may render rgb too: let the adapter try.
            gym = require_sim("gymnasium")
            if env_id not in gym.registry or not isinstance(gym.registry[env_id].entry_point, str):
                raise _unknown(env_id, list_env_ids())
        else:
            raise _unknown(env_id, known)
    if family == "atari":
        env: SimEnv = AtariEnv(env_id, size, max_episode_steps)
    elif family == "metaworld":
        env = MetaWorldEnv(env_id, size, max_episode_steps)
    else:
        env = GymEnv(env_id, size, max_episode_steps)
    if variation is not None:
        try:
            env.set_variation(variation)
        except ValueError:
            env.close()
            raise
    return env
