"""Transition sampling for offline RL: (s, a, r, s', terminal) batches from an episode store.

Next observations are built within episodes (the store holds no ``next_obs``), as D4RL's
``qlearning_dataset`` does:

* step t < last step of its episode: s' = the window at t + 1, terminal = 0;
* the last step of an episode that ended by ``terminated``: terminal = 1 (no bootstrap), so s' is
  never used (it is filled with s);
* the last step of an episode that ended otherwise (``truncated`` by a time limit, or cut off by
  the end of the recording): the store has no next observation, so the transition is dropped
  (D4RL drops timeout steps the same way).

Observations are windows of ``obs_horizon`` steps built by :class:`WindowSampler` (history before
an episode's start repeats its first observation), so s and s' have the policy's input layout.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rlft.datasets.sampler import WindowSampler
from rlft.datasets.store import EpisodeStore
from rlft.errors import DatasetError


class TransitionSampler:
    """Uniform batches over the usable transitions of ``store``.

    ``sample`` returns ``{<obs key>: [B, T, ...], action: [B, 1, A], reward: [B], terminal: [B] float,
    next_<obs key>: [B, T, ...]}`` with T = ``obs_horizon``, and ``cost: [B]`` where the store has costs.
    """

    def __init__(self, store: EpisodeStore, obs_keys: Sequence[str] = ("obs",), obs_horizon: int = 1):
        for key in ("reward", "terminated"):
            if key not in store:
                raise DatasetError(f"{store.path}: offline RL needs '{key}' per step; keys: {', '.join(sorted(store.keys))}")
        self.windows = WindowSampler(store, obs_keys, obs_horizon=obs_horizon, horizon=1)
        self.obs_keys = list(obs_keys)
        steps = np.arange(store.n_steps)
        last = np.zeros(store.n_steps, bool)
        last[store.episode_ends - 1] = True
        terminated = store["terminated"].astype(bool)
        self.terminal = last & terminated
        self.indices = steps[~last | terminated]
        if len(self.indices) == 0:
            raise DatasetError(f"{store.path}: no transition has a next observation (every episode is one truncated step)")

    def __len__(self) -> int:
        return len(self.indices)

    def transitions(self, steps: np.ndarray) -> dict[str, torch.Tensor]:
        """The transitions starting at global step indices ``steps`` [B] (each must be usable)."""
        steps = np.asarray(steps, dtype=np.int64)
        terminal = self.terminal[steps]
        now = self.windows.windows(steps)
        nxt = self.windows.windows(np.where(terminal, steps, steps + 1))
        batch = {k: now[k] for k in self.obs_keys}
        batch |= {f"next_{k}": nxt[k] for k in self.obs_keys}
        batch["action"] = now["action"]
        batch["reward"] = now["reward"][:, 0]
        if "cost" in now:
            batch["cost"] = now["cost"][:, 0]
        batch["terminal"] = torch.from_numpy(terminal.astype(np.float32))
        return batch

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions drawn uniformly over the usable ones."""
        return self.transitions(self.indices[rng.integers(0, len(self.indices), size=batch_size)])
