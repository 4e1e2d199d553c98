"""The one evaluation routine: run a policy in batched envs for a number of episodes and summarise.

Episodes are assigned to sub-envs up front (sub-env i runs episodes i, i + N, ...), so the result
does not favour short episodes the way "the first n episodes to finish" would.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from omegaconf import DictConfig

from rlft.envs import make
from rlft.envs.registry import normalized_score
from rlft.envs.safety import COST_LIMIT, normalized_cost
from rlft.envs.wrappers import ActionChunk, ObsHistory
from rlft.policies.acting import ActingPolicy
from rlft.video import write_video


def reference_returns(cfg: DictConfig) -> tuple[float, float] | None:
    """(random, expert) returns for normalized scores: the training dataset's own, else the env's D4RL ones."""
    from rlft.datasets.store import EpisodeStore

    if "data" in cfg and cfg.data.get("path"):
        refs = EpisodeStore(cfg.data.path).meta.get("ref_returns")
        if refs:
            return float(refs["random"]), float(refs["expert"])
    if "env" in cfg and cfg.env.get("d4rl_ref"):
        return float(cfg.env.d4rl_ref.random), float(cfg.env.d4rl_ref.expert)
    return None


def env_cost_limit(name: str) -> float | None:
    """The episode cost limit in ``configs/env/<name>.yaml`` (None where the env has no config or no limit)."""
    from rlft.envs.registry import env_config
    from rlft.errors import ConfigError

    try:
        return env_config(name).get("cost_limit")
    except ConfigError:
        return None


@torch.no_grad()
def evaluate(
    policy: ActingPolicy,
    env_name: str,
    episodes: int,
    seed: int,
    backend: str = "auto",
    steps: int | None = None,
    n_envs: int | None = None,
    refs: tuple[float, float] | None = None,
    video: Path | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    stochastic: bool | None = None,
    cost_limit: float | None = None,
    trace: bool = False,
) -> dict[str, Any]:
    """Return ``{return_mean, return_std, normalized_score, success_rate, episodes, env_steps_per_s, ...}``.

    Safety tasks add ``cost_mean``, ``cost_std`` (episode costs), ``normalized_cost`` (of the mean, against
    ``cost_limit``, default :data:`rlft.envs.safety.COST_LIMIT`), ``safe`` (normalized cost < 1) and
    ``normalized_reward`` ((R - R_min) / (R_max - R_min) with ``refs`` as (R_min, R_max), DSRL's).
    ``policy``: an :class:`~rlft.policies.acting.ActingPolicy`. ``stochastic``: None = its ``default_stochastic``.
    Its ``end_episodes(done [N])`` is called after every step and with all True after the reset (ResiP
    keeps a queue of base actions across steps). ``trace``: also return ``jerk`` (the counted episodes' mean
    action second-difference norm, :func:`rlft.runtime.diagnostics.mean_jerk`) and ``states`` [M, obs_dim]
    (their observations at every chunk start), for the fine-tuning diagnostics.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1 (got {episodes})")
    n_envs = min(episodes, n_envs or episodes)
    quota = np.full(n_envs, episodes // n_envs) + (np.arange(n_envs) < episodes % n_envs)
    device = policy.device
    base = make(env_name, n_envs, backend=backend, seed=seed, device=device, **dict(env_kwargs or {}))
    env = ActionChunk(ObsHistory(base, policy.obs_horizon), policy.act_steps)
    generator = torch.Generator(device=device).manual_seed(seed)
    if stochastic is None:
        stochastic = policy.default_stochastic
    frames: list[np.ndarray] = []
    counted: list[list[dict[str, Any]]] = [[] for _ in range(n_envs)]  # episodes per sub-env, in order
    # trace: every chunk's actions [N, act_steps, A], executed steps [N] and start states [N, D]; sub-env i's
    # running episode began at chunk began[i]
    chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    began = [0] * n_envs
    env_steps = 0
    try:
        obs, _ = env.reset(seed=seed)
        policy.end_episodes(torch.ones(n_envs, dtype=torch.bool))
        start = time.perf_counter()
        while any(len(c) < q for c, q in zip(counted, quota)):
            chunk = policy.sample(obs, steps=steps, stochastic=stochastic, generator=generator)
            before = obs[:, -1] if trace else None  # the trace's state diagnostics are for flat observations
            obs, _, terminated, truncated, info = env.step(chunk)
            if trace:
                chunks.append((chunk[:, : policy.act_steps].cpu(), info["steps"].cpu(), before.cpu()))  # type: ignore[union-attr]
            policy.end_episodes(terminated | truncated)
            if video is not None and not counted[0] and not bool(info["done"][0]):  # after the end: the next episode's start
                frames.append(base.render(0))
            env_steps += int(info["steps"].sum())
            for episode in base.pop_episodes():
                i = episode["env"]
                if trace:  # a sub-env ends at most one episode per chunk: the chunks since its last end are this one's
                    mine = chunks[began[i] :]
                    actions = torch.cat([a[i, : int(n[i])] for a, n, _ in mine])
                    episode |= {"actions": actions.numpy(), "states": torch.stack([s[i] for _, _, s in mine])}
                    began[i] = len(chunks)
                if len(counted[i]) < quota[i]:
                    counted[i].append(episode)
        elapsed = time.perf_counter() - start
    finally:
        env.close()
    episodes_done = [e for per_env in counted for e in per_env]
    flat = np.array([e["return"] for e in episodes_done])
    successes = [e["success"] for e in episodes_done if e["success"] is not None]
    result: dict[str, Any] = {
        "return_mean": float(flat.mean()),
        "return_std": float(flat.std()),
        "normalized_score": float(normalized_score(flat.mean(), *refs)) if refs else None,
        "success_rate": float(np.mean(successes)) if successes else None,
        "episodes": int(len(flat)),
        "length_mean": float(np.mean([e["length"] for e in episodes_done])),
        "env_steps": env_steps,
        "env_steps_per_s": env_steps / elapsed,
    }
    if base.has_cost:
        costs = np.array([e["cost"] for e in episodes_done])
        limit = COST_LIMIT if cost_limit is None else float(cost_limit)
        result |= {"cost_mean": float(costs.mean()), "cost_std": float(costs.std()), "cost_limit": limit}
        result |= {"normalized_cost": normalized_cost(costs.mean(), limit), "safe": normalized_cost(costs.mean(), limit) < 1.0}
        result["normalized_reward"] = float(normalized_score(flat.mean(), *refs)) / 100.0 if refs else None
    if trace:
        from rlft.runtime.diagnostics import mean_jerk

        result["jerk"] = mean_jerk([e["actions"] for e in episodes_done])
        result["states"] = torch.cat([e["states"] for e in episodes_done])
    if video is not None:
        result["video"] = str(write_video(video, frames, fps=1.0 / (getattr(base, "dt", 1 / 30) * policy.act_steps)))
    return result


def policy_evaluator(cfg: DictConfig) -> Callable[[ActingPolicy, int], dict[str, float]]:
    """For training loops: ``evaluate(policy, step)`` with the run's eval settings; returns loggable numbers."""
    refs = reference_returns(cfg)
    name = cfg.data.get("env") or cfg.env.name

    def run_eval(policy: ActingPolicy, step: int) -> dict[str, float]:
        was_training = policy.training
        policy.eval()
        out = evaluate(policy, name, cfg.eval.episodes, cfg.eval.seed, backend=cfg.eval.backend, refs=refs, cost_limit=cfg.env.get("cost_limit"))
        policy.train(was_training)
        return {k: v for k, v in out.items() if isinstance(v, (int, float)) and v is not None}

    return run_eval
