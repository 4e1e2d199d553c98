"""The safe point-mass benchmark data: the mixed demonstrator (half the sub-envs take the unsafe shortcut, half the
detour; rlft.envs.toy) recorded through rlft's batched envs, with costs, into runs/safe-data/pointmass_safe-mixed.zarr.zip.

    python benchmarks/safe_toy_data.py [STEPS]   (default 50000 transitions)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from rlft.datasets.record import record
from rlft.datasets.store import return_range, write_episodes
from rlft.envs.toy import mixed_safety_demonstrator


class MixedDemonstrator:
    """:func:`mixed_safety_demonstrator` as an acting policy: even sub-envs take the shortcut, odd ones the detour."""

    obs_horizon, act_steps, default_steps, default_stochastic, device = 1, 1, None, False, torch.device("cpu")

    def __init__(self, n_envs: int, seed: int):
        self.rng, self.detour = np.random.default_rng(seed), np.arange(n_envs) % 2 == 1

    def sample(self, obs, noise=None, steps=None, stochastic=False, generator=None):
        return torch.from_numpy(mixed_safety_demonstrator(obs[:, -1].numpy(), self.rng, self.detour[: len(obs)]))[:, None]

    def end_episodes(self, done):
        """No memory."""


def main(steps: int) -> None:
    out = Path("runs/safe-data/pointmass_safe-mixed.zarr.zip")
    out.parent.mkdir(parents=True, exist_ok=True)
    data, ends = record(MixedDemonstrator(20, seed=0), "pointmass_safe", steps=steps, n_envs=20, seed=0, stochastic=False)
    meta = {"source": "benchmarks/safe_toy_data.py", "env": "pointmass_safe", "env_id": "rlft/SafePointMass-v0"}
    meta["ref_returns"] = return_range(data["reward"], ends)
    store = write_episodes(out, data, ends, meta)
    print(store.summary())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50000)
