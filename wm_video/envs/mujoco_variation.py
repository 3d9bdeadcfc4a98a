"""A :class:`~wm_video.envs.variation.Variation`'s scene and dynamics fields applied to a MuJoCo env's ``MjModel``.

:class:`MujocoVariation` keeps the model's own values (copied the first time a group of fields changes) and sets
each group from them, so any sequence of variations leaves the model as the last one alone would. Groups whose
values did not change since the last call are not touched: the default variation on a fresh env writes nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wm_video.envs.base import require_sim
from wm_video.envs.variation import Variation, hue_matrix

COLOUR = ("hue",)
LIGHT = ("light",)
CAMERA = ("camera_azimuth", "camera_elevation", "camera_distance")
DYNAMICS = ("mass_scale", "friction_scale", "damping_scale")
SCENE_FIELDS = COLOUR + LIGHT + CAMERA + DYNAMICS
DEFAULT = Variation()
_MAX_ELEVATION = 89.0  # degrees; at +-90 the view direction is vertical and the azimuth undefined


class MujocoVariation:
    """Applies variations to ``env`` (an unwrapped gymnasium ``MujocoEnv``, Meta-World's included) whose offscreen
    viewer already exists (:func:`wm_video.envs.mujoco_render.make_render_fast` makes it)."""

    def __init__(self, env: Any) -> None:
        self.mujoco = require_sim("mujoco")  # the 'sim' extra, which made env: importing this module needs none
        self.env = env
        self.model = env.model
        self._base: dict[str, np.ndarray] = {}
        self._applied: dict[tuple[str, ...], tuple[float, ...]] = {}  # each group's values in the model now

    def apply(self, v: Variation) -> None:
        """Set the model (and the free camera) to ``v``'s scene and dynamics values; call before a reset."""
        for names, setter in ((COLOUR, self._colours), (LIGHT, self._lights), (CAMERA, self._camera),
                              (DYNAMICS, self._dynamics)):
            values = tuple(getattr(v, n) for n in names)
            if values != self._applied.get(names, tuple(getattr(DEFAULT, n) for n in names)):
                setter(v)
                self._applied[names] = values

    def _keep(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        for name, a in arrays.items():
            if name not in self._base:
                self._base[name] = np.array(a, copy=True)
        return {name: self._base[name] for name in arrays}

    def _colours(self, v: Variation) -> None:
        m = self.model
        base = self._keep(geom_rgba=m.geom_rgba, mat_rgba=m.mat_rgba, site_rgba=m.site_rgba, tex_data=m.tex_data)
        rot = hue_matrix(v.hue)  # (3, 3)
        for name in ("geom_rgba", "mat_rgba", "site_rgba"):
            getattr(m, name)[:, :3] = np.clip(base[name][:, :3] @ rot.T, 0.0, 1.0)
        if m.ntex == 0:
            return
        tex, out = base["tex_data"], m.tex_data
        for i in range(m.ntex):
            nc = int(m.tex_nchannel[i])
            if nc < 3:
                continue
            start, n = int(m.tex_adr[i]), int(m.tex_width[i] * m.tex_height[i] * nc)
            px = tex[start:start + n].reshape(-1, nc)[:, :3].astype(np.float32) @ rot.T.astype(np.float32)  # (p, 3)
            np.rint(px, out=px)
            np.clip(px, 0, 255, out=px)
            out[start:start + n].reshape(-1, nc)[:, :3] = px
        self._upload_textures()

    def _upload_textures(self) -> None:
        viewer = self.env.mujoco_renderer.viewer
        viewer.make_context_current()
        for i in range(self.model.ntex):
            self.mujoco.mjr_uploadTexture(self.model, viewer.con, i)

    def _lights(self, v: Variation) -> None:
        m, head = self.model, self.model.vis.headlight
        base = self._keep(light_diffuse=m.light_diffuse, light_ambient=m.light_ambient,
                          head_diffuse=head.diffuse, head_ambient=head.ambient)
        m.light_diffuse[:] = base["light_diffuse"] * v.light
        m.light_ambient[:] = base["light_ambient"] * v.light
        head.diffuse[:] = base["head_diffuse"] * v.light
        head.ambient[:] = base["head_ambient"] * v.light

    def _camera(self, v: Variation) -> None:
        cam_id = self.env.mujoco_renderer.camera_id
        if cam_id is None or cam_id < 0:
            self._free_camera(v)
        else:
            self._fixed_camera(v, int(cam_id))

    def _free_camera(self, v: Variation) -> None:
        cam = self.env.mujoco_renderer.viewer.cam
        base = self._keep(free_cam=np.array([cam.azimuth, cam.elevation, cam.distance]))["free_cam"]
        _check_elevation(base[1], v.camera_elevation)
        cam.azimuth = base[0] + v.camera_azimuth
        cam.elevation = base[1] + v.camera_elevation
        cam.distance = base[2] * v.camera_distance

    def _fixed_camera(self, v: Variation, cam_id: int) -> None:
        m, mujoco = self.model, self.mujoco
        if m.cam_bodyid[cam_id] != 0 or m.cam_mode[cam_id] != mujoco.mjtCamLight.mjCAMLIGHT_FIXED:
            name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, cam_id)
            raise ValueError(f"the camera fields of 'variation' move a camera fixed in the world; camera {name!r} "
                             "is attached to a body or follows one")
        base = self._keep(cam_pos=m.cam_pos[cam_id], cam_quat=m.cam_quat[cam_id])
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, base["cam_quat"])
        axes = rot.reshape(3, 3)  # columns: the camera's x (right), y (up), z (backwards) in its body's frame
        pos, forward = base["cam_pos"], -axes[:, 2]
        _check_elevation(math.degrees(math.asin(np.clip(forward[2], -1.0, 1.0))), v.camera_elevation)
        # The point it looks at: where its view axis passes closest to the model's centre (at least 10 cm ahead).
        pivot = pos + forward * max(float(np.dot(m.stat.center - pos, forward)), 0.1)
        side = np.cross(forward, [0.0, 0.0, 1.0])
        side = side / (np.linalg.norm(side) or 1.0)
        turn = _rotation([0.0, 0.0, 1.0], v.camera_azimuth) @ _rotation(side, v.camera_elevation)  # (3, 3)
        m.cam_pos[cam_id] = pivot + turn @ (pos - pivot) * v.camera_distance
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, (turn @ axes).reshape(-1))
        m.cam_quat[cam_id] = quat

    def _dynamics(self, v: Variation) -> None:
        m = self.model
        base = self._keep(body_mass=m.body_mass, body_inertia=m.body_inertia, dof_armature=m.dof_armature,
                          geom_friction=m.geom_friction, dof_frictionloss=m.dof_frictionloss, dof_damping=m.dof_damping)
        m.body_mass[:] = base["body_mass"] * v.mass_scale
        m.body_inertia[:] = base["body_inertia"] * v.mass_scale
        m.dof_armature[:] = base["dof_armature"] * v.mass_scale
        m.geom_friction[:] = base["geom_friction"] * v.friction_scale
        m.dof_frictionloss[:] = base["dof_frictionloss"] * v.friction_scale
        m.dof_damping[:] = base["dof_damping"] * v.damping_scale
        # Derived constants (subtree masses, the inverse weights that scale constraint softness) as the compiler
        # would have set them for these masses; it overwrites the data, which the reset that follows sets again.
        self.mujoco.mj_setConst(m, self.env.data)


def _check_elevation(base: float, delta: float) -> None:
    """``base``: degrees the camera's view points above the horizon; ``delta``: the variation's tilt."""
    if abs(base + delta) > _MAX_ELEVATION:
        raise ValueError(f"field 'variation.camera_elevation' ({delta:+g}) would tilt the camera's view from "
                         f"{base:+.1f} to {base + delta:+.1f} degrees above the horizon, past +-{_MAX_ELEVATION:g}")


def _rotation(axis: Any, degrees: float) -> np.ndarray:
    """The 3x3 rotation by ``degrees`` about the unit vector ``axis`` (right-handed)."""
    x, y, z = axis
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + s * k + (1 - c) * (k @ k)
