"""The batched-env interface every backend implements: N copies of one task, torch tensors in and out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlft.envs.obs import Obs, is_image_space, obs_shapes, to_tensor
from rlft.errors import ActionError, ConfigError, NonFiniteActionError

StepResult = tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]


def _check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """Flat Box actions; a flat Box observation, or a Dict of flat Boxes and H x W x 3 uint8 images."""
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ConfigError(f"batched envs need a flat Box action space, got {action_space}")
    parts = observation_space.spaces.items() if isinstance(observation_space, gym.spaces.Dict) else [("obs", observation_space)]
    for key, space in parts:
        if not isinstance(space, gym.spaces.Box) or not (len(space.shape) == 1 or is_image_space(space)):
            raise ConfigError(f"batched envs need flat Box observations or H x W x 3 uint8 images; observation '{key}' is {space}")


class BatchedEnv(ABC):
    """``n_envs`` copies of one task stepped together.

    ``reset()`` returns obs (N, obs_dim); ``step(actions)`` takes actions (N, act_dim) on any device and
    returns obs (N, obs_dim), reward (N,), terminated (N,) bool, truncated (N,) bool and an info dict,
    all on ``device`` (obs and reward in ``dtype``). Autoreset happens in the same step: for a sub-env
    whose episode ended, ``obs[i]`` is the new episode's first observation and ``info["final_obs"][i]``
    the ended episode's last one (rows of running sub-envs equal ``obs``); ``info["done"]`` is
    ``terminated | truncated``. Tasks with a safety cost (``has_cost``: the velocity-constrained
    locomotion tasks, bullet-safety-gym, the safe point mass) add ``info["cost"]`` (N,) in ``dtype``,
    the step's constraint cost (0 for sub-envs that sat out). A seed given to the constructor seeds the first ``reset()``; sub-env
    ``i`` gets ``seed + i``, as in gymnasium's vector envs. Finished episodes are counted inside the env
    and handed out by :meth:`pop_episodes`. Image tasks (a Dict observation space) return obs and
    ``final_obs`` as dicts by key (``obs_shapes``): state keys (N, D) in ``dtype``, cameras (N, H, W, 3)
    uint8; ``obs_dim`` is then None.

    Backends implement ``_reset`` and ``_step``; everything shared (checks, episode statistics) is here.
    """

    backend: str = ""
    has_cost: bool = False  # backends set it when the task returns a per-step cost

    def __init__(
        self,
        n_envs: int,
        observation_space: gym.Space,
        action_space: gym.Space,
        max_episode_steps: int | None,
        seed: int | None,
        device: str | torch.device,
        dtype: torch.dtype,
    ) -> None:
        _check_spaces(observation_space, action_space)
        self.n_envs = int(n_envs)
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.obs_shapes = obs_shapes(observation_space)  # per-step shape of each key ("obs" for flat observations)
        self.obs_dim = int(observation_space.shape[0]) if isinstance(observation_space, gym.spaces.Box) else None
        self.act_dim = int(action_space.shape[0])
        self.max_episode_steps = max_episode_steps
        self.device = torch.device(device)
        self.dtype = dtype
        self.action_low = torch.as_tensor(action_space.low, dtype=dtype, device=self.device)
        self.action_high = torch.as_tensor(action_space.high, dtype=dtype, device=self.device)
        self._pending_seed = seed
        self._episode_return = torch.zeros(self.n_envs, dtype=torch.float64, device=self.device)
        self._episode_length = torch.zeros(self.n_envs, dtype=torch.int64, device=self.device)
        self._episode_cost = torch.zeros(self.n_envs, dtype=torch.float64, device=self.device)
        self._finished: list[dict[str, Any]] = []
        self._started = False

    # ---- the interface ------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Start new episodes in every sub-env; returns obs (N, obs_dim) and an empty info dict."""
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        obs = self._reset(seed)
        self._started = True
        self._episode_return.zero_()
        self._episode_length.zero_()
        self._episode_cost.zero_()
        return obs, {}

    def step(self, actions: torch.Tensor | np.ndarray, active: torch.Tensor | None = None) -> StepResult:
        """Apply actions (N, act_dim) and return (obs, reward, terminated, truncated, info).

        ``active`` (N,) bool, optional: only those sub-envs step; the others keep their state and
        return their current obs, reward 0, not done (the action-chunk wrapper uses this).
        """
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = torch.as_tensor(actions).detach()
        if tuple(actions.shape) != (self.n_envs, self.act_dim):
            raise ActionError(f"actions must have shape (n_envs, act_dim) = ({self.n_envs}, {self.act_dim}), got {tuple(actions.shape)}")
        if actions.is_floating_point() and not bool(torch.isfinite(actions).all()):
            row = int(torch.nonzero(~torch.isfinite(actions).all(1))[0])
            raise NonFiniteActionError(f"actions hold NaN or inf (first in sub-env {row}: {actions[row].tolist()}); the policy diverged or its input was bad")
        if active is not None:
            active = torch.as_tensor(active, dtype=torch.bool, device=self.device)
            if tuple(active.shape) != (self.n_envs,):
                raise ValueError(f"active must have shape (n_envs,) = ({self.n_envs},), got {tuple(active.shape)}")
        obs, reward, terminated, truncated, final_obs, success, cost = self._step(actions, active)
        done = terminated | truncated
        self._record(reward, done, active, success, cost)
        info = {"final_obs": final_obs, "done": done}
        if self.has_cost:
            info["cost"] = cost
        return obs, reward, terminated, truncated, info

    def pop_episodes(self) -> list[dict[str, Any]]:
        """Episodes finished since the last call: ``{"env": int, "return": float, "length": int, "success": bool | None,
        "cost": float | None}`` (cost: the episode's summed safety cost; None for tasks without one)."""
        finished, self._finished = self._finished, []
        return finished

    def render(self, index: int = 0) -> np.ndarray:
        """One RGB frame (H, W, 3) uint8 of sub-env ``index``."""
        raise RuntimeError(f"the {self.backend} backend cannot render")

    def close(self) -> None:
        """Release threads, processes and renderers."""

    # ---- for backends -------------------------------------------------------------------------
    @abstractmethod
    def _reset(self, seed: int | None) -> torch.Tensor:
        """Reset every sub-env (sub-env i seeded with seed + i when seed is given); obs (N, obs_dim)."""

    @abstractmethod
    def _step(
        self, actions: torch.Tensor, active: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray | None, torch.Tensor | None]:
        """Step (the active) sub-envs with autoreset: obs, reward, terminated, truncated, final_obs, success, cost.

        ``success`` is None when the task has no success signal, else (N,) bool for finished episodes;
        ``cost`` (N,) in ``dtype`` when ``has_cost`` (0 for sub-envs that sat out), else None.
        """

    def _tensor(self, array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A copy of a numpy array as a tensor on this env's device (obs and rewards in the env's dtype)."""
        return torch.from_numpy(array).to(device=self.device, dtype=dtype or self.dtype, copy=True)

    def _obs_tensor(self, obs: Any) -> Obs:
        """Observations (numpy, or a dict of numpy for Dict spaces) -> tensors; images stay uint8."""
        return to_tensor(obs, self.device, self.dtype)

    def _record(self, reward: torch.Tensor, done: torch.Tensor, active: torch.Tensor | None, success: np.ndarray | None, cost: torch.Tensor | None) -> None:
        self._episode_return += reward
        self._episode_length += 1 if active is None else active
        if cost is not None:
            self._episode_cost += cost
        if not bool(done.any()):
            return
        ended = torch.nonzero(done).flatten().tolist()
        returns = self._episode_return[ended].tolist()
        lengths = self._episode_length[ended].tolist()
        costs = self._episode_cost[ended].tolist()
        for k, i in enumerate(ended):
            episode = {"env": i, "return": returns[k], "length": lengths[k], "success": None if success is None else bool(success[i])}
            self._finished.append(episode | {"cost": costs[k] if self.has_cost else None})
        self._episode_return[done] = 0.0
        self._episode_length[done] = 0
        self._episode_cost[done] = 0.0

    def __enter__(self) -> BatchedEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_envs={self.n_envs}, obs_dim={self.obs_dim}, act_dim={self.act_dim}, device={self.device})"
