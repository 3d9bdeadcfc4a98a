"""Scripted experts for a few gymnasium envs, from their low-dim observations.

They are simple controllers, not optimal ones: good enough to give a world model purposeful, varied
behaviour to learn from (and a baseline that clearly beats random actions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from wm_video.envs.base import Expert

# Pendulum-v1 dynamics: theta'' = 3g/(2l) sin(theta) + 3/(m l^2) u, with g=10, m=l=1, |u| <= 2.
_PEND_A, _PEND_MAX_TORQUE = 15.0, 2.0


def cartpole(env: Any) -> Expert:
    """Push the cart toward where the pole is falling: sign of angle + 0.5 s * angular velocity."""
    def act(obs: np.ndarray) -> int:
        _, _, theta, theta_dot = obs
        return int(theta + 0.5 * theta_dot > 0)  # 1 pushes right
    return act


def mountain_car(env: Any) -> Expert:
    """Push in the direction of travel: pumps energy until the car clears the right hill."""
    def act(obs: np.ndarray) -> int:
        return 2 if obs[1] >= 0 else 0  # 2: accelerate right, 0: left
    return act


def mountain_car_continuous(env: Any) -> Expert:
    def act(obs: np.ndarray) -> np.ndarray:
        return np.array([1.0 if obs[1] >= 0 else -1.0], dtype=np.float32)
    return act


def pendulum(env: Any) -> Expert:
    """Energy-based swing-up, PD control once near the top.

    With E = theta_dot^2 / 2 + a cos(theta) (a = 15), dE/dt = 3 u theta_dot, so u = k (E_top - E) theta_dot
    pumps energy toward the upright value E_top = a. Near the top (cos > 0.9) a PD law holds it up.
    """
    def act(obs: np.ndarray) -> np.ndarray:
        cos, sin, theta_dot = (float(x) for x in obs)
        theta = float(np.arctan2(sin, cos))  # 0 is upright
        if cos > 0.9:
            u = -12.0 * theta - 2.5 * theta_dot
        else:
            energy = 0.5 * theta_dot**2 + _PEND_A * cos
            u = 0.5 * (_PEND_A - energy) * (theta_dot if abs(theta_dot) > 1e-3 else 1.0)
        return np.array([np.clip(u, -_PEND_MAX_TORQUE, _PEND_MAX_TORQUE)], dtype=np.float32)
    return act


def inverted_pendulum(env: Any) -> Expert:
    """A linear state-feedback balancer for the MuJoCo cart-pole (obs: cart x, pole angle, their velocities).

    Gains found by a small grid search: it holds the pole up for the whole episode, and with Gaussian action noise
    of std 2 (the ``noisy`` policy) it still lets the pole fall in about half the episodes, which is the mix of
    balancing and falling a world model needs to learn the termination.
    """
    gains = np.array([1.0, 20.0, 1.0, 2.0])

    def act(obs: np.ndarray) -> np.ndarray:
        return np.clip(np.array([gains @ np.asarray(obs, dtype=np.float64)], dtype=np.float32), -3.0, 3.0)
    return act


def lunar_lander(env: Any) -> Expert:
    """gymnasium's own PID heuristic (``gymnasium.envs.box2d.lunar_lander.heuristic``), both action kinds."""
    from gymnasium.envs.box2d.lunar_lander import heuristic  # the 'sim' extra: imported only for this env

    continuous = bool(env.unwrapped.continuous)

    def act(obs: np.ndarray) -> int | np.ndarray:
        a = heuristic(env, obs)
        return np.clip(np.asarray(a, dtype=np.float32), -1, 1) if continuous else int(a)
    return act


# Keyed by the id's name without its version, so e.g. CartPole-v0 and -v1 share one expert.
EXPERTS: dict[str, Callable[[Any], Expert]] = {
    "CartPole": cartpole,
    "MountainCar": mountain_car,
    "MountainCarContinuous": mountain_car_continuous,
    "Pendulum": pendulum,
    "InvertedPendulum": inverted_pendulum,
    "LunarLander": lunar_lander,
    "LunarLanderContinuous": lunar_lander,
}


def expert_name(env_id: str) -> str:
    """``CartPole-v1`` -> ``CartPole`` (the key into :data:`EXPERTS`)."""
    return env_id.rsplit("/", 1)[-1].rsplit("-v", 1)[0]
