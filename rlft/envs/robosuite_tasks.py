"""robosuite 1.5.2 manipulation tasks as gymnasium envs: Panda, OSC_POSE at 20 Hz, sparse success reward.

``lift``, ``can`` and ``square`` are robosuite's Lift, PickPlaceCan and NutAssemblySquare as robomimic and DPPO
run them: a Panda arm under the OSC_POSE controller (delta end-effector pose in [-1, 1], 0.05 m and 0.5 rad per
unit, plus the gripper: 7-D action), 20 control steps per second, the time limits of DPPO's configs (lift and can
300 steps, square 400). The observation is robomimic's low-dim keys flattened in the order of :data:`OBS_KEYS`
(end-effector position and quaternion, finger positions, then robosuite's ``object-state``): lift 19, can and
square 23 numbers, as in DPPO. The reward is 1 on the step the task's own success check first holds, 0 otherwise,
and the episode ends there (``terminated``; ``info["success"]``); DPPO's sparse reward without its success
threshold bookkeeping.

robosuite is optional (the ``robosuite`` extra, installed by ``make install``); it is imported when the first
env is made. Frames come from MuJoCo's renderer on the task's ``agentview`` camera (``render()``; set
``MUJOCO_GL=egl`` without a display).
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np

from rlft.errors import ConfigError

# short name -> (robosuite env, gymnasium id, time limit in control steps: DPPO's robomimic configs)
TASKS: dict[str, tuple[str, str, int]] = {
    "lift": ("Lift", "rlft/Lift-v0", 300),
    "can": ("PickPlaceCan", "rlft/Can-v0", 300),
    "square": ("NutAssemblySquare", "rlft/Square-v0", 400),
}
OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object-state")
PROPRIO_KEYS = OBS_KEYS[:3]  # the state beside the cameras in image mode (DPPO's pixel tasks): 9 numbers
CAMERAS = ("agentview", "robot0_eye_in_hand")  # robomimic's image tasks: the front view and the wrist camera
CAMERA_SIZE = 84
OBJECT_DIMS = {"lift": 10, "can": 14, "square": 14}
CONTROL_FREQ = 20


# robosuite's import warns about macro files and the mink IK the Panda tasks do not need: errors only
logging.getLogger("robosuite_logs").addFilter(lambda record: record.levelno >= logging.ERROR)


def import_robosuite() -> Any:
    """robosuite, or a one-line ConfigError saying how to install it."""
    try:
        import robosuite
    except ImportError:
        raise ConfigError("the manipulation tasks need robosuite 1.5.2: run make install (it installs the robosuite extra)") from None
    return robosuite


class RobosuiteTask(gym.Env):
    """One robosuite task (:data:`TASKS`) as a gymnasium env with flat low-dim observations and a sparse success reward.

    ``reset(seed=s)`` re-seeds robosuite's own generator (object placement, initial joint noise), so an episode is
    a function of its seed. ``render()`` returns an ``image_size`` square RGB frame of ``camera``.

    ``obs_mode="image"`` (the ``<task>_img`` envs) observes a dict as robomimic's image datasets hold it: ``state``
    (end-effector position, quaternion, finger positions: 9 numbers), ``object`` (robosuite's object-state, for
    scripted demonstrators and critics; pixel policies leave it out, as DPPO's) and one ``camera_size`` square uint8
    RGB image per camera in :data:`CAMERAS` (rendered offscreen by robosuite, upright). ``state`` then ``object``
    is the state task's flat observation.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ}

    def __init__(
        self,
        task: str,
        render_mode: str | None = None,
        camera: str = "agentview",
        image_size: int = 256,
        obs_mode: str = "state",
        camera_size: int = CAMERA_SIZE,
    ):
        if task not in TASKS:
            raise ConfigError(f"unknown robosuite task '{task}'; choose one of: {', '.join(TASKS)}")
        if obs_mode not in ("state", "image"):
            raise ConfigError(f"unknown obs_mode '{obs_mode}' for {task}; choose state or image")
        suite = import_robosuite()
        from robosuite.controllers import load_composite_controller_config

        self.task, self.render_mode, self.camera, self.image_size, self.obs_mode = task, render_mode, camera, image_size, obs_mode
        images = obs_mode == "image"
        cameras = {"camera_names": list(CAMERAS), "camera_heights": camera_size, "camera_widths": camera_size} if images else {}
        self.sim_env = suite.make(
            TASKS[task][0],
            robots="Panda",
            controller_configs=load_composite_controller_config(controller="BASIC"),  # OSC_POSE arm, robomimic's gains
            has_renderer=False,
            has_offscreen_renderer=images,
            use_camera_obs=images,
            **cameras,
            use_object_obs=True,
            reward_shaping=False,
            control_freq=CONTROL_FREQ,
            horizon=10**9,  # the time limit is gymnasium's TimeLimit
            ignore_done=True,
            hard_reset=False,  # keep the compiled model across episodes (robosuite rebuilds it otherwise)
            seed=0,
        )
        if images:
            image = gym.spaces.Box(0, 255, (camera_size, camera_size, 3), np.uint8)
            flat = {"state": 9, "object": OBJECT_DIMS[task]}
            self.observation_space: gym.Space = gym.spaces.Dict(
                {k: gym.spaces.Box(-np.inf, np.inf, (d,), np.float32) for k, d in flat.items()} | {c: image for c in CAMERAS}
            )
        else:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (9 + OBJECT_DIMS[task],), np.float32)
        low, high = self.sim_env.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self._renderer: Any = None

    def _observe(self, obs: dict[str, np.ndarray]) -> Any:
        if self.obs_mode == "state":
            return np.concatenate([np.asarray(obs[k], dtype=np.float32).ravel() for k in OBS_KEYS])
        state = np.concatenate([np.asarray(obs[k], dtype=np.float32).ravel() for k in PROPRIO_KEYS])
        flat = {"state": state, "object": np.asarray(obs["object-state"], dtype=np.float32)}
        # robosuite renders in OpenGL's convention (row 0 at the bottom): flip rows to the usual upright image
        return flat | {c: np.ascontiguousarray(obs[f"{c}_image"][::-1]) for c in CAMERAS}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:  # the generator object is shared with robosuite's placement sampler: set its state
            self.sim_env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self.sim_env.reset()
        # robosuite's reset leaves the object-to-gripper observables at zero until the first step: read them afresh
        return self._observe(self.sim_env._get_observations(force_update=True)), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, _, _, _ = self.sim_env.step(np.asarray(action, dtype=np.float64))
        success = bool(self.sim_env._check_success())
        return self._observe(obs), float(success), success, False, {"success": success}

    def render(self) -> np.ndarray:
        import mujoco

        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.sim_env.sim.model._model, self.image_size, self.image_size)
        self._renderer.update_scene(self.sim_env.sim.data._data, camera=self.camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.sim_env.close()


def image_id(gym_id: str) -> str:
    """The image-observation twin of a task's id: ``rlft/Lift-v0`` -> ``rlft/LiftImage-v0``."""
    return gym_id.replace("-v0", "Image-v0")


for _name, (_, _id, _limit) in TASKS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=RobosuiteTask, max_episode_steps=_limit, kwargs={"task": _name})
        gym.register(id=image_id(_id), entry_point=RobosuiteTask, max_episode_steps=_limit, kwargs={"task": _name, "obs_mode": "image"})
