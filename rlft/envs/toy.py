"""Tiny bundled control tasks for tests and examples: a point mass that must reach a goal.

``rlft/PointMass-v0``: position p in [-1, 1]^2 starts uniformly at random, the goal g = (0.5, 0.5) is
fixed; the action is a velocity in [-1, 1]^2 applied for dt = 0.1 (p stays in [-1.5, 1.5]^2). Reward
per step: -|p - g|; the episode terminates with success when |p - g| < 0.05 and is truncated after 50
steps. Observation: (p, g - p). A straight run takes 5-20 steps; the poor demonstrator below curls
around the goal and wastes most of the episode, which is what fine-tuning should fix.

``rlft/SafePointMass-v0`` (``pointmass_safe``): the same point mass with a hazard on the straight path.
Starts near (-0.8, -0.8), the goal is (0.6, 0.6), 50 steps; a disc of radius 0.35 around (-0.1, -0.1)
costs 1 per step spent inside it (``info["cost"]``); success within 0.1 of the goal. The straight run is short and crosses the disc; the
detour along the bottom and right edges is safe and about twice as long, so a reward-only learner takes
the shortcut. :func:`mixed_safety_demonstrator` records both, half the episodes each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

GOAL = np.array([0.5, 0.5])
ID = "rlft/PointMass-v0"
SAFE_ID = "rlft/SafePointMass-v0"
SAFE_START, SAFE_GOAL, HAZARD, HAZARD_RADIUS = np.array([-0.8, -0.8]), np.array([0.6, 0.6]), np.array([-0.1, -0.1]), 0.35
DETOUR = np.array([0.6, -0.8])  # the detour's corner: along the bottom edge, then up the right one


class PointMass(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-3.0, 3.0, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.pos = np.zeros(2)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.pos, GOAL - self.pos]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1.0, 1.0, size=2)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.pos = np.clip(self.pos + 0.1 * np.clip(action, -1.0, 1.0), -1.5, 1.5)
        dist = float(np.linalg.norm(self.pos - GOAL))
        success = dist < 0.05
        return self._obs(), -dist, success, False, {"success": success}

    def render(self) -> np.ndarray:
        """A 96 x 96 frame: the goal in green, the point mass in white."""
        frame = np.zeros((96, 96, 3), dtype=np.uint8)
        for point, color in ((GOAL, (0, 200, 0)), (self.pos, (255, 255, 255))):
            col, row = ((point + 1.5) / 3.0 * 95).round().astype(int)
            frame[max(0, 95 - row - 2) : 95 - row + 3, max(0, col - 2) : col + 3] = color
        return frame


def curling_demonstrator(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A poor expert for ``PointMass``: heads to the goal at 70 degrees off course, with noise. [N, 4] -> [N, 2]."""
    to_goal = obs[:, 2:]
    angle = np.deg2rad(70.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    direction = to_goal @ rot.T / np.maximum(np.linalg.norm(to_goal, axis=1, keepdims=True), 1e-6)
    return np.clip(direction + 0.3 * rng.standard_normal(direction.shape), -1.0, 1.0).astype(np.float32)


class SafePointMass(gym.Env):
    """The point mass with a hazard disc between its start and its goal; reward -|p - g|, cost 1 inside the disc."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-3.0, 3.0, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.pos = SAFE_START.copy()

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.pos, SAFE_GOAL - self.pos]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.pos = SAFE_START + self.np_random.uniform(-0.1, 0.1, size=2)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.pos = np.clip(self.pos + 0.1 * np.clip(action, -1.0, 1.0), -1.5, 1.5)
        dist = float(np.linalg.norm(self.pos - SAFE_GOAL))
        cost = float(np.linalg.norm(self.pos - HAZARD) < HAZARD_RADIUS)
        success = dist < 0.1
        return self._obs(), -dist, success, False, {"success": success, "cost": cost}

    def render(self) -> np.ndarray:
        """A 96 x 96 frame: the hazard in red, the goal in green, the point mass in white."""
        frame = np.zeros((96, 96, 3), dtype=np.uint8)
        rows, cols = np.mgrid[0:96, 0:96]
        xy = np.stack([cols / 95 * 3.0 - 1.5, (95 - rows) / 95 * 3.0 - 1.5], -1)
        frame[np.linalg.norm(xy - HAZARD, axis=-1) < HAZARD_RADIUS] = (120, 0, 0)
        for point, color in ((SAFE_GOAL, (0, 200, 0)), (self.pos, (255, 255, 255))):
            col, row = ((point + 1.5) / 3.0 * 95).round().astype(int)
            frame[max(0, 95 - row - 2) : 95 - row + 3, max(0, col - 2) : col + 3] = color
        return frame


def mixed_safety_demonstrator(obs: np.ndarray, rng: np.random.Generator, detour: np.ndarray) -> np.ndarray:
    """Demonstrations for ``SafePointMass``: straight to the goal (unsafe) where ``detour`` [N] is False, else
    via the corner (0.6, -0.8) until level with it, then up (safe); full speed with noise 0.2. [N, 4] -> [N, 2]."""
    pos, to_goal = obs[:, :2], obs[:, 2:]
    to_corner = DETOUR - pos
    via_corner = detour & (to_corner[:, 0] > 0.05)
    direction = np.where(via_corner[:, None], to_corner, to_goal)
    step = direction / np.maximum(np.abs(direction).max(1, keepdims=True), 1e-6)  # full speed on the larger axis
    return np.clip(step * np.minimum(1.0, np.abs(direction).max(1, keepdims=True) / 0.1) + 0.2 * rng.standard_normal(step.shape), -1, 1).astype(np.float32)


def mixed_by_index(obs: np.ndarray, rng: np.random.Generator, index: np.ndarray) -> np.ndarray:
    """:func:`mixed_safety_demonstrator` with the detour taken by the odd sub-envs ``index`` [N]: half the episodes each."""
    return mixed_safety_demonstrator(obs, rng, index % 2 == 1)


def curling_by_index(obs: np.ndarray, rng: np.random.Generator, index: np.ndarray) -> np.ndarray:
    """:func:`curling_demonstrator`, the same for every sub-env."""
    return curling_demonstrator(obs, rng)


# Scripted demonstrators by task and name (``rlft collect env=<task> expert.scripted=<name>``):
# (obs [N, obs_dim], rng, sub-env index [N]) -> actions [N, act_dim].
DEMONSTRATORS: dict[str, dict[str, Callable[[np.ndarray, np.random.Generator, np.ndarray], np.ndarray]]] = {
    "pointmass": {"curling": curling_by_index},
    "pointmass_safe": {"mixed": mixed_by_index},
}

if ID not in gym.registry:
    gym.register(id=ID, entry_point=PointMass, max_episode_steps=50)
if SAFE_ID not in gym.registry:
    gym.register(id=SAFE_ID, entry_point=SafePointMass, max_episode_steps=50)
