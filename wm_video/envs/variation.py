"""Domain variation of a simulator: the typed config :class:`Variation` and the frame-level colour transform.

A :class:`Variation` changes how a simulated world looks (colours, light, camera) and moves (mass, friction,
damping). Every field takes either one number, the same for every episode (a fixed shifted world, e.g. the unseen
"real" domain of a sim-to-real stand-in), or a range ``[low, high]`` drawn uniformly per episode (domain
randomisation of pretraining data). :meth:`Variation.draw` turns ranges into numbers with a given RNG;
:meth:`wm_video.envs.base.SimEnv.set_variation` applies numbers from the next reset on.

Scene and dynamics fields need a MuJoCo env (gymnasium MuJoCo, Meta-World) and are applied to its ``MjModel``
(:mod:`wm_video.envs.mujoco_variation`); the ``frame_*`` fields transform the rendered frames of any env.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

Value = float | list[float]  # a number, or [low, high] drawn uniformly per episode

# Lower bounds of the fields that are factors (a factor of 0 would remove mass, or light the scene black).
_POSITIVE = ("light", "camera_distance", "mass_scale", "frame_brightness")
_NON_NEGATIVE = ("friction_scale", "damping_scale")
FRAME_FIELDS = ("frame_hue", "frame_brightness")


@dataclass
class Variation:
    """How a simulated domain differs from the simulator's own; the defaults change nothing.

    Every field is a number (fixed) or ``[low, high]`` (uniform per episode).

    Scene (MuJoCo envs only):
        hue: degrees by which the hue of every geom, material, site and texture colour is rotated (0).
        light: factor on the diffuse and ambient colour of every light and of the headlight (1).
        camera_azimuth: degrees the camera orbits about the vertical axis through the point it looks at (0).
        camera_elevation: degrees the camera orbits up (its view direction tilts up by as much) (0).
        camera_distance: factor on the camera's distance to the point it looks at (1).

    Dynamics (MuJoCo envs only):
        mass_scale: factor on every body's mass and inertia (1).
        friction_scale: factor on every geom's contact friction and every joint's dry friction (1).
        damping_scale: factor on every joint's damping (1).

    Frames (any env):
        frame_hue: degrees by which the rendered frames' hue is rotated, as CSS ``hue-rotate()`` (0).
        frame_brightness: factor on the rendered frames' pixel values, clipped to 255 (1).
    """

    hue: Value = 0.0
    light: Value = 1.0
    camera_azimuth: Value = 0.0
    camera_elevation: Value = 0.0
    camera_distance: Value = 1.0
    mass_scale: Value = 1.0
    friction_scale: Value = 1.0
    damping_scale: Value = 1.0
    frame_hue: Value = 0.0
    frame_brightness: Value = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _checked(f.name, getattr(self, f.name)))

    @property
    def is_default(self) -> bool:
        return not self.changed()

    @property
    def is_random(self) -> bool:
        """True when some field is a range, drawn per episode."""
        return any(isinstance(getattr(self, f.name), list) for f in dataclasses.fields(self))

    def changed(self) -> list[str]:
        """The fields that differ from the default (ranges always do), in declaration order."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]

    def to_dict(self) -> dict[str, Any]:
        """The changed fields only (plain floats and lists): what collect.json, dataset.json and clips record.
        Leaving defaults out keeps the records of unvaried data as they were and old records valid."""
        return {name: getattr(self, name) for name in self.changed()}

    def draw(self, rng: np.random.Generator) -> Variation:
        """A fixed variation: every range replaced by a uniform draw from ``rng``, numbers kept. Ranges are drawn
        in field order, one number each, so a draw depends only on the ranges and the RNG's state."""
        values = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            values[f.name] = float(rng.uniform(v[0], v[1])) if isinstance(v, list) else v
        return Variation(**values)


def _checked(name: str, value: Any) -> float | list[float]:
    where = f"field 'variation.{name}'"
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"{where} must be a number or a range [low, high], got {list(value)!r}")
        low, high = (_number(where, v) for v in value)
        if low > high:
            raise ValueError(f"{where}: range [low, high] needs low <= high, got [{low}, {high}]")
        _check_bound(name, where, low)
        return [low, high]
    v = _number(where, value)
    _check_bound(name, where, v)
    return v


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number or a range [low, high], got {value!r}")
    return float(value)


def _check_bound(name: str, where: str, low: float) -> None:
    if name in _POSITIVE and low <= 0:
        raise ValueError(f"{where} is a factor and must be > 0, got {low}")
    if name in _NON_NEGATIVE and low < 0:
        raise ValueError(f"{where} is a factor and must be >= 0, got {low}")


def hue_matrix(degrees: float) -> np.ndarray:
    """The 3x3 RGB matrix rotating hue by ``degrees`` about the grey axis, keeping luminance (the W3C filter
    effects ``hue-rotate`` matrix). Linear, so frames, colours and textures all turn the same way."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([
        [0.213 + 0.787 * c - 0.213 * s, 0.715 - 0.715 * c - 0.715 * s, 0.072 - 0.072 * c + 0.928 * s],
        [0.213 - 0.213 * c + 0.143 * s, 0.715 + 0.285 * c + 0.140 * s, 0.072 - 0.072 * c - 0.283 * s],
        [0.213 - 0.213 * c - 0.787 * s, 0.715 - 0.715 * c + 0.715 * s, 0.072 + 0.928 * c + 0.072 * s],
    ])


def transform_frame(frame: np.ndarray, variation: Variation) -> np.ndarray:
    """``frame`` (uint8 ``(h, w, 3)``) with the variation's frame hue and brightness; the frame itself when both
    are the defaults."""
    if variation.frame_hue == 0.0 and variation.frame_brightness == 1.0:
        return frame
    m = hue_matrix(variation.frame_hue) * variation.frame_brightness  # (3, 3)
    out = frame.astype(np.float32) @ m.T.astype(np.float32)  # (h, w, 3)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
