"""Reward-hacking diagnostics of a fine-tuning run, measured against its demonstrations.

A policy that exploits its reward (most visibly a proxy reward: ``env=hopper_fwd``, :mod:`rlft.envs.proxy`)
leaves the demonstrations' manifold. Four numbers tell how far, logged at every evaluation of
``rlft finetune`` (``diag/*``, and ``eval/true_*`` on proxy tasks):

* ``diag/data_loss``: the learner's data-anchor loss on held-out demonstrations (every 10th episode of the
  run's ``data=`` store, never seen by the anchor), on fixed windows with fixed noise: a data likelihood
  proxy; its value before any update is ``diag/data_loss_base``. DPPO and ReinFlow: the fine-tuned
  policy's pretraining loss; ResiP: the demonstrated actions' NLL under base + residual; DSRL has none
  (the base never changes and the noise actor has no likelihood of actions).
* ``diag/jerk``: the mean norm of the executed actions' second difference a_t - 2 a_(t-1) + a_(t-2) within
  the evaluation episodes (raw action units); ``diag/jerk_data`` is the demonstrations' own.
* ``diag/state_distance``: the mean distance from each visited state (at every chunk start of the
  evaluation episodes) to its nearest demonstration state, in the data's standardized units;
  ``diag/state_distance_data`` is the same for the held-out demonstration states (what "on the data" measures).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Mapping

import numpy as np
import torch
from omegaconf import DictConfig

from rlft.datasets.sampler import WindowSampler
from rlft.datasets.store import EpisodeStore
from rlft.errors import DatasetError
from rlft.policies.policy import Policy

HELD_OUT_EVERY = 10  # episode i is held out when i % 10 == 9
MAX_REFERENCE_STATES = 10_000
MAX_HELD_OUT_WINDOWS = 2048


def second_difference_norm(actions: np.ndarray) -> np.ndarray:
    """||a_t - 2 a_(t-1) + a_(t-2)|| for t >= 2 of one episode's actions [T, A] -> [T - 2]."""
    actions = np.asarray(actions, dtype=np.float64)
    return np.linalg.norm(actions[2:] - 2 * actions[1:-1] + actions[:-2], axis=-1)


def mean_jerk(episodes: list[np.ndarray]) -> float | None:
    """The step-weighted mean of :func:`second_difference_norm` over episodes [T_i, A]; None when none has 3 steps."""
    values = [second_difference_norm(a) for a in episodes if len(a) >= 3]
    return float(np.concatenate(values).mean()) if values else None


