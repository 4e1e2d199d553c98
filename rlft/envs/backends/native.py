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

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

import mujoco
import numpy as np
import torch
from gymnasium.utils.seeding import np_random

from rlft.envs.backends.locomotion import setup
from rlft.envs.base import BatchedEnv
from rlft.envs.safety import velocity_cost


def default_threads() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ThreadedStepper:
    """Runs ``work(indices)`` on ``threads`` threads that share one iterator over the indices.

    Each thread takes the next index when it is free (the calling thread works too), so a thread
    that starts late or has a costlier sub-env does not leave the others waiting.
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="rlft-physics") if self.threads > 1 else None

    def run(self, work: Callable[[Iterable[int]], None], indices: np.ndarray) -> None:
        shared = iter(indices.tolist())  # next() on a list iterator is atomic under the GIL
        futures = [self._pool.submit(work, shared) for _ in range(min(self.threads, len(indices)) - 1)] if self._pool else []
        work(shared)
        for future in futures:
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class NativeMujocoEnv(BatchedEnv):
    """Hopper, Walker2d, HalfCheetah or Ant v5 as one batch; matches gymnasium's vector env step for step.

    ``velocity_limit``: the velocity-constrained task (:mod:`rlft.envs.safety`), with a per-step cost.
    """

    backend = "native"

    def __init__(
        self,
        gym_id: str,
        n_envs: int,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        threads: int | None = None,
        velocity_limit: float | None = None,
        **env_kwargs: Any,
    ) -> None:
        task = setup(gym_id, env_kwargs, "native")
        self.velocity_limit = velocity_limit
        self.has_cost = velocity_limit is not None
        self.task, self.params, self.model, self.frame_skip, self.dt = task.task, task.params, task.model, task.frame_skip, task.dt
        super().__init__(n_envs, task.observation_space, task.action_space, task.max_episode_steps, seed, device, dtype)
        m = self.model
        self.datas = [mujoco.MjData(m) for _ in range(n_envs)]
        self._init_qpos = self.datas[0].qpos.copy()
        self._init_qvel = self.datas[0].qvel.copy()
        self._contact = self.task.contact_forces
        # Batch copies of what the observation and reward read, filled by the worker threads.
        self._qpos = np.zeros((n_envs, m.nq))
        self._qvel = np.zeros((n_envs, m.nv))
        self._cfrc = np.zeros((n_envs, m.nbody, 6))
        self._xy = np.zeros((n_envs, 2))  # Ant: torso position, whose change is the forward velocity
        self._views = [(d, d.ctrl, d.qpos, d.qvel, d.cfrc_ext, d.xpos[1, :2]) for d in self.datas]
        self._obs = np.zeros((n_envs, self.obs_dim))
        self._elapsed = np.zeros(n_envs, dtype=np.int64)
        self._rngs: list[np.random.Generator] = []
        self._actions = np.zeros((n_envs, self.act_dim), np.float32)
        self._stepper = ThreadedStepper(threads or default_threads())
        self._renderer: mujoco.Renderer | None = None
        self._all = np.arange(n_envs)

    # ---- physics ------------------------------------------------------------------------------
    def _advance(self, envs: Iterable[int]) -> None:
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

    def _observe(self, envs: np.ndarray) -> np.ndarray:
        return self.task.observe(np, self.params, self._qpos[envs], self._qvel[envs], self._cfrc[envs])

    # ---- BatchedEnv ---------------------------------------------------------------------------
    def _reset(self, seed: int | None) -> torch.Tensor:
        if seed is not None or not self._rngs:
            self._rngs = [np_random(None if seed is None else seed + i)[0] for i in range(self.n_envs)]
        self._reset_envs(self._all)
        return self._tensor(self._obs)

    def _step(self, actions: torch.Tensor, active: torch.Tensor | None):
        np.copyto(self._actions, actions.to("cpu", torch.float32).numpy())
        envs = self._all if active is None else np.flatnonzero(active.cpu().numpy())
        x_before = self._xy[envs, 0] if self._contact else self._qpos[envs, 0]  # copies (fancy indexing)
        self._stepper.run(self._advance, envs)
        qpos = self._qpos[envs]
        x_velocity = ((self._xy[envs, 0] if self._contact else qpos[:, 0]) - x_before) / self.dt
        reward, terminated = self.task.reward_and_termination(np, self.params, qpos, self._qvel[envs], self._cfrc[envs], x_velocity, self._actions[envs])
        cost = velocity_cost(x_velocity, self.velocity_limit) if self.has_cost else np.zeros(len(envs))
        self._elapsed[envs] += 1
        truncated = self._elapsed[envs] >= self.max_episode_steps
        self._obs[envs] = self._observe(envs)
        final_obs = self._obs.copy()
        ended = envs[terminated | truncated]
        if len(ended):
            self._reset_envs(ended)
        return self._scatter(envs, reward, terminated, truncated, cost, final_obs)

    def _scatter(self, envs: np.ndarray, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, cost: np.ndarray, final_obs: np.ndarray):
        """Per-active-env results as full (N,) tensors (sub-envs that sat out: reward 0, cost 0, not done)."""
        if len(envs) < self.n_envs:
            full = np.zeros((4, self.n_envs))
            full[:, envs] = reward, terminated, truncated, cost
            reward, terminated, truncated, cost = full[0], full[1].astype(bool), full[2].astype(bool), full[3]
        return (
            self._tensor(self._obs),
            self._tensor(np.asarray(reward, dtype=np.float64)),
            self._tensor(terminated, torch.bool),
            self._tensor(truncated, torch.bool),
            self._tensor(final_obs),
            None,
            self._tensor(np.asarray(cost, dtype=np.float64)) if self.has_cost else None,
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


def snapshot(model: mujoco.MjModel, datas: list[mujoco.MjData]) -> np.ndarray:
    """The full integration state of every MjData, (N, nstate)."""
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    states = np.empty((len(datas), mujoco.mj_stateSize(model, spec)))
    for data, state in zip(datas, states):
        mujoco.mj_getState(model, data, state, spec)
    return states


def physics_rate(model: mujoco.MjModel, frame_skip: int, states: np.ndarray, steps: int, threads: int, segment: int = 25, seed: int = 0) -> float:
    """Raw batched physics rate in policy steps/s: ``mj_step`` x ``frame_skip`` over N MjData with random controls.

    The native backend's thread pool, doing nothing but setting ``ctrl`` and stepping. The MjData start
    from ``states`` (N, nstate) and go back to them every ``segment`` steps (untimed), so the states
    stepped stay like those of the episodes they came from (a fallen hopper costs more than a hopping one).
    """
    rng = np.random.default_rng(seed)
    low, high = model.actuator_ctrlrange.T
    datas = [mujoco.MjData(model) for _ in states]
    ctrls = [d.ctrl for d in datas]
    stepper = ThreadedStepper(threads)
    everything = np.arange(len(datas))
    controls = rng.uniform(low, high, size=(len(datas), model.nu))

    def advance(envs: Iterable[int]) -> None:
        for i in envs:
            ctrls[i][:] = controls[i]
            mujoco.mj_step(model, datas[i], frame_skip)

    elapsed = 0.0
    for start in range(0, steps, segment):
        for data, state in zip(datas, states):
            mujoco.mj_setState(model, data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        for _ in range(min(segment, steps - start)):
            controls = rng.uniform(low, high, size=(len(datas), model.nu))
            tic = time.perf_counter()
            stepper.run(advance, everything)
            elapsed += time.perf_counter() - tic
    stepper.close()
    return len(datas) * steps / elapsed
