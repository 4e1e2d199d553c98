"""Window sampling: (observation history, action chunk, rewards, dones) batches from an episode store.

A window anchored at step t of an episode with steps [s, e) holds

* ``obs``      [B, obs_horizon, ...]   steps t-obs_horizon+1 .. t; steps before s repeat step s
* ``action``   [B, horizon, act_dim]   steps t .. t+horizon-1; steps from e on repeat step e-1
* ``reward``   [B, horizon]            0 from e on
* ``cost``     [B, horizon]            0 from e on (stores of safety tasks)
* ``terminated`` [B, horizon]          the episode's last flag repeated from e on
* ``valid``    [B, horizon] bool       False where the window ran past the episode end

Every step of every episode is a valid anchor. Padding repeats edge values (the convention of
Diffusion Policy and DPPO) so a policy trained on it never sees zeros that are not in the data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rlft.datasets.store import EpisodeStore
from rlft.errors import DatasetError


class WindowSampler:
    def __init__(self, store: EpisodeStore, obs_keys: Sequence[str] = ("obs",), obs_horizon: int = 1, horizon: int = 1):
        if obs_horizon < 1 or horizon < 1:
            raise ValueError(f"obs_horizon and horizon must be >= 1 (got {obs_horizon}, {horizon})")
        for key in (*obs_keys, "action"):
            if key not in store:
                raise DatasetError(f"{store.path}: no key '{key}' for the sampler; keys: {', '.join(sorted(store.keys))}")
        self.store = store
        self.obs_keys = list(obs_keys)
        self.obs_horizon = obs_horizon
        self.horizon = horizon
        lengths = np.diff(np.concatenate([[0], store.episode_ends]))
        self._start = np.repeat(store.episode_starts, lengths)
        self._end = np.repeat(store.episode_ends, lengths)

    def __len__(self) -> int:
        return self.store.n_steps

    def windows(self, anchors: np.ndarray) -> dict[str, torch.Tensor]:
        """The windows anchored at global step indices ``anchors`` [B]."""
        t = np.asarray(anchors, dtype=np.int64)[:, None]
        start, end = self._start[t], self._end[t]
        obs_idx = np.maximum(t - np.arange(self.obs_horizon - 1, -1, -1), start)
        ahead = t + np.arange(self.horizon)
        valid = ahead < end
        act_idx = np.minimum(ahead, end - 1)
        batch = {key: torch.from_numpy(self.store[key][obs_idx]) for key in self.obs_keys}
        batch["action"] = torch.from_numpy(self.store["action"][act_idx])
        batch["valid"] = torch.from_numpy(valid)
        for key in ("reward", "cost"):
            if key in self.store:
                batch[key] = torch.from_numpy(np.where(valid, self.store[key][act_idx], 0).astype(np.float32))
        if "terminated" in self.store:
            batch["terminated"] = torch.from_numpy(self.store["terminated"][act_idx].astype(bool))
        return batch

    def sample(self, batch_size: int, rng: np.random.Generator, rows: slice = slice(None)) -> dict[str, torch.Tensor]:
        """``batch_size`` windows with anchors drawn uniformly over all steps; ``rows``: only those of them
        (a data-parallel rank's share: every rank draws the same anchors and builds its rows' windows)."""
        return self.windows(rng.integers(0, len(self), size=batch_size)[rows])
