"""Safety tasks: a per-step constraint cost next to the reward, and the metrics safe RL reports.

* Velocity-constrained locomotion (Safety-Gymnasium's velocity v1 tasks on gymnasium's v5 models):
  ``hopper_vel``, ``walker2d_vel``, ``halfcheetah_vel``, ``ant_vel``, ``swimmer_vel``; cost 1 for a step
  whose forward velocity (the change of x over the step, gymnasium's ``x_velocity``) exceeds the task's
  limit, else 0. Safety-Gymnasium's v1 limits are kept; its Ant uses the planar speed, here the forward
  velocity is constrained for every task (one rule).
* Tasks whose gymnasium env puts ``info["cost"]`` itself: bullet-safety-gym's Run / Circle tasks (the
  ``safety`` extra) and rlft's bundled safe point mass (:mod:`rlft.envs.toy`).

Metrics (DSRL's): normalized cost (C + eps) / (kappa + eps) with eps = 1 only when the cost limit kappa
is 0; a policy is safe when its normalized (mean episode) cost is below 1.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

# Safety-Gymnasium velocity v1 limits (m/s) on the gymnasium v5 models.
VELOCITY_LIMITS = {"Hopper-v5": 0.7402, "Walker2d-v5": 2.3415, "HalfCheetah-v5": 3.2096, "Ant-v5": 2.6222, "Swimmer-v5": 0.2282}
SAFE_VELOCITY = {f"{gym_id.split('-')[0].lower()}_vel": gym_id for gym_id in VELOCITY_LIMITS}  # hopper_vel -> Hopper-v5, ...
COST_LIMIT = 10.0  # the episode cost limit FISOR and the DSRL benchmark evaluate with
_COSTS_IN_INFO = {"rlft/SafePointMass-v0"}


def velocity_cost(x_velocity: np.ndarray, limit: float) -> np.ndarray:
    """1 for a step whose forward velocity exceeds ``limit``, else 0 (float64, the shape of ``x_velocity``)."""
    return (np.asarray(x_velocity) > limit).astype(np.float64)


def costs_in_info(gym_id: str) -> bool:
    """Whether the gymnasium env ``gym_id`` reports a per-step ``info["cost"]`` itself."""
    if gym_id in _COSTS_IN_INFO:
        return True
    entry = gym.spec(gym_id).entry_point
    return isinstance(entry, str) and entry.startswith("bullet_safety_gym")


class VelocityCost(gym.Wrapper):
    """A gymnasium locomotion env with ``info["cost"]`` = 1[info["x_velocity"] > limit]."""

    def __init__(self, env: gym.Env, limit: float) -> None:
        super().__init__(env)
        self.limit = float(limit)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["cost"] = float(velocity_cost(info["x_velocity"], self.limit))
        return obs, reward, terminated, truncated, info


class CostPenalty(gym.Wrapper):
    """reward - ``weight`` x info["cost"]: a fixed Lagrangian weight (DSRL's data comes from policies trained under
    several); ``info["reward"]`` keeps the task's own reward."""

    def __init__(self, env: gym.Env, weight: float) -> None:
        super().__init__(env)
        self.weight = float(weight)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["reward"] = reward
        return obs, reward - self.weight * info["cost"], terminated, truncated, info


def normalized_cost(cost: float, limit: float) -> float:
    """(C + eps) / (kappa + eps), eps = 1 only when the limit kappa is 0 (DSRL's normalisation)."""
    eps = 1.0 if limit == 0 else 0.0
    return (float(cost) + eps) / (float(limit) + eps)
