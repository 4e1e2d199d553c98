"""Gymnasium's v5 locomotion tasks (Hopper, Walker2d, HalfCheetah, Ant) as batched array functions.

Observation, reward and termination are written once over an array namespace ``xp`` (numpy for the
native backend, ``jax.numpy`` for MJX), for all sub-envs at once. The parameters and their defaults are
read from gymnasium's own env constructors, so keyword overrides use gymnasium's names.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import expand_model_path

from rlft.errors import ConfigError

Params = dict[str, Any]

# gymnasium multiplies the float32 sum of squared actions by a Python float: a float32 product under
# numpy 2 (NEP 50), a float64 one under numpy 1.x. The control cost follows whichever numpy is here.
_COST_DTYPE = (np.float32(1) * 1.0).dtype


def _hopper_healthy(xp: Any, p: Params, qpos: Any, qvel: Any) -> Any:
    low, high = p["healthy_state_range"]
    state = xp.concatenate([qpos[:, 2:], qvel], axis=1)
    return xp.all((low < state) & (state < high), axis=1) & _walker_healthy(xp, p, qpos, qvel)


def _walker_healthy(xp: Any, p: Params, qpos: Any, qvel: Any) -> Any:
    (z_low, z_high), (a_low, a_high) = p["healthy_z_range"], p["healthy_angle_range"]
    z, angle = qpos[:, 1], qpos[:, 2]
    return (z_low < z) & (z < z_high) & (a_low < angle) & (angle < a_high)


def _ant_healthy(xp: Any, p: Params, qpos: Any, qvel: Any) -> Any:
    z_low, z_high = p["healthy_z_range"]
    finite = xp.isfinite(qpos).all(axis=1) & xp.isfinite(qvel).all(axis=1)
    return finite & (z_low <= qpos[:, 2]) & (qpos[:, 2] <= z_high)


@dataclass(frozen=True)
class LocomotionTask:
    """How one gymnasium v5 locomotion task builds its observation, reward and termination."""

    gym_id: str
    entry: Callable[..., gym.Env]  # gymnasium's env class: its constructor defaults are the parameters
    params: tuple[str, ...]  # constructor keywords reproduced here
    skipped_qpos: int  # leading qpos entries (x, or x and y) left out of the observation
    qvel_clip: float | None  # observations clip qvel to [-c, c]
    qvel_noise: str  # reset noise on qvel: "uniform" in [-s, s] or "normal" with std s
    healthy: Callable[[Any, Params, Any, Any], Any] | None
    contact_forces: bool = False  # Ant: cfrc_ext (after mj_rnePostConstraint) in the observation and the contact cost

    def observe(self, xp: Any, p: Params, qpos: Any, qvel: Any, cfrc: Any) -> Any:
        """obs (n, obs_dim) from qpos (n, nq), qvel (n, nv) and cfrc_ext (n, nbody, 6)."""
        parts = [qpos[:, self.skipped_qpos :], qvel if self.qvel_clip is None else xp.clip(qvel, -self.qvel_clip, self.qvel_clip)]
        if self.contact_forces and p["include_cfrc_ext_in_observation"]:
            forces = xp.clip(cfrc[:, 1:], *p["contact_force_range"])
            parts.append(forces.reshape(forces.shape[0], -1))
        return xp.concatenate(parts, axis=1)

    def reward_and_termination(self, xp: Any, p: Params, qpos: Any, qvel: Any, cfrc: Any, x_velocity: Any, actions: Any) -> tuple[Any, Any]:
        """reward (n,) and terminated (n,) after a step; ``actions`` (n, act_dim) float32 as given."""
        reward = p["forward_reward_weight"] * x_velocity
        if self.healthy is not None:
            healthy = self.healthy(xp, p, qpos, qvel)
            reward = reward + healthy * p["healthy_reward"]
            terminated = ~healthy & p["terminate_when_unhealthy"]
        else:
            terminated = xp.zeros(qpos.shape[0], dtype=bool)
        # As gymnasium: on the action as given (MuJoCo clamps ctrl itself), summed in float32.
        squares = xp.square(actions).sum(axis=1)
        cost = p["ctrl_cost_weight"] * (squares.astype(_COST_DTYPE) if xp is np else squares)
        if self.contact_forces:
            cost = cost + p["contact_cost_weight"] * xp.square(xp.clip(cfrc, *p["contact_force_range"])).sum(axis=(1, 2))
        return reward - cost, terminated


def _tasks() -> dict[str, LocomotionTask]:
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

    common = ("frame_skip", "forward_reward_weight", "ctrl_cost_weight", "reset_noise_scale")
    legged = (*common, "healthy_reward", "terminate_when_unhealthy", "healthy_z_range")
    ant = (*legged, "contact_cost_weight", "contact_force_range", "include_cfrc_ext_in_observation")
    return {
        "Hopper-v5": LocomotionTask("Hopper-v5", HopperEnv, (*legged, "healthy_angle_range", "healthy_state_range"), 1, 10.0, "uniform", _hopper_healthy),
        "Walker2d-v5": LocomotionTask("Walker2d-v5", Walker2dEnv, (*legged, "healthy_angle_range"), 1, 10.0, "uniform", _walker_healthy),
        "HalfCheetah-v5": LocomotionTask("HalfCheetah-v5", HalfCheetahEnv, common, 1, None, "normal", None),
        "Ant-v5": LocomotionTask("Ant-v5", AntEnv, ant, 2, None, "normal", _ant_healthy, True),
    }


TASKS = _tasks()


@dataclass
class Setup:
    """A task with its parameters, model and spaces, as both batched MuJoCo backends need them."""

    task: LocomotionTask
    params: Params
    max_episode_steps: int
    model: mujoco.MjModel
    frame_skip: int
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box

    @property
    def dt(self) -> float:
        return self.model.opt.timestep * self.frame_skip


def task_params(task: LocomotionTask, env_kwargs: dict[str, Any], backend: str = "native") -> tuple[Params, int]:
    """gymnasium's defaults with ``env_kwargs`` applied, and the episode limit; ConfigError names what is unsupported."""
    kwargs = dict(env_kwargs)
    max_steps = kwargs.pop("max_episode_steps", gym.spec(task.gym_id).max_episode_steps)
    unknown = sorted(set(kwargs) - set(task.params))
    if unknown:
        raise ConfigError(
            f"the {backend} backend does not support {', '.join(unknown)} for {task.gym_id}; it supports max_episode_steps, {', '.join(task.params)} "
            "(backend=gymnasium takes any keyword)"
        )
    defaults = inspect.signature(task.entry.__init__).parameters
    params = {name: kwargs.get(name, defaults[name].default) for name in task.params}
    params["xml_file"] = defaults["xml_file"].default
    params["camera"] = defaults["default_camera_config"].default
    return params, int(max_steps)


def setup(gym_id: str, env_kwargs: dict[str, Any], backend: str) -> Setup:
    """Parameters, model and spaces of ``gym_id`` (a key of :data:`TASKS`) with ``env_kwargs`` applied."""
    task = TASKS[gym_id]
    params, max_steps = task_params(task, env_kwargs, backend)
    model = mujoco.MjModel.from_xml_path(expand_model_path(params["xml_file"]))
    with_cfrc = task.contact_forces and params["include_cfrc_ext_in_observation"]
    obs_dim = model.nq - task.skipped_qpos + model.nv + (6 * (model.nbody - 1) if with_cfrc else 0)
    low, high = model.actuator_ctrlrange.astype(np.float32).T
    return Setup(
        task,
        params,
        max_steps,
        model,
        int(params["frame_skip"]),
        gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64),
        gym.spaces.Box(low, high, dtype=np.float32),
    )
