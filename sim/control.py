"""End-effector delta control: action in [-1, 1]^4 -> joint servo targets via DLS IK.

Action layout (4,):
    [0:3]  TCP displacement request, scaled by `max_delta` metres per control step, world frame
    [3]    gripper: -1 fully open (8 cm jaw), +1 fully closed; absolute, not a delta

The hand's orientation is held fixed (pointing down, jaw closing along world x). Every task
here is solvable top-down, and dropping rotation from the action makes both the scripted
experts and learned policies much simpler; a later issue can add a yaw channel.

The controller keeps a TCP target in `data.userdata[:3]` (so it is part of the MuJoCo state
and survives mj_getState/mj_setState): each action moves the target, and the target is
leashed to stay within `leash` of the measured TCP, so nothing winds up when the hand is
blocked. A zero action holds position exactly. Each control step solves one
damped-least-squares IK step from the measured pose towards the target, plus a null-space
pull towards the home posture so the redundant elbow does not drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from sim.robot import FINGER_OPEN, RobotConfig, RobotIds


@dataclass(frozen=True, kw_only=True)
class ControlConfig:
    """Control rate, action scaling and IK settings."""

    control_hz: float = 20.0
    """Policy / action rate (Hz). With the 5 ms physics step that is 10 substeps per action."""
    max_delta: float = 0.03
    """TCP displacement (m) requested by an action component of 1 (0.6 m/s at 20 Hz)."""
    workspace_low: tuple[float, float, float] = (0.2, -0.4, 0.02)
    """Lower TCP bound (m); z = 0.02 puts the fingertips on the table top."""
    workspace_high: tuple[float, float, float] = (0.8, 0.4, 0.55)
    """Upper TCP bound (m)."""
    leash: float = 0.05
    """Largest distance (m) the TCP target may run ahead of the measured TCP; bounds the
    force a blocked hand applies and the catch-up motion after it is freed."""
    ik_damping: float = 0.05
    """DLS damping lambda; trades accuracy near singularities for smooth joint motion."""
    orientation_gain: float = 0.8
    """Fraction of the orientation error corrected per step."""
    nullspace_gain: float = 0.1
    """Fraction of the distance to the home posture corrected per step, in the null space."""
    overshoot: float = 1.0
    """Servo target = q + overshoot * dq: compensates the lag of the position servos so a
    commanded displacement is mostly achieved within one control step."""


# Hand orientation held by the controller: z down, jaw (hand y) along world -x.
HAND_DOWN = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


class EEController:
    """Maps a 4-d action to arm and gripper servo targets for one model/data pair."""

    def __init__(
        self,
        model: mujoco.MjModel,
        ids: RobotIds,
        config: ControlConfig | None = None,
        robot: RobotConfig | None = None,
    ) -> None:
        self.config = cfg = config or ControlConfig()
        self.model = model
        self.ids = ids
        self.substeps = max(1, round(1.0 / (cfg.control_hz * model.opt.timestep)))
        self.low = np.array(cfg.workspace_low)
        self.high = np.array(cfg.workspace_high)
        self.home = np.array((robot or RobotConfig()).home_qpos)  # (7,)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._eye6 = np.eye(6) * cfg.ik_damping**2
        dof = ids.dof
        contiguous = np.array_equal(dof, np.arange(dof[0], dof[0] + 7))
        self._dof = slice(int(dof[0]), int(dof[0]) + 7) if contiguous else dof
        self._qpos = ids.qpos
        self._act = ids.arm_act
        self._quat_down = np.zeros(4)
        mujoco.mju_mat2Quat(self._quat_down, HAND_DOWN.reshape(-1))
        self._quat = np.zeros(4)
        self._rot = np.zeros(3)
        self._rot_world = np.zeros(3)
        self._err = np.zeros(6)
        self._y = np.zeros(6)
        self._jac = np.zeros((6, 7))

    def reset(self, data: mujoco.MjData) -> None:
        """Set the TCP target to the current TCP (call after mj_forward at reset)."""
        data.userdata[:3] = data.site_xpos[self.ids.tcp]
        data.ctrl[self._act] = data.qpos[self._qpos]

    def apply(self, data: mujoco.MjData, action: np.ndarray) -> None:
        """Write servo targets for `action` (4,) into data.ctrl; does not step physics."""
        cfg = self.config
        tcp = data.site_xpos[self.ids.tcp]
        err = self._err  # (6,): position error, then orientation error as a rotation vector
        goal = data.userdata[:3]  # persistent TCP target, part of the MuJoCo state
        goal += action[:3] * cfg.max_delta
        np.minimum(np.maximum(goal, self.low, out=goal), self.high, out=goal)
        err[:3] = goal - tcp
        dist = float(np.sqrt(err[:3] @ err[:3]))
        if dist > cfg.leash:  # blocked or lagging: keep the target within reach
            err[:3] *= cfg.leash / dist
            goal[:] = tcp + err[:3]
        mujoco.mju_mat2Quat(self._quat, data.site_xmat[self.ids.tcp])
        mujoco.mju_subQuat(self._rot, self._quat_down, self._quat)  # in the hand frame
        mujoco.mju_rotVecQuat(self._rot_world, self._rot, self._quat)
        err[3:] = cfg.orientation_gain * self._rot_world
        mujoco.mj_jacSite(self.model, data, self._jacp, self._jacr, self.ids.tcp)
        jac = self._jac  # (6, 7)
        jac[:3] = self._jacp[:, self._dof]
        jac[3:] = self._jacr[:, self._dof]
        q = data.qpos[self._qpos]
        z = cfg.nullspace_gain * (self.home - q)  # (7,) posture pull
        # dq = J+ err + (I - J+ J) z  ==  z + J^T (J J^T + l^2 I)^-1 (err - J z): one solve.
        gram = jac @ jac.T + self._eye6
        mujoco.mju_cholFactor(gram, 0.0)
        mujoco.mju_cholSolve(self._y, gram, err - jac @ z)
        dq = z + jac.T @ self._y
        data.ctrl[self._act] = q + cfg.overshoot * dq
        data.ctrl[self.ids.gripper_act] = FINGER_OPEN * 0.5 * (1.0 - float(action[3]))
