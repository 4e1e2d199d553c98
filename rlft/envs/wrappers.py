"""Wrappers over a :class:`BatchedEnv`: action chunks, observation history, a single-env gymnasium view."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlft.envs.base import BatchedEnv, StepResult
from rlft.envs.obs import Obs, obs_map, obs_where


class _Delegating:
    """Attributes not defined by the wrapper (n_envs, act_dim, pop_episodes, render, ...) come from the env."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def __getattr__(self, name: str) -> Any:
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def close(self) -> None:
        self.env.close()


class ObsHistory(_Delegating):
    """Observations as the last ``n_obs_steps`` env observations: obs (N, T, obs_dim), oldest first
    (dict observations: every key (N, T, ...)).

    At an episode's start the history repeats its first observation. ``info["final_obs"]`` holds the
    ended episode's history with its true last observation. Sub-envs that sit out a masked step keep
    their history. Wrap it inside :class:`ActionChunk` (``ActionChunk(ObsHistory(env, T), k)``) so the
    history advances once per env step.
    """

    def __init__(self, env: Any, n_obs_steps: int) -> None:
        if n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        super().__init__(env)
        self.n_obs_steps = int(n_obs_steps)
        self._history: Obs | None = None

    def _fresh(self, obs: Obs) -> Obs:
        return obs_map(lambda x: x.unsqueeze(1).expand(-1, self.n_obs_steps, *x.shape[1:]).clone(), obs)

    def reset(self, seed: int | None = None) -> tuple[Obs, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        self._history = self._fresh(obs)
        return obs_map(torch.clone, self._history), info

    def step(self, actions: torch.Tensor, active: torch.Tensor | None = None) -> StepResult:
        if self._history is None:
            raise RuntimeError("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(actions, active)
        shifted = obs_map(lambda h, f: torch.cat([h[:, 1:], f.unsqueeze(1)], dim=1), self._history, info["final_obs"])
        final = shifted if active is None else obs_where(active, shifted, self._history)
        self._history = obs_where(info["done"], self._fresh(obs), final)
        return obs_map(torch.clone, self._history), reward, terminated, truncated, {**info, "final_obs": final}


class ActionChunk(_Delegating):
    """Executes the first ``act_steps`` actions of each predicted chunk (N, H, act_dim), H >= act_steps.

    ``step(chunk)`` returns obs after the chunk, reward (N,) = the plain sum of the rewards of the
    executed env steps, terminated / truncated (N,) = whether the episode ended inside the chunk, and
    info with ``final_obs`` (the ended episode's last obs; else equal to obs), ``done`` and ``steps``
    (N,) int64, the env steps each sub-env actually took (and ``cost``, the chunk's summed cost, for
    safety tasks). A sub-env whose episode ends inside the chunk
    sits out the rest of it (masked steps), so no leftover action touches its new episode; its obs is
    the new episode's first obs. The native and gpu backends leave masked sub-envs out of the physics
    step; the gymnasium backends pause them with a per-sub-env wrapper (``Pausable``) that answers a
    step with the current observation without stepping, in this process or in the async workers.

    Discounting: by default the algorithm treats one chunk as one step, so the return is
    ``chunk_reward + gamma * V(next obs)`` with one ``gamma`` per chunk (as DPPO does). With
    ``gamma`` set, the chunk's reward is discounted per env step, sum_k gamma^k r_k, and the caller
    bootstraps with ``gamma ** steps`` (DSRL's chunk-aware discount).
    """

    def __init__(self, env: Any, act_steps: int, gamma: float | None = None) -> None:
        if act_steps < 1:
            raise ValueError(f"act_steps must be >= 1, got {act_steps}")
        super().__init__(env)
        self.act_steps = int(act_steps)
        self.gamma = gamma

    def reset(self, seed: int | None = None) -> tuple[Obs, dict[str, Any]]:
        return self.env.reset(seed=seed)

    def step(self, chunk: torch.Tensor | np.ndarray) -> StepResult:
        chunk = torch.as_tensor(chunk)
        n, act_dim = self.env.n_envs, self.env.act_dim
        if chunk.dim() != 3 or chunk.shape[0] != n or chunk.shape[2] != act_dim or chunk.shape[1] < self.act_steps:
            expected = f"({n}, >={self.act_steps}, {act_dim})"
            raise ValueError(f"action chunks must have shape (n_envs, H >= act_steps, act_dim) = {expected}, got {tuple(chunk.shape)}")
        device = self.env.device
        running = torch.ones(n, dtype=torch.bool, device=device)
        total = torch.zeros(n, dtype=self.env.dtype, device=device)
        cost = torch.zeros_like(total) if self.env.has_cost else None
        steps = torch.zeros(n, dtype=torch.int64, device=device)
        terminated = torch.zeros(n, dtype=torch.bool, device=device)
        truncated = torch.zeros_like(terminated)
        final_obs: Obs | None = None
        for k in range(self.act_steps):
            active = None if k == 0 or bool(running.all()) else running
            obs, reward, term, trunc, info = self.env.step(chunk[:, k], active)
            total += reward if self.gamma is None else reward * self.gamma**k  # 0 for sub-envs that sat out
            if cost is not None:
                cost += info["cost"]
            steps += running
            terminated |= term
            truncated |= trunc
            final_obs = info["final_obs"] if final_obs is None else obs_where(info["done"], info["final_obs"], final_obs)
            running &= ~info["done"]
            if not bool(running.any()):
                break
        final_obs = obs_where(terminated | truncated, final_obs, obs)
        out = {"final_obs": final_obs, "done": terminated | truncated, "steps": steps}
        return obs, total, terminated, truncated, out if cost is None else out | {"cost": cost}


class SingleEnv(gym.Env):
    """A gymnasium ``Env`` view of a one-env :class:`BatchedEnv` (numpy in and out), for libraries
    that take a single gymnasium env (stable-baselines3's own vectorisation, env checkers).

    The batched env resets a finished episode by itself; the next ``reset()`` without a seed returns
    that new episode's first observation, so the random streams match a plain gymnasium env.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, env: BatchedEnv) -> None:
        if env.n_envs != 1:
            raise ValueError(f"SingleEnv needs a batched env with n_envs=1, got {env.n_envs}")
        self.env = env
        dtype = np.float64 if env.dtype == torch.float64 else np.float32
        space = env.single_observation_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"SingleEnv needs flat observations; this task's are a dict ({', '.join(env.obs_shapes)})")
        self.observation_space = gym.spaces.Box(space.low.astype(dtype), space.high.astype(dtype), dtype=dtype)
        self.action_space = env.single_action_space
        self.render_mode = "rgb_array"
        self._next_obs: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None and self._next_obs is not None:
            obs, self._next_obs = self._next_obs, None
            return obs, {}
        obs, info = self.env.reset(seed=seed)
        self._next_obs = None
        return obs[0].cpu().numpy(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(torch.as_tensor(np.asarray(action, dtype=self.action_space.dtype)).view(1, -1))
        done = bool(info["done"][0])
        self._next_obs = obs[0].cpu().numpy() if done else None
        return info["final_obs"][0].cpu().numpy(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def render(self) -> np.ndarray:
        return self.env.render(0)

    def close(self) -> None:
        self.env.close()
