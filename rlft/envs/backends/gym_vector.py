"""Any gymnasium env id, batched by gymnasium's sync or async vector env (SAME_STEP autoreset)."""

from __future__ import annotations

import inspect
import os
import signal
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlft.envs.base import BatchedEnv
from rlft.envs.safety import VelocityCost, costs_in_info


class Pausable(gym.Wrapper):
    """A sub-env that can sit out vector steps: while ``paused`` its ``step`` returns the current
    observation, reward 0 and not done, without touching the simulation.

    The vector env's ``set_attr("paused", [...])`` sets it per sub-env, in this process or in the
    async workers; that is how a masked step (action chunks) runs on gymnasium's vector envs.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.paused = False
        self._obs: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._obs, info = self.env.reset(**kwargs)
        return self._obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.paused:
            return self._obs, 0.0, False, False, {}
        self._obs, reward, terminated, truncated, info = self.env.step(action)
        return self._obs, reward, terminated, truncated, info


def _renders_rgb(gym_id: str) -> bool:
    """Whether the env class declares the ``rgb_array`` render mode and takes the ``render_mode`` keyword
    (bullet-safety-gym declares the mode but its constructor refuses the keyword)."""
    entry = gym.spec(gym_id).entry_point
    creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    if "rgb_array" not in getattr(creator, "metadata", {}).get("render_modes", []):
        return False
    params = inspect.signature(creator).parameters.values()
    return any(p.name == "render_mode" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _make_pausable(gym_id: str, env_kwargs: dict[str, Any], owner_pid: int, velocity_limit: float | None) -> gym.Env:
    """The sub-env; in an async worker process (not ``owner_pid``) SIGINT is ignored first, so a
    terminal Ctrl-C, which reaches the whole process group, leaves the workers to the main process:
    its graceful stop (:func:`rlft.runtime.trainer.fit`) still has envs to finish the iteration with."""
    if os.getpid() != owner_pid:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = gym.make(gym_id, **env_kwargs)
    return Pausable(env if velocity_limit is None else VelocityCost(env, velocity_limit))


class GymVectorEnv(BatchedEnv):
    """gymnasium's SyncVectorEnv (``asynchronous=False``) or AsyncVectorEnv (one process per sub-env).

    Episode success is read from ``is_success`` or ``success`` in a finished episode's last info; the
    step cost from ``info["cost"]`` for safety tasks (``velocity_limit`` adds it to locomotion envs).
    """

    def __init__(
        self,
        gym_id: str,
        n_envs: int,
        asynchronous: bool = False,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        velocity_limit: float | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.backend = "gymnasium_async" if asynchronous else "gymnasium"
        self.has_cost = velocity_limit is not None or costs_in_info(gym_id)
        if "render_mode" not in env_kwargs and _renders_rgb(gym_id):
            env_kwargs["render_mode"] = "rgb_array"
        owner_pid = os.getpid()
        fns = [lambda: _make_pausable(gym_id, env_kwargs, owner_pid, velocity_limit) for _ in range(n_envs)]
        vector = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
        self.vec = vector(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        max_steps = env_kwargs.get("max_episode_steps", gym.spec(gym_id).max_episode_steps)
        try:
            super().__init__(n_envs, self.vec.single_observation_space, self.vec.single_action_space, max_steps, seed, device, dtype)
        except Exception:
            self.vec.close()
            raise
        self._paused = np.zeros(n_envs, dtype=bool)

    def _reset(self, seed: int | None) -> torch.Tensor:
        self._pause(np.zeros(self.n_envs, dtype=bool))
        obs, _ = self.vec.reset(seed=seed)
        return self._obs_tensor(obs)

    def _pause(self, paused: np.ndarray) -> None:
        if not np.array_equal(paused, self._paused):
            self.vec.set_attr("paused", paused.tolist())
            self._paused = paused

    def _step(self, actions: torch.Tensor, active: torch.Tensor | None):
        self._pause(np.zeros(self.n_envs, dtype=bool) if active is None else ~active.cpu().numpy())
        space = self.single_action_space
        obs, reward, terminated, truncated, info = self.vec.step(actions.to("cpu").numpy().astype(space.dtype, copy=False))
        final_obs = {k: np.array(v, copy=True) for k, v in obs.items()} if isinstance(obs, dict) else np.array(obs, copy=True)
        success = None
        cost = self._cost(info, "cost") if self.has_cost else None
        if "final_obs" in info:
            ended = np.flatnonzero(info["_final_obs"])
            if isinstance(final_obs, dict):  # Dict spaces: info["final_obs"][i] is sub-env i's dict
                for k, v in final_obs.items():
                    v[ended] = np.stack([info["final_obs"][i][k] for i in ended])
            else:
                final_obs[ended] = np.stack([info["final_obs"][i] for i in ended])
            last_info = info["final_info"]
            for key in ("is_success", "success"):
                if key in last_info:
                    success = np.asarray(last_info[key], dtype=bool)
            if self.has_cost:  # an ended sub-env's step info is its final info (the info beside it is the reset's)
                cost[ended] = self._cost(last_info, "cost")[ended]
        return (
            self._obs_tensor(obs),
            self._tensor(np.asarray(reward, dtype=np.float64)),
            self._tensor(terminated, torch.bool),
            self._tensor(truncated, torch.bool),
            self._obs_tensor(final_obs),
            success,
            None if cost is None else self._tensor(cost),
        )

    def _cost(self, info: dict[str, Any], key: str) -> np.ndarray:
        """info[key] of the sub-envs that set it, 0 for the others (paused ones), float64 (N,)."""
        if key not in info:
            return np.zeros(self.n_envs)
        return np.where(info[f"_{key}"], np.asarray(info[key], dtype=np.float64), 0.0)

    def render(self, index: int = 0) -> np.ndarray:
        # the sync vector env holds its sub-envs; the async one can only ask all of them
        frame = self.vec.envs[index].render() if isinstance(self.vec, gym.vector.SyncVectorEnv) else self.vec.call("render")[index]
        if frame is None:
            raise RuntimeError("the env returned no frame; make it with render_mode='rgb_array'")
        return np.asarray(frame)

    def close(self) -> None:
        self.vec.close()
