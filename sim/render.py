"""Offscreen camera rendering for observations, videos and re-rendering stored episodes.

Headless: `import sim` sets MUJOCO_GL=egl unless the caller chose a backend, because the GL
backend is fixed when mujoco is first imported. If EGL is missing on a machine, run with
MUJOCO_GL=osmesa (software, slower). Scenes are built with shadows and multisampling off,
which is what makes an 84x84 frame cost well under a millisecond.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

IMAGE_SIZES = (84, 128)
"""The image sizes the project uses (square, pixels); any size up to 256 works."""


class CameraRenderer:
    """Renders named cameras of one model at one square size, returning (H, W, 3) uint8."""

    def __init__(self, model: mujoco.MjModel, size: int = 84) -> None:
        limit = min(model.vis.global_.offwidth, model.vis.global_.offheight)
        if size > limit:
            raise ValueError(f"image size {size} exceeds the offscreen buffer ({limit} px)")
        try:
            self._renderer = mujoco.Renderer(model, size, size)
        except Exception as err:  # no GL context: say how to get one
            backend = os.environ.get("MUJOCO_GL", "")
            raise RuntimeError(
                f"could not create an offscreen GL context (MUJOCO_GL={backend!r}); "
                "on a headless machine install EGL or set MUJOCO_GL=osmesa before "
                "importing sim"
            ) from err
        self.size = size

    def render(self, data: mujoco.MjData, camera: str | int) -> np.ndarray:
        """One frame (size, size, 3) uint8 from `camera` for the current `data`."""
        self._renderer.update_scene(data, camera)
        return self._renderer.render()

    def close(self) -> None:
        self._renderer.close()


def render_states(
    model: mujoco.MjModel,
    states: np.ndarray,
    camera: str,
    size: int = 84,
    state_spec: int | None = None,
) -> np.ndarray:
    """Re-render a stored trajectory: states (T, S) from mj_getState -> frames (T, H, W, 3).

    `model` must carry the episode's domain-randomisation condition (camera jitter, object
    sizes), e.g. an env reset with the episode's seed and variation.
    """
    if state_spec is None:
        from sim.env import STATE_SPEC as state_spec
    data = mujoco.MjData(model)
    renderer = CameraRenderer(model, size)
    frames = np.empty((len(states), size, size, 3), np.uint8)
    try:
        for t, state in enumerate(states):
            mujoco.mj_setState(model, data, np.asarray(state, np.float64), state_spec)
            mujoco.mj_forward(model, data)
            frames[t] = renderer.render(data, camera)
    finally:
        renderer.close()
    return frames
