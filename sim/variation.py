"""Domain-randomisation knobs, sampled per episode and applied to the compiled model in place.

A `Variation` holds ranges; `Variation.sample` draws one *condition* (plain floats, JSON-ready,
recorded in each episode's metadata), and `ModelVariator.apply` writes a condition into the
model. A later "targeted refinement" step picks a condition where the policy fails and pins it
with `Variation.at(...)` (every range collapsed to one value) to collect more data there.

Everything is applied to the MjModel arrays directly, never by recompiling: a reset stays
sub-millisecond. Geometry changes also update the broad-phase bounds (rbound, aabb).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import mujoco
import numpy as np

from sim.scene import CAMERAS


@dataclass(frozen=True, kw_only=True)
class Variation:
    """Ranges (lo, hi) of per-episode multipliers and jitter magnitudes; defaults vary nothing."""

    object_mass: tuple[float, float] = (1.0, 1.0)
    """Multiplier on the mass and inertia of the task's movable objects."""
    object_size: tuple[float, float] = (1.0, 1.0)
    """Multiplier on the size of the task's graspable objects (cubes)."""
    friction: tuple[float, float] = (1.0, 1.0)
    """Multiplier on the sliding friction of the table and the task's objects."""
    actuator_gain: tuple[float, float] = (1.0, 1.0)
    """Multiplier on the arm servos' stiffness (a weaker or stiffer robot)."""
    camera_pos: tuple[float, float] = (0.0, 0.0)
    """Range of the per-axis camera position offset (m); sampled per camera and axis."""
    camera_rot: tuple[float, float] = (0.0, 0.0)
    """Range of the camera rotation (rad) about a random axis; sampled per camera."""

    @classmethod
    def at(cls, **values: float) -> Variation:
        """A variation pinned to one condition, e.g. `Variation.at(friction=0.5)`."""
        return cls(**{k: (float(v), float(v)) for k, v in values.items()})

    def sample(self, rng: np.random.Generator) -> dict:
        """Draw one condition. Always consumes the same number of draws, so a seed gives
        the same task layout whatever the ranges are."""
        cond: dict = {}
        for f in fields(self):
            lo, hi = getattr(self, f.name)
            if f.name.startswith("camera_"):
                continue
            cond[f.name] = float(rng.uniform(lo, hi))
        pos_lo, pos_hi = self.camera_pos
        rot_lo, rot_hi = self.camera_rot
        for cam in CAMERAS:
            sign = rng.choice([-1.0, 1.0], size=3)
            offset = sign * rng.uniform(pos_lo, pos_hi, size=3)
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            angle = float(rng.uniform(rot_lo, rot_hi))
            cond[f"camera_{cam}"] = {
                "offset": [float(x) for x in offset],
                "axis": [float(x) for x in axis],
                "angle": angle,
            }
        return cond


VARIATIONS: dict[str, Variation] = {
    "none": Variation(),
    "mild": Variation(
        object_mass=(0.8, 1.25),
        object_size=(0.9, 1.1),
        friction=(0.8, 1.2),
        actuator_gain=(0.9, 1.1),
        camera_pos=(0.0, 0.01),
        camera_rot=(0.0, 0.03),
    ),
    "wide": Variation(
        object_mass=(0.5, 2.0),
        object_size=(0.8, 1.2),
        friction=(0.5, 1.5),
        actuator_gain=(0.7, 1.3),
        camera_pos=(0.0, 0.03),
        camera_rot=(0.0, 0.08),
    ),
}
"""Named presets: `none` (default), `mild` and `wide` domain randomisation."""


class ModelVariator:
    """Remembers a model's nominal values and writes sampled conditions over them."""

    def __init__(
        self,
        model: mujoco.MjModel,
        *,
        mass_bodies: list[int],
        size_geoms: list[int],
        friction_geoms: list[int],
        arm_actuators: np.ndarray,
    ) -> None:
        self.model = model
        self.mass_bodies = np.array(mass_bodies, int)
        self.size_geoms = np.array(size_geoms, int)
        self.friction_geoms = np.array(friction_geoms, int)
        self.arm_act = np.asarray(arm_actuators, int)
        self.cams = np.array([model.camera(c).id for c in CAMERAS], int)
        m = model
        self._mass = m.body_mass[self.mass_bodies].copy()
        self._inertia = m.body_inertia[self.mass_bodies].copy()
        self._size = m.geom_size[self.size_geoms].copy()
        self._rbound = m.geom_rbound[self.size_geoms].copy()
        self._aabb = m.geom_aabb[self.size_geoms].copy()
        self._friction = m.geom_friction[self.friction_geoms, 0].copy()
        self._gain = m.actuator_gainprm[self.arm_act, 0].copy()
        self._bias = m.actuator_biasprm[self.arm_act, 1].copy()
        self._cam_pos = m.cam_pos[self.cams].copy()
        self._cam_quat = m.cam_quat[self.cams].copy()

    def apply(self, cond: dict, data: mujoco.MjData) -> None:
        """Write condition `cond` (from Variation.sample) into the model, then recompute the
        model's derived constants (mj_setConst): stale body weights after a mass change make
        the contact solver unstable. `data` is scratch space (reset it afterwards)."""
        m = self.model
        mass = cond["object_mass"]
        m.body_mass[self.mass_bodies] = self._mass * mass
        size = cond["object_size"]
        m.body_inertia[self.mass_bodies] = self._inertia * mass
        m.geom_size[self.size_geoms] = self._size * size
        m.geom_rbound[self.size_geoms] = self._rbound * size
        m.geom_aabb[self.size_geoms] = self._aabb * size
        m.geom_friction[self.friction_geoms, 0] = self._friction * cond["friction"]
        gain = cond["actuator_gain"]
        m.actuator_gainprm[self.arm_act, 0] = self._gain * gain
        m.actuator_biasprm[self.arm_act, 1] = self._bias * gain
        for i, cam in enumerate(CAMERAS):
            jitter = cond[f"camera_{cam}"]
            m.cam_pos[self.cams[i]] = self._cam_pos[i] + np.array(jitter["offset"])
            rot = np.zeros(4)
            mujoco.mju_axisAngle2Quat(rot, np.array(jitter["axis"]), jitter["angle"])
            quat = np.zeros(4)
            mujoco.mju_mulQuat(quat, self._cam_quat[i], rot)
            m.cam_quat[self.cams[i]] = quat
        mujoco.mj_setConst(m, data)