def nearest_distance(points: torch.Tensor, reference: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Distance from each of ``points`` [M, D] to its nearest row of ``reference`` [R, D] -> [M]."""
    return torch.cat([torch.cdist(points[i : i + chunk], reference).min(dim=1).values for i in range(0, len(points), chunk)])


def _spread(indices: np.ndarray, most: int) -> np.ndarray:
    """At most ``most`` of ``indices``, evenly spaced (deterministic)."""
    return indices if len(indices) <= most else indices[np.linspace(0, len(indices) - 1, most).round().astype(np.int64)]


class Demonstrations:
    """A run's demonstration store split by episode: the anchor's training episodes and the held-out ones.

    ``obs_key``, ``obs_horizon``, ``horizon``: the policy's windows. With fewer than 10 episodes nothing
    is held out (the held-out numbers then use the training episodes, and say less).
    """

    def __init__(self, store: EpisodeStore, obs_key: str, obs_horizon: int, horizon: int):
        self.store, self.obs_key = store, obs_key
        self.sampler = WindowSampler(store, [obs_key], obs_horizon, horizon)
        lengths = np.diff(np.concatenate([[0], store.episode_ends]))
        self.episode = np.repeat(np.arange(store.n_episodes), lengths)
        held = self.episode % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
        if not held.any():  # fewer than 10 episodes: no split, every step on both sides
            held[:] = True
        self.held_steps = np.flatnonzero(held)
        self.train_steps = np.flatnonzero(~held) if not held.all() else self.held_steps
        obs = np.asarray(store[obs_key], dtype=np.float32)[self.train_steps]
        self.mean, self.std = torch.from_numpy(obs.mean(0)), torch.from_numpy(obs.std(0) + 1e-6)

    # what only the diagnostics need is computed on first use (the DDRL anchor draws windows only)
    @cached_property
    def held_windows(self) -> dict[str, torch.Tensor]:
        """Fixed held-out windows (at most 2048, evenly spread) for :meth:`data_loss`."""
        return self.sampler.windows(_spread(self.held_steps, MAX_HELD_OUT_WINDOWS))

    @cached_property
    def reference(self) -> torch.Tensor:
        """At most 10k training-episode states, standardized: what :meth:`state_distance` measures against."""
        return self.standardize(torch.from_numpy(np.asarray(self.store[self.obs_key])[_spread(self.train_steps, MAX_REFERENCE_STATES)]))

    @cached_property
    def state_distance_data(self) -> float:
        """:meth:`state_distance` of the held-out demonstration states (at most 2048)."""
        return self.state_distance(torch.from_numpy(np.asarray(self.store[self.obs_key])[_spread(self.held_steps, MAX_HELD_OUT_WINDOWS)]))

    @cached_property
    def jerk_data(self) -> float | None:
        """:func:`mean_jerk` of the held-out demonstration episodes."""
        actions, ends = np.asarray(self.store["action"]), self.store.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        return mean_jerk([actions[starts[i] : ends[i]] for i in np.unique(self.episode[self.held_steps])])

    def standardize(self, states: torch.Tensor) -> torch.Tensor:
        """States [M, D] in the demonstrations' standardized units."""
        return (states.float() - self.mean) / self.std

    def anchor_batch(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` windows anchored uniformly over the training episodes' steps (the DDRL anchor's data)."""
        return self.sampler.windows(self.train_steps[rng.integers(0, len(self.train_steps), size=batch_size)])

    @torch.no_grad()
    def data_loss(self, loss: Callable[[Mapping[str, torch.Tensor]], torch.Tensor], policy: Policy) -> float:
        """``loss`` (a policy's pretraining loss, or a learner's data anchor) on the held-out windows, with
        ``policy`` (whose device it uses) in eval mode and the same noise every call (the global torch RNG is
        forked and restored: training draws are untouched)."""
        device, was_training = policy.action_norm.center.device, policy.training
        policy.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(0)
                return float(loss({k: v.to(device) for k, v in self.held_windows.items()}))
        finally:
            policy.train(was_training)

    def state_distance(self, states: torch.Tensor) -> float:
        """Mean distance of visited ``states`` [M, D] (raw) to their nearest demonstration state (standardized units)."""
        return float(nearest_distance(self.standardize(states.cpu()), self.reference).mean())

    def diagnostics(self, trace: dict[str, Any], loss: Callable[[Mapping[str, torch.Tensor]], torch.Tensor] | None, policy: Policy) -> dict[str, float]:
        """``diag/*`` of one evaluation's ``trace`` (:func:`rlft.runtime.evaluate.evaluate`) and of the learner's
        data ``loss`` where it has one (``policy``: the run's policy, for :meth:`data_loss`)."""
        out = {"diag/state_distance": self.state_distance(trace["states"]), "diag/state_distance_data": self.state_distance_data}
        if trace["jerk"] is not None:
            out["diag/jerk"] = trace["jerk"]
        if self.jerk_data is not None:
            out["diag/jerk_data"] = self.jerk_data
        if loss is not None:
            out["diag/data_loss"] = self.data_loss(loss, policy)
        return out


def demonstrations_for(cfg: DictConfig, base: Policy) -> Demonstrations | None:
    """The run's ``data=`` demonstrations for the diagnostics; None where the store is missing or its observations /
    actions do not fit ``base`` (``finetune.yaml``'s default data is Hopper's: other tasks name theirs with data=)."""
    path = cfg.get("data", {}).get("path")
    if not path:
        return None
    key, shape = next(iter(base.obs_shapes.items()))
    try:
        store = EpisodeStore(path)
    except DatasetError:
        return None
    if key not in store or store.keys[key] != tuple(shape) or store.keys.get("action") != (base.action_dim,):
        return None
    return Demonstrations(store, key, base.obs_horizon, base.horizon)
