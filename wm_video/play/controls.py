"""What a key, a gamepad or a slider means in ``wm-video play``: the world model's actions as controls.

The server owns the mapping (the page shows it and sends what is held), so one place decides, and tests check it
without a browser:

- a discrete Atari model (the dataset's source is an ``ALE/...`` game with the full 18-action set): the arrow keys
  and Space are the joystick and the fire button, and the held combination picks the action (Up+Right+Space:
  ``UPRIGHTFIRE``); nothing held is ``NOOP``;
- any other discrete model: one key per action, ``1``..``9``, ``0``, then ``q``, ``w``, ... (the first action,
  id 0, when nothing is held);
- a continuous model: one slider per action dimension, and a pair of keys per dimension that push it to its low or
  high bound while held (``a``/``d``, ``s``/``w``, ``j``/``l``, ``k``/``i``, ...);
- an action-free model: the null action, no controls.

Keys are ``KeyboardEvent.key`` names (``ArrowUp``, `` `` for Space, ``a``). A gamepad's d-pad and left stick send the
arrow keys and its first button Space (discrete), or its axes move the sliders (continuous): the page turns them
into the same messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wm_video.data.reader import load_dataset_info

# The full ALE action set, in its order (ale_py's Action enum): what each id does with the joystick and fire button.
ALE_FULL = ("NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT", "UPFIRE",
            "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE")
JOYSTICK_KEYS = {"UP": "ArrowUp", "DOWN": "ArrowDown", "LEFT": "ArrowLeft", "RIGHT": "ArrowRight", "FIRE": " "}
DISCRETE_KEYS = tuple("1234567890qwertyuiopzxcvbnm")
CONTINUOUS_KEYS = (("a", "d"), ("s", "w"), ("j", "l"), ("k", "i"), ("f", "h"), ("g", "t"), ("z", "c"), ("x", "e"))


def ale_meanings(env_id: str | None, n: int) -> tuple[str, ...] | None:
    """The meaning of each of ``n`` discrete actions of an ALE game: the full set when ``n`` is 18, else the
    game's minimal set as ale_py reports it (None without ale_py, or for a non-ALE source)."""
    if not env_id or not env_id.startswith("ALE/"):
        return None
    if n == len(ALE_FULL):
        return ALE_FULL
    try:  # a minimal action set: ask the emulator (the sim extra); a missing ROM or package leaves generic keys
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        env = gym.make(env_id)
        try:
            meanings = tuple(env.unwrapped.get_action_meanings())
        finally:
            env.close()
    except Exception:
        return None
    return meanings if len(meanings) == n else None


def _parts(meaning: str) -> frozenset[str]:
    """``UPRIGHTFIRE`` -> {UP, RIGHT, FIRE}."""
    return frozenset(p for p in ("UP", "DOWN", "LEFT", "RIGHT", "FIRE") if p in meaning)


