"""``rlft bench rollout``: how fast a batched env steps, next to the raw physics rate of the same model."""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rlft.envs.base import BatchedEnv
from rlft.envs.factory import make
from rlft.errors import ConfigError


def bench_rollout(cfg: DictConfig) -> dict[str, Any]:
    """Time ``cfg.steps`` batched steps of uniform-random actions after ``cfg.warmup`` untimed ones.

    Returns env steps/s (n_envs x steps / seconds) and ``physics_limit_steps_per_s``: the rate of bare
    ``mj_step`` x frame skip over as many MjData, on the native backend's threads, from the states of
    a native env after the same warm-up (see :func:`physics_rate`; None for tasks the native backend
    does not run).
    """
    if cfg.steps < 1 or cfg.warmup < 0:
        raise ConfigError(f"steps must be >= 1 and warmup >= 0, got steps={cfg.steps}, warmup={cfg.warmup}")
    load_before = os.getloadavg()[0]
    env_kwargs = {"max_episode_steps": cfg.env.max_episode_steps, **OmegaConf.to_container(cfg.env.kwargs)}
    env = make(cfg.env.name, cfg.n_envs, backend=cfg.backend, seed=cfg.seed, device=cfg.device, threads=cfg.physics_threads, **env_kwargs)
    try:
        generator = torch.Generator(device=env.device).manual_seed(cfg.seed)
        warm_up(env, cfg.warmup, generator)
        env.pop_episodes()
        if env.device.type == "cuda":
            torch.cuda.synchronize(env.device)
        start = time.perf_counter()
        for _ in range(cfg.steps):
            env.step(uniform_actions(env, generator))
        if env.device.type == "cuda":
            torch.cuda.synchronize(env.device)
        seconds = time.perf_counter() - start
        episodes = len(env.pop_episodes())
        backend = env.backend
    finally:
        env.close()
    rate = cfg.n_envs * cfg.steps / seconds
    limit, physics_threads = _physics_limit(cfg, env_kwargs)
    return {
        "env": cfg.env.id,
        "backend": backend,
        "n_envs": cfg.n_envs,
        "steps": cfg.steps,
        "seconds": round(seconds, 3),
        "env_steps_per_s": round(rate, 1),
        "physics_limit_steps_per_s": None if limit is None else round(limit, 1),
        "fraction_of_physics_limit": None if limit is None else round(rate / limit, 3),
        "physics_threads": physics_threads,
        "episodes_finished": episodes,
        "device": str(cfg.device),
        "load_1min": round(load_before, 2),  # when the run started
    }


def uniform_actions(env: BatchedEnv, generator: torch.Generator) -> torch.Tensor:
    """Actions (N, act_dim) uniform in the action bounds."""
    span = env.action_high - env.action_low
    return env.action_low + span * torch.rand(env.n_envs, env.act_dim, generator=generator, device=env.device, dtype=env.dtype)


def warm_up(env: BatchedEnv, steps: int, generator: torch.Generator) -> None:
    """Reset, then ``steps`` batched steps of uniform-random actions."""
    env.reset()
    for _ in range(steps):
        env.step(uniform_actions(env, generator))


def _physics_limit(cfg: DictConfig, env_kwargs: dict[str, Any]) -> tuple[float | None, int]:
    """Bare batched physics rate in policy steps/s for the task's model and frame skip."""
    from rlft.envs.backends.locomotion import TASKS
    from rlft.envs.backends.native import NativeMujocoEnv, default_threads, physics_rate, snapshot
    from rlft.envs.registry import env_id

    threads = int(cfg.physics_threads or default_threads())
    if env_id(cfg.env.name) not in TASKS:
        return None, threads
    env = NativeMujocoEnv(env_id(cfg.env.name), cfg.n_envs, seed=cfg.seed, threads=threads, **env_kwargs)
    try:
        warm_up(env, cfg.warmup, torch.Generator().manual_seed(cfg.seed))  # the same states as a native env in the timed run
        return physics_rate(env.model, env.frame_skip, snapshot(env.model, env.datas), cfg.steps, threads, seed=cfg.seed), threads
    finally:
        env.close()


def summary_line(result: dict[str, Any]) -> str:
    """One human-readable line of a :func:`bench_rollout` result."""
    line = f"{result['env']} {result['backend']} n_envs={result['n_envs']}: {result['env_steps_per_s']:.0f} env steps/s"
    if result["physics_limit_steps_per_s"] is not None:
        threads = f"{result['physics_threads']} thread" + ("s" if result["physics_threads"] != 1 else "")
        line += f" (physics limit {result['physics_limit_steps_per_s']:.0f} on {threads}, {result['fraction_of_physics_limit']:.0%})"
    return line + f"; load {result['load_1min']}"
