"""Fast CPU rendering for MuJoCo-based envs (gymnasium MuJoCo and Meta-World).

Without a GPU, MuJoCo renders through software GL (EGL on Mesa llvmpipe). MuJoCo's defaults render a
shadow map per light, a reflection pass and 4x multisampling: about 30 frames/s at 64x64 on one core.
Turning those off gives about 500-700 frames/s with a picture that differs only in shading detail.
"""

from __future__ import annotations

import os
from typing import Any


def ensure_gl_backend() -> None:
    """Pick EGL (works headless, no GPU needed) unless the user chose a backend; must run before MuJoCo's GL
    context is made, which is why adapters call it before importing the simulator."""
    os.environ.setdefault("MUJOCO_GL", "egl")


def make_render_fast(env: Any, render_mode: str = "rgb_array") -> None:
    """Switch off shadows, reflections and multisampling for ``env`` (an unwrapped gymnasium ``MujocoEnv``).

    ``offsamples`` and ``shadowsize`` are read when the GL context is made, so they are set on the model first;
    the scene flags live on the viewer's ``MjvScene`` and persist across ``mjv_updateScene``, so one render
    creates the viewer and the flags are cleared on it.
    """
    import mujoco  # the 'sim' extra: imported only for MuJoCo envs

    env.model.vis.quality.offsamples = 0  # no multisample buffer
    env.model.vis.quality.shadowsize = 0  # no shadow-map texture
    renderer = env.mujoco_renderer
    renderer.render(render_mode)  # creates the offscreen viewer with the settings above
    scene = renderer.viewer.scn
    scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def render_rgb(env: Any) -> Any:
    """Render an RGB frame from ``env`` (an unwrapped ``MujocoEnv`` whose viewer exists).

    The GL context is made current first: another env's viewer being garbage-collected in this process
    releases whatever context is current (mujoco's EGL ``free`` calls ``eglMakeCurrent(NO_CONTEXT)``), after
    which renders silently come out black. Making it current costs a few microseconds per frame.
    """
    renderer = env.mujoco_renderer
    if renderer.viewer is not None:
        renderer.viewer.make_context_current()
    return renderer.render("rgb_array")


def free_renderer(env: Any) -> None:
    """Free the viewer's GL resources now, with its own context current; call before ``env.close()``.

    Otherwise the ``MjrContext`` is freed whenever Python collects it, into whatever GL context is current
    then: GL object ids are per-context small integers, so it deletes the framebuffers of a newer env in the
    same process, which then renders all-black frames.
    """
    viewer = getattr(env, "mujoco_renderer", None) and env.mujoco_renderer.viewer
    if viewer is not None and getattr(viewer, "con", None) is not None:
        viewer.make_context_current()
        viewer.con.free()