@dataclass
class Controls:
    """The controls of one world model (see the module docstring).

    Args:
        kind: ``discrete``, ``continuous`` or ``none``.
        n: discrete actions.
        low, high: continuous bounds per dimension.
        meanings: a name per discrete action (joystick mode when they are ALE meanings).
    """

    kind: str
    n: int = 0
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    meanings: tuple[str, ...] | None = None

    @property
    def joystick(self) -> bool:
        return self.kind == "discrete" and self.meanings is not None and "NOOP" in self.meanings

    @property
    def keys(self) -> dict[str, str]:
        """key -> what it does, for the page's table."""
        if self.kind == "discrete":
            if self.joystick:
                used = set().union(*(_parts(m) for m in self.meanings or ()))
                return {JOYSTICK_KEYS[p]: p.lower() for p in ("UP", "DOWN", "LEFT", "RIGHT", "FIRE") if p in used}
            return {k: self.name(i) for i, k in enumerate(DISCRETE_KEYS[: self.n])}
        if self.kind == "continuous":
            out = {}
            for d, (lo, hi) in enumerate(CONTINUOUS_KEYS[: len(self.low)]):
                out[lo], out[hi] = f"action[{d}] -> {self.low[d]:g}", f"action[{d}] -> {self.high[d]:g}"
            return out
        return {}

    def name(self, action: int) -> str:
        return self.meanings[action] if self.meanings else f"action {action}"

    def unmapped(self, held: list[str]) -> list[str]:
        """The held keys that mean nothing here (ignored; the page says so)."""
        keys = self.keys
        return [k for k in held if k not in keys]

    def action(self, held: list[str], sliders: list[float] | None = None) -> int | np.ndarray:
        """The action for the keys ``held`` (in the order pressed) and the slider values (continuous)."""
        if self.kind == "discrete":
            return self._discrete(held)
        if self.kind == "continuous":
            low, high = np.asarray(self.low, np.float32), np.asarray(self.high, np.float32)
            value = (low + high) / 2 if sliders is None else np.asarray(sliders, np.float32)
            if value.shape != low.shape:
                raise ValueError(f"sliders: expected {low.shape[0]} values, got {value.shape}")
            value = np.clip(value, low, high)
            for d, (lo, hi) in enumerate(CONTINUOUS_KEYS[: low.shape[0]]):
                at_lo, at_hi = (held.index(k) if k in held else -1 for k in (lo, hi))
                if max(at_lo, at_hi) >= 0:  # the key pressed last wins
                    value[d] = low[d] if at_lo > at_hi else high[d]
            return value
        return 0

    def _discrete(self, held: list[str]) -> int:
        if not self.joystick:
            ids = [DISCRETE_KEYS.index(k) for k in held if k in DISCRETE_KEYS[: self.n]]
            return ids[-1] if ids else 0  # the key pressed last
        want = frozenset(p for p, k in JOYSTICK_KEYS.items() if k in held)
        if {"UP", "DOWN"} <= want:  # opposite directions cancel
            want -= {"UP", "DOWN"}
        if {"LEFT", "RIGHT"} <= want:
            want -= {"LEFT", "RIGHT"}
        best, best_size = self.meanings.index("NOOP"), -1  # type: ignore[union-attr]
        for i, m in enumerate(self.meanings or ()):  # the action doing most of what is held and nothing else
            parts = _parts(m)
            if parts <= want and len(parts) > best_size:
                best, best_size = i, len(parts)
        return best

    def describe(self) -> dict[str, Any]:
        """What the page needs: the kind, the key table, the action names or bounds."""
        return {"kind": self.kind, "keys": self.keys, "joystick": self.joystick,
                "actions": [self.name(i) for i in range(self.n)] if self.kind == "discrete" else None,
                "low": self.low, "high": self.high}


def controls_for(model: Any) -> Controls:
    """The controls of a loaded :class:`~wm_video.world_model.WorldModel` (its dynamics config and index)."""
    c = model.dynamics.config
    if c.action_type == "discrete":
        env_id = (model.info.source or {}).get("env") or _dataset_env(model)
        return Controls("discrete", n=c.num_actions, meanings=ale_meanings(env_id, c.num_actions))
    if c.action_type == "continuous":
        space, stats = model.info.action_space, (model.info.stats.get("actions") or {})
        low, high = space.get("low", stats.get("min")), space.get("high", stats.get("max"))
        if low is None or high is None:
            low, high = [-1.0] * c.action_dim, [1.0] * c.action_dim
        return Controls("continuous", low=[float(x) for x in low], high=[float(x) for x in high])
    return Controls("none")


def _dataset_env(model: Any) -> str | None:
    """The simulator id of the dataset the world model was exported with, when its ``dataset.json`` is there."""
    data = (model.info.source or {}).get("data")
    try:
        return load_dataset_info(data).source.get("env") if data else None
    except (OSError, ValueError):
        return None
