"""FlywheelEnv: one task, the arm, the controller and the cameras behind the Gymnasium API.

Observation: a Dict of float32 vectors (robot + task keys, see ROBOT_OBS and each task's
obs_shapes) plus one (H, W, 3) uint8 image per requested camera, keyed by camera name.
Action: Box(-1, 1, (4,)) = TCP displacement (x, y, z) and gripper, see sim.control.
Info per step: `success` (sparse, bool) and `reward_terms` (the scaled dense terms whose sum
is the reward). Reset info: `seed` and `randomisation` (`condition`: the domain-randomisation
draw, `layout`: the task's sampled prop placement), both JSON-ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from sim.control import ControlConfig, EEController
from sim.render import CameraRenderer
from sim.robot import RobotConfig, RobotIds
from sim.scene import CAMERAS, SceneConfig, new_spec
from sim.tasks import make_task
from sim.tasks.base import Task, TaskConfig
from sim.variation import VARIATIONS, ModelVariator, Variation

ROBOT_OBS: dict[str, tuple[int, ...]] = {
    "joint_pos": (7,),
    "joint_vel": (7,),
    "ee_pos": (3,),
    "ee_target_offset": (3,),
    "gripper_width": (1,),
}
"""Robot observation keys and shapes, shared by every task.

`ee_target_offset` is the controller's TCP target minus the TCP (m, at most its `leash`): how
far the hand will still travel under a zero action. The target is state (sim.control) that
nothing else shows, and without it a policy cannot stop a carried cube on a point: pick_place
refinement overshot the goal by 3-6 cm in a third of its failures, and with this key it went
from 0.77 to 0.86 success at 100k env steps (docs/benchmarks.md). Real arms' Cartesian
controllers report their commanded pose as well."""

_BADQACC = int(mujoco.mjtWarning.mjWARN_BADQACC)
_S = mujoco.mjtState
STATE_SPEC = int(_S.mjSTATE_INTEGRATION) & ~int(_S.mjSTATE_QFRC_APPLIED | _S.mjSTATE_XFRC_APPLIED)
"""mj_getState signature used for stored states: everything needed to resume bit-exactly
(time, qpos, qvel, warm start, ctrl, mocap poses, the controller's TCP target in userdata);
applied forces are left out because nothing here applies any (they would triple the size)."""


@dataclass(frozen=True, kw_only=True)
class EnvConfig:
    """Settings shared by every task's env."""

    control: ControlConfig = field(default_factory=ControlConfig)
    """Control rate, action scaling and IK."""
    robot: RobotConfig = field(default_factory=RobotConfig)
    """Arm parameters."""
    scene: SceneConfig = field(default_factory=SceneConfig)
    """Solver and camera settings."""
    init_joint_noise: float = 0.02
    """Uniform noise (rad) on each arm joint at reset, so start poses differ a little."""


class FlywheelEnv(gym.Env):
    """A single simulated episode stream for one task."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str | Task = "lift",
        *,
        task_config: TaskConfig | None = None,
        config: EnvConfig | None = None,
        variation: Variation | str = "none",
        cameras: tuple[str, ...] | list[str] = (),
        image_size: int = 84,
        render_mode: str | None = None,
        render_size: int = 128,
    ) -> None:
        self.config = cfg = config or EnvConfig()
        self.task = task if isinstance(task, Task) else make_task(task, task_config)
        self.variation = VARIATIONS[variation] if isinstance(variation, str) else variation
        unknown = set(cameras) - set(CAMERAS)
        if unknown:
            raise ValueError(f"unknown cameras {sorted(unknown)}; have {list(CAMERAS)}")
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self.render_mode = render_mode
        self.render_size = render_size
        self.metadata = {**self.metadata, "render_fps": cfg.control.control_hz}

        spec = new_spec(cfg.robot, cfg.scene)
        self.task.build(spec)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self.ids = RobotIds.lookup(self.model)
        self.task.bind(self.model, self.ids)
        self.controller = EEController(self.model, self.ids, cfg.control, cfg.robot)
        parts = self.task.variable_parts(self.model)
        self.variator = ModelVariator(
            self.model,
            mass_bodies=parts["mass_bodies"],
            size_geoms=parts["size_geoms"],
            friction_geoms=[self.model.geom("table").id, *parts["friction_geoms"]],
            arm_actuators=self.ids.arm_act,
        )
        self._home = np.array(cfg.robot.home_qpos)
        self._dt = 1.0 / cfg.control.control_hz
        self._renderers: dict[int, CameraRenderer] = {}  # one per image size
        self._t = 0
        self.state_size = mujoco.mj_stateSize(self.model, STATE_SPEC)

        spaces: dict[str, gym.spaces.Space] = {
            k: gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
            for k, shape in {**ROBOT_OBS, **self.task.obs_shapes}.items()
        }
        for cam in self.cameras:
            spaces[cam] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    # ------------------------------------------------------------------ gym API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episode. options["condition"] pins a domain-randomisation condition (a dict as
        found in a previous reset's info["randomisation"]["condition"])."""
        super().reset(seed=seed)
        rng = self.np_random
        m, d = self.model, self.data
        cond = self.variation.sample(rng)
        if options and "condition" in options:
            cond = options["condition"]
        self.variator.apply(cond, d)
        mujoco.mj_resetData(m, d)
        noise = self.config.init_joint_noise
        d.qpos[self.ids.qpos] = self._home + rng.uniform(-noise, noise, 7)
        d.qpos[self.ids.finger_qpos] = 0.04
        layout = self.task.reset(m, d, rng)
        mujoco.mj_forward(m, d)
        self.controller.reset(d)
        d.ctrl[self.ids.gripper_act] = 0.04
        self._t = 0
        info = {
            "seed": seed,
            "randomisation": {"condition": cond, "layout": layout},
            "success": False,
        }
        return self._observe(), info

    def step(self, action):
        act = np.asarray(action, np.float64).reshape(4)
        act = np.minimum(np.maximum(act, -1.0), 1.0)  # (np.clip is 3x slower on 4 values)
        self.controller.apply(self.data, act)
        mujoco.mj_step(self.model, self.data, self.controller.substeps)
        # mj_step leaves positions-derived quantities (site poses, contacts) one substep
        # stale; refresh them so obs, reward and the next control step see the current state
        # and a stored state (get_state) resumes bit-exactly.
        mujoco.mj_forward(self.model, self.data)
        self._t += 1
        obs = self._observe()
        terms, success = self.task.evaluate(self.data, obs)
        reward = float(sum(terms.values()))
        terminated = bool(success and self.task.config.terminate_on_success)
        truncated = bool(self._t >= self.task.config.max_steps and not terminated)
        info = {"success": bool(success), "reward_terms": terms}
        if self.data.warning[_BADQACC].number > 0:  # MuJoCo reset itself: end the episode
            truncated = True
            info["sim_unstable"] = True
        return obs, reward, terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self.render_camera("front", self.render_size)

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # ------------------------------------------------------------------ extras

    @property
    def elapsed_steps(self) -> int:
        return self._t

    @property
    def time(self) -> float:
        """Seconds since the episode started (control steps x control period)."""
        return self._t * self._dt

    def get_state(self) -> np.ndarray:
        """The full MuJoCo state (state_size,) float64; see STATE_SPEC."""
        state = np.empty(self.state_size)
        mujoco.mj_getState(self.model, self.data, state, STATE_SPEC)
        return state

    def set_state(self, state: np.ndarray) -> None:
        """Restore a state from get_state (same model condition assumed)."""
        mujoco.mj_setState(self.model, self.data, np.asarray(state, np.float64), STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)

    def render_camera(self, camera: str, size: int | None = None) -> np.ndarray:
        """Render any camera now, (size, size, 3) uint8, independent of the obs cameras."""
        size = size or self.image_size
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = CameraRenderer(self.model, size)
        return renderer.render(self.data, camera)

    def _observe(self) -> dict[str, np.ndarray]:
        d, ids = self.data, self.ids
        tcp = d.site_xpos[ids.tcp]
        obs = {
            "joint_pos": d.qpos[ids.qpos].astype(np.float32),
            "joint_vel": d.qvel[ids.dof].astype(np.float32),
            "ee_pos": tcp.astype(np.float32),
            "gripper_width": np.array([d.qpos[ids.finger_qpos].sum()], np.float32),
            "ee_target_offset": (d.userdata[:3] - tcp).astype(np.float32),
        }
        self.task.observe(d, obs)
        for cam in self.cameras:
            obs[cam] = self.render_camera(cam, self.image_size)
        return obs
