"""``make``: a batched env by short name or gymnasium id, on the fastest backend that runs the task."""

from __future__ import annotations

from typing import Any

import torch

from rlft.envs.base import BatchedEnv
from rlft.envs.proxy import proxy_kwargs
from rlft.envs.registry import env_id, velocity_limit
from rlft.errors import ConfigError

BACKENDS = ("auto", "native", "gpu", "workers", "gymnasium", "gymnasium_async")


def make(
    name: str,
    n_envs: int,
    backend: str = "auto",
    seed: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
    **env_kwargs: Any,
) -> BatchedEnv:
    """``n_envs`` copies of ``name`` (``hopper`` or any gymnasium id) as one :class:`BatchedEnv`.

    backend: ``native`` (batched MuJoCo threads; Hopper, Walker2d, HalfCheetah, Ant v5), ``gpu`` (MJX,
    data stays on the GPU), ``workers`` (worker processes, each stepping a share of the sub-envs in a
    sync vector env; any id), ``gymnasium`` / ``gymnasium_async`` (gymnasium's sync / async vector env,
    any id), or ``auto``: ``gpu`` when ``device`` is CUDA and MJX runs there, else ``native`` when it
    supports the task and ``env_kwargs``, else ``workers`` for the robosuite tasks (more than one sub-env
    and core), else ``gymnasium``. ``threads``: physics threads of the native backend, processes of the
    workers backend (default: every core this process may use). ``env_kwargs`` go to the task (gymnasium's
    keyword names, plus ``max_episode_steps``). Safety tasks (``hopper_vel``, ...; :mod:`rlft.envs.safety`)
    put the step's cost in ``info["cost"]``.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    if not isinstance(n_envs, int) or isinstance(n_envs, bool) or n_envs < 1:
        raise ConfigError(f"n_envs must be a positive integer, got {n_envs!r}")
    gym_id, limit = env_id(name), velocity_limit(name)
    env_kwargs = proxy_kwargs(name) | env_kwargs  # hopper_fwd: Hopper-v5 on the forward velocity alone
    if backend == "auto":
        backend = _auto_backend(gym_id, n_envs, torch.device(device), env_kwargs, limit is not None)
    if backend == "native":
        from rlft.envs.backends.native import NativeMujocoEnv

        _check_locomotion(backend, gym_id)
        return NativeMujocoEnv(gym_id, n_envs, seed=seed, device=device, dtype=dtype, threads=threads, velocity_limit=limit, **env_kwargs)
    if backend == "gpu":
        from rlft.envs.backends.mjx import MjxEnv, mjx_installed

        _check_locomotion(backend, gym_id)
        if limit is not None:
            raise ConfigError(f"the gpu backend has no safety costs yet; run {name} with backend=native or backend=gymnasium")
        if not mjx_installed():
            raise ConfigError("the gpu backend needs MJX: pip install -e .[gpu] (mujoco-mjx and jax)")
        return MjxEnv(gym_id, n_envs, seed=seed, device=device, dtype=dtype, **env_kwargs)
    if backend == "workers":
        from rlft.envs.backends.native import default_threads
        from rlft.envs.backends.workers import WorkerVectorEnv

        workers = threads or default_threads()
        return WorkerVectorEnv(gym_id, n_envs, workers=workers, seed=seed, device=device, dtype=dtype, velocity_limit=limit, **env_kwargs)
    from rlft.envs.backends.gym_vector import GymVectorEnv

    return GymVectorEnv(gym_id, n_envs, asynchronous=backend == "gymnasium_async", seed=seed, device=device, dtype=dtype, velocity_limit=limit, **env_kwargs)


def _check_locomotion(backend: str, gym_id: str) -> None:
    from rlft.envs.backends.locomotion import TASKS

    if gym_id not in TASKS:
        raise ConfigError(f"the {backend} backend runs {', '.join(TASKS)}, not {gym_id}; use backend=gymnasium")


def _auto_backend(gym_id: str, n_envs: int, device: torch.device, env_kwargs: dict[str, Any], costs: bool) -> str:
    from rlft.envs.backends.locomotion import TASKS, task_params
    from rlft.envs.backends.native import default_threads
    from rlft.envs.registry import MANIPULATION

    supported = gym_id in TASKS
    if supported:
        try:
            task_params(TASKS[gym_id], env_kwargs)
        except ConfigError:
            supported = False
    if supported and device.type == "cuda" and not costs:  # the gpu backend has no safety costs
        from rlft.envs.backends.mjx import gpu_available

        if gpu_available():
            return "gpu"
    if supported:
        return "native"
    return "workers" if gym_id in MANIPULATION.values() and n_envs > 1 and default_threads() > 1 else "gymnasium"
