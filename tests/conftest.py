import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; MuJoCo reads it when first imported

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_episodes(lengths, obs_dim=3, act_dim=2, seed=0):
    """Concatenated toy episodes whose obs[t, 0] is the global step index (easy to check windows)."""
    g = np.random.default_rng(seed)
    total = int(sum(lengths))
    obs = g.normal(size=(total, obs_dim)).astype(np.float32)
    obs[:, 0] = np.arange(total)
    action = g.normal(size=(total, act_dim)).astype(np.float32)
    action[:, 0] = np.arange(total)
    ends = np.cumsum(lengths)
    terminated = np.zeros(total, bool)
    terminated[ends - 1] = True
    return {"obs": obs, "action": action, "reward": np.ones(total, np.float32), "terminated": terminated, "truncated": np.zeros(total, bool)}, ends
