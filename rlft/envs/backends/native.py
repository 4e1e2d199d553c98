"""Native batched MuJoCo: one MjModel, one MjData per sub-env, physics stepped by a thread pool.

It reproduces gymnasium's Hopper, Walker2d, HalfCheetah and Ant v5: same model files, frame skip,
reset noise drawn from each sub-env's own ``np_random`` (seeded ``seed + i`` as gymnasium's vector envs
do), control cost on the unclipped action (MuJoCo clamps ``ctrl`` to ``ctrlrange`` itself), TimeLimit
truncation. ``mujoco.mj_step`` releases the GIL, so the worker threads step their share of the sub-envs
in parallel; observation, reward and termination are then computed for all sub-envs at once with numpy.
``mujoco.rollout`` was measured too: it was slower (it sets the full state on every call) and cannot
keep the solver warm start between calls, which exact parity needs.
"""

from __future__ import annotations

import inspect
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import mujoco
import numpy as np
import torch
from gymnasium.envs.mujoco.mujoco_env import expand_model_path
from gymnasium.utils.seeding import np_random

from rlft.config import ConfigError
from rlft.envs.base import BatchedEnv

Params = dict[str, Any]


def _hopper_healthy(p: Params, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    low, high = p["healthy_state_range"]
    state = np.concatenate([qpos[:, 2:], qvel], axis=1)
    return np.all((low < state) & (state < high), axis=1) & _walker_healthy(p, qpos, qvel)


def _walker_healthy(p: Params, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    (z_low, z_high), (a_low, a_high) = p["healthy_z_range"], p["healthy_angle_range"]
    z, angle = qpos[:, 1], qpos[:, 2]
    return (z_low < z) & (z < z_high) & (a_low < angle) & (angle < a_high)


def _ant_healthy(p: Params, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    z_low, z_high = p["healthy_z_range"]
    finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
    return finite & (z_low <= qpos[:, 2]) & (qpos[:, 2] <= z_high)


@dataclass(frozen=True)
class LocomotionTask:
    """How one gymnasium v5 locomotion task builds its observation, reward and termination."""

    gym_id: str
    entry: Callable[..., gym.Env]  # gymnasium's env class: its constructor defaults are the parameters
    params: tuple[str, ...]  # constructor keywords this backend reproduces
    skipped_qpos: int  # leading qpos entries (x, or x and y) left out of the observation
    qvel_clip: float | None  # observations clip qvel to [-c, c]
    qvel_noise: str  # reset noise on qvel: "uniform" in [-s, s] or "normal" with std s
    healthy: Callable[[Params, np.ndarray, np.ndarray], np.ndarray] | None
    contact_forces: bool = False  # Ant: cfrc_ext in the observation and the contact cost


def _tasks() -> dict[str, LocomotionTask]:
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

    common = ("frame_skip", "forward_reward_weight", "ctrl_cost_weight", "reset_noise_scale")
    legged = (*common, "healthy_reward", "terminate_when_unhealthy", "healthy_z_range")
    return {
        "Hopper-v5": LocomotionTask("Hopper-v5", HopperEnv, (*legged, "healthy_angle_range", "healthy_state_range"), 1, 10.0, "uniform", _hopper_healthy),
        "Walker2d-v5": LocomotionTask("Walker2d-v5", Walker2dEnv, (*legged, "healthy_angle_range"), 1, 10.0, "uniform", _walker_healthy),
        "HalfCheetah-v5": LocomotionTask("HalfCheetah-v5", HalfCheetahEnv, common, 1, None, "normal", None),
        "Ant-v5": LocomotionTask(
            "Ant-v5", AntEnv, (*legged, "contact_cost_weight", "contact_force_range", "include_cfrc_ext_in_observation"), 2, None, "normal", _ant_healthy, True
        ),
    }


TASKS = _tasks()


def task_params(task: LocomotionTask, env_kwargs: dict[str, Any]) -> tuple[Params, int]:
    """gymnasium's defaults with ``env_kwargs`` applied, and the episode limit; ConfigError names what is unsupported."""
    kwargs = dict(env_kwargs)
    max_steps = kwargs.pop("max_episode_steps", gym.spec(task.gym_id).max_episode_steps)
    unknown = sorted(set(kwargs) - set(task.params))
    if unknown:
        raise ConfigError(
            f"the native backend does not support {', '.join(unknown)} for {task.gym_id}; it supports max_episode_steps, {', '.join(task.params)} "
            "(backend=gymnasium takes any keyword)"
        )
    defaults = inspect.signature(task.entry.__init__).parameters
    params = {name: kwargs.get(name, defaults[name].default) for name in task.params}
    params["xml_file"] = defaults["xml_file"].default
    params["camera"] = defaults["default_camera_config"].default
    return params, int(max_steps)


def default_threads() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ThreadedStepper:
    """Runs ``work(indices)`` over index slices on ``threads`` threads (the calling thread takes one slice)."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="rlft-physics") if self.threads > 1 else None

    def run(self, work: Callable[[np.ndarray], None], indices: np.ndarray) -> None:
        if self._pool is None or len(indices) < 2:
            work(indices)
            return
        *others, own = np.array_split(indices, min(self.threads, len(indices)))
        futures = [self._pool.submit(work, part) for part in others]
        work(own)
        for future in futures:
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class NativeMujocoEnv(BatchedEnv):
    """Hopper, Walker2d, HalfCheetah or Ant v5 as one batch; matches gymnasium's vector env step for step."""

    backend = "native"

    def __init__(
        self,
        gym_id: str,
        n_envs: int,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        threads: int | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.task = TASKS[gym_id]
        self.params, max_steps = task_params(self.task, env_kwargs)
        self.model = mujoco.MjModel.from_xml_path(expand_model_path(self.params["xml_file"]))
        self.frame_skip = int(self.params["frame_skip"])
        self.dt = self.model.opt.timestep * self.frame_skip
        self.datas = [mujoco.MjData(self.model) for _ in range(n_envs)]
        self._init_qpos = self.datas[0].qpos.copy()
        self._init_qvel = self.datas[0].qvel.copy()
        self._contact = self.task.contact_forces
        self._skipped = self.task.skipped_qpos
        self._with_cfrc = self._contact and self.params["include_cfrc_ext_in_observation"]
        m = self.model
        obs_dim = m.nq - self._skipped + m.nv + (6 * (m.nbody - 1) if self._with_cfrc else 0)
        low, high = m.actuator_ctrlrange.astype(np.float32).T
        super().__init__(
            n_envs,
            gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64),
            gym.spaces.Box(low, high, dtype=np.float32),
            max_steps,
            seed,
            device,
            dtype,
        )
        # Batch copies of what the observation and reward read, filled by the worker threads.
        self._qpos = np.zeros((n_envs, m.nq))
        self._qvel = np.zeros((n_envs, m.nv))
        self._cfrc = np.zeros((n_envs, m.nbody, 6))
        self._xy = np.zeros((n_envs, 2))  # Ant: torso position, whose change is the forward velocity
        self._views = [(d, d.ctrl, d.qpos, d.qvel, d.cfrc_ext, d.xpos[1, :2]) for d in self.datas]
        self._obs = np.zeros((n_envs, obs_dim))
        self._elapsed = np.zeros(n_envs, dtype=np.int64)
        self._rngs: list[np.random.Generator] = []
        self._actions = np.zeros((n_envs, self.act_dim), np.float32)
        self._stepper = ThreadedStepper(threads or default_threads())
        self._renderer: mujoco.Renderer | None = None
        self._all = np.arange(n_envs)

    # ---- physics ------------------------------------------------------------------------------
    def _advance(self, envs: np.ndarray) -> None:
        """Apply ``self._actions`` to sub-envs ``envs`` and step their physics (runs on a worker thread)."""
        m, frame_skip, contact, actions = self.model, self.frame_skip, self._contact, self._actions
        qpos, qvel, cfrc, xy = self._qpos, self._qvel, self._cfrc, self._xy
        for i in envs:
            data, ctrl, data_qpos, data_qvel, data_cfrc, data_xy = self._views[i]
            ctrl[:] = actions[i]
            mujoco.mj_step(m, data, frame_skip)
            qpos[i] = data_qpos
            qvel[i] = data_qvel
            if contact:  # gymnasium computes cfrc_ext after every step; only Ant reads it
                mujoco.mj_rnePostConstraint(m, data)
                cfrc[i] = data_cfrc
                xy[i] = data_xy

    def _reset_envs(self, envs: np.ndarray) -> None:
        """New episodes for ``envs``: gymnasium's reset noise from each sub-env's own generator."""
        m, scale = self.model, self.params["reset_noise_scale"]
        for i in envs:
            data, _, data_qpos, data_qvel, data_cfrc, data_xy = self._views[i]
            rng = self._rngs[i]
            mujoco.mj_resetData(m, data)
            data_qpos[:] = self._init_qpos + rng.uniform(-scale, scale, m.nq)
            if self.task.qvel_noise == "uniform":
                data_qvel[:] = self._init_qvel + rng.uniform(-scale, scale, m.nv)
            else:
                data_qvel[:] = self._init_qvel + scale * rng.standard_normal(m.nv)
            mujoco.mj_forward(m, data)
            self._qpos[i], self._qvel[i], self._cfrc[i], self._xy[i] = data_qpos, data_qvel, data_cfrc, data_xy
        self._elapsed[envs] = 0
        self._obs[envs] = self._observe(envs)

    def _observe(self, envs: np.ndarray | slice) -> np.ndarray:
        parts = [self._qpos[envs, self._skipped :]]
        clip = self.task.qvel_clip
        parts.append(self._qvel[envs] if clip is None else np.clip(self._qvel[envs], -clip, clip))
        if self._with_cfrc:
            forces = np.clip(self._cfrc[envs, 1:], *self.params["contact_force_range"])
            parts.append(forces.reshape(forces.shape[0], -1))
        return np.concatenate(parts, axis=1)

    # ---- BatchedEnv ---------------------------------------------------------------------------
    def _reset(self, seed: int | None) -> torch.Tensor:
        if seed is not None or not self._rngs:
            self._rngs = [np_random(None if seed is None else seed + i)[0] for i in range(self.n_envs)]
        self._reset_envs(self._all)
        return self._tensor(self._obs)

    def _step(self, actions: torch.Tensor, active: torch.Tensor | None):
        np.copyto(self._actions, actions.to("cpu", torch.float32).numpy())
        envs = self._all if active is None else np.flatnonzero(active.cpu().numpy())
        p = self.params
        x_before = self._xy[envs, 0] if self._contact else self._qpos[envs, 0]  # copies (fancy indexing)
        self._stepper.run(self._advance, envs)
        qpos, qvel = self._qpos[envs], self._qvel[envs]
        x_velocity = ((self._xy[envs, 0] if self._contact else qpos[:, 0]) - x_before) / self.dt
        reward = p["forward_reward_weight"] * x_velocity
        if self.task.healthy is not None:
            healthy = self.task.healthy(p, qpos, qvel)
            reward = reward + healthy * p["healthy_reward"]
            terminated = ~healthy & p["terminate_when_unhealthy"]
        else:
            terminated = np.zeros(len(envs), dtype=bool)
        # As gymnasium: the control cost in the action's float32, on the action as given (not clamped).
        cost = np.float32(p["ctrl_cost_weight"]) * np.square(self._actions[envs]).sum(axis=1)
        if self._contact:
            forces = np.clip(self._cfrc[envs], *p["contact_force_range"])
            cost = cost + p["contact_cost_weight"] * np.square(forces).sum(axis=(1, 2))
        reward = reward - cost

        self._elapsed[envs] += 1
        truncated = self._elapsed[envs] >= self.max_episode_steps
        self._obs[envs] = self._observe(envs)
        final_obs = self._obs.copy()
        ended = envs[terminated | truncated]
        if len(ended):
            self._reset_envs(ended)
        return self._scatter(envs, reward, terminated, truncated, final_obs)

    def _scatter(self, envs: np.ndarray, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, final_obs: np.ndarray):
        """Per-active-env results as full (N,) tensors (sub-envs that sat out: reward 0, not done)."""
        if len(envs) < self.n_envs:
            full = np.zeros((3, self.n_envs))
            full[:, envs] = reward, terminated, truncated
            reward, terminated, truncated = full[0], full[1].astype(bool), full[2].astype(bool)
        return (
            self._tensor(self._obs),
            self._tensor(np.asarray(reward, dtype=np.float64)),
            self._tensor(terminated, torch.bool),
            self._tensor(truncated, torch.bool),
            self._tensor(final_obs),
            None,
        )

    def render(self, index: int = 0, width: int = 480, height: int = 480) -> np.ndarray:
        if self._renderer is None:
            if not os.environ.get("MUJOCO_GL") and not os.environ.get("DISPLAY"):
                raise RuntimeError("cannot render MuJoCo frames without a display; start Python with MUJOCO_GL=egl (or osmesa)")
            try:
                self._renderer = mujoco.Renderer(self.model, height, width)
            except Exception as e:
                reason = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                raise RuntimeError(f"cannot render MuJoCo frames ({reason}); without a display, start Python with MUJOCO_GL=egl or osmesa") from None
        camera = mujoco.MjvCamera()
        mujoco.mjv_defaultFreeCamera(self.model, camera)
        for key, value in (self.params["camera"] or {}).items():
            if key == "trackbodyid":
                camera.type, camera.trackbodyid = mujoco.mjtCamera.mjCAMERA_TRACKING, value
            elif key == "lookat":
                camera.lookat[:] = value
            else:
                setattr(camera, key, value)
        self._renderer.update_scene(self.datas[index], camera)
        return self._renderer.render()

    def close(self) -> None:
        self._stepper.close()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def physics_rate(model: mujoco.MjModel, frame_skip: int, datas: list[mujoco.MjData], steps: int, threads: int, seed: int = 0) -> float:
    """Raw batched physics rate in policy steps/s: ``mj_step`` x ``frame_skip`` on every MjData with random controls.

    The same thread pool as the native backend, nothing but setting ``ctrl`` and stepping.
    """
    import time

    rng = np.random.default_rng(seed)
    low, high = model.actuator_ctrlrange.T
    controls = rng.uniform(low, high, size=(steps, len(datas), model.nu))
    ctrls = [d.ctrl for d in datas]
    stepper = ThreadedStepper(threads)
    step_controls = controls[0]

    def advance(envs: np.ndarray) -> None:
        for i in envs:
            ctrls[i][:] = step_controls[i]
            mujoco.mj_step(model, datas[i], frame_skip)

    everything = np.arange(len(datas))
    start = time.perf_counter()
    for t in range(steps):
        step_controls = controls[t]
        stepper.run(advance, everything)
    elapsed = time.perf_counter() - start
    stepper.close()
    return len(datas) * steps / elapsed
