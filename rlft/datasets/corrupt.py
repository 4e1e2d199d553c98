"""Data corruption as RIQL defines it (Yang et al. 2024), the benchmark of corruption-robust offline RL and ADG.

A fraction ``rate`` of the transitions gets one element corrupted, each element on its own draw of transitions
(exactly ``round(rate * n)`` of the ``n`` that have that element):

* ``random``: observations, actions and next observations become x + lambda * std(x), lambda ~ U[-scale, scale]
  per dimension (std over the dataset); rewards are replaced by U[-30 scale, 30 scale];
* ``adversarial``: the same box, but lambda is found by projected gradient descent (RIQL's attack: a uniform
  start, :data:`PGD_STEPS` signed-gradient steps of :data:`PGD_STEP` x scale, clipped to the box) on what a
  trained critic says the element is worth (an :class:`Adversary`): Q(s, a) for an observation or an action,
  the value of the next state for a next observation; rewards become -scale x r.

``dynamics`` corrupts the next observation of a transition t, which a store holds as the observation of step
t + 1 of the episode (transitions at an episode's last step have none). ``all`` corrupts observations, actions
and rewards; since observations are next observations too, it corrupts the dynamics with them.

The output store records what was done in its ``corruption`` attribute: kind, on, rate, scale, seed and, per
element, the store rows changed (for dynamics: t + 1). It is there to measure detection (:func:`detection`);
no training code reads it. Only flat float state keys (``obs``, ``obs/<name>``) can be corrupted: a store with
image observations is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from rlft.datasets.store import EpisodeStore, write_episodes
from rlft.errors import ConfigError, DatasetError

KINDS = ("random", "adversarial")
ELEMENTS = ("obs", "action", "reward", "dynamics")
TARGETS = (*ELEMENTS, "all")
ALL = ("obs", "action", "reward")  # what --on all corrupts (next observations are observations)
REWARD_RANGE = 30.0  # random rewards: U[-30 scale, 30 scale] (RIQL)
PGD_STEPS = 100  # RIQL's attack: 100 steps ...
PGD_STEP = 0.01  # ... of 0.01 x scale each
RECORD = "corruption"
_CHUNK = 4096  # rows attacked at once


class Adversary(Protocol):
    """What an adversarial corruption minimises: a trained critic's values (raw observations and actions in, [B] out)."""

    def q(self, obs: dict[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor: ...

    def next_value(self, obs: dict[str, torch.Tensor]) -> torch.Tensor: ...


def state_keys(store: EpisodeStore) -> list[str]:
    """The observation keys of ``store`` (``obs``, ``obs/<name>``), each a flat float vector per step; else a one-line error."""
    keys = sorted(k for k in store.keys if k == "obs" or k.startswith("obs/"))
    if not keys:
        raise DatasetError(f"{store.path}: no observation key ('obs' or 'obs/<name>'); keys: {', '.join(sorted(store.keys))}")
    for key in keys:
        shape, dtype = store.keys[key], store.dtypes[key]
        if len(shape) != 1 or not np.issubdtype(dtype, np.floating):
            raise DatasetError(
                f"{store.path}: observation '{key}' is {dtype} of per-step shape {shape} (an image or not a float vector); "
                "corruption and ADG repair handle flat float state keys only"
            )
    for key in ("action", "reward"):
        if key not in store or not np.issubdtype(store.dtypes[key], np.floating):
            raise DatasetError(f"{store.path}: needs a float '{key}' per step; keys: {', '.join(sorted(store.keys))}")
    return keys


def targets(on: str) -> tuple[str, ...]:
    """The elements ``--on`` names."""
    if on not in TARGETS:
        raise ConfigError(f"--on {on}: choose one of {', '.join(TARGETS)}")
    return ALL if on == "all" else (on,)


def eligible_rows(store: EpisodeStore, element: str) -> np.ndarray:
    """The transitions that have ``element``: every step, but for dynamics only those with a next step in their episode."""
    steps = np.arange(store.n_steps)
    return np.setdiff1d(steps, store.episode_ends - 1) if element == "dynamics" else steps


def pgd(x: torch.Tensor, std: torch.Tensor, scale: float, objective: Callable[[torch.Tensor], torch.Tensor], steps: int, start: torch.Tensor) -> torch.Tensor:
    """x + lambda * std minimising ``objective`` (rows [B, D] -> [B]) over lambda in [-scale, scale]^D: projected signed
    gradient steps of ``PGD_STEP * scale`` from ``start`` (lambda at step 0, in the box)."""
    lam = start.clone()
    for _ in range(steps):
        lam.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(x + lam * std).sum(), lam)
        lam = (lam.detach() - PGD_STEP * scale * grad.sign()).clamp(-scale, scale)
    return (x + lam * std).detach()


def _split(keys: Sequence[str], dims: Sequence[int]) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    bounds = np.cumsum([0, *dims])
    return lambda flat: {k: flat[:, a:b] for k, a, b in zip(keys, bounds[:-1], bounds[1:])}


def _objective(
    element: str, adversary: Adversary, split: Callable[[torch.Tensor], dict[str, torch.Tensor]], obs: np.ndarray, action: np.ndarray
) -> Callable[[torch.Tensor, slice], torch.Tensor]:
    """What the attack on ``element`` minimises for a chunk of attacked rows: Q(s~, a), Q(s, a~) or the value of s'~
    (the other parts of the transition clean)."""
    obs_t, act_t = torch.from_numpy(obs.astype(np.float32)), torch.from_numpy(action.astype(np.float32))
    if element == "obs":
        return lambda z, rows: adversary.q(split(z), act_t[rows])
    if element == "action":
        return lambda z, rows: adversary.q(split(obs_t[rows]), z)
    return lambda z, rows: adversary.next_value(split(z))


def _attack(
    values: np.ndarray, std: np.ndarray, scale: float, objective: Callable[[torch.Tensor, slice], torch.Tensor], steps: int, rng: np.random.Generator
) -> np.ndarray:
    """:func:`pgd` on the rows ``values`` [n, D] in chunks; ``objective(x, rows)`` scores the chunk ``rows`` of the attacked rows."""
    out = np.empty_like(values)
    start = rng.uniform(-scale, scale, size=values.shape)
    for a in range(0, len(values), _CHUNK):
        rows = slice(a, a + _CHUNK)
        x = torch.from_numpy(values[rows].astype(np.float32))
        lam0 = torch.from_numpy(start[rows].astype(np.float32))
        out[rows] = pgd(x, torch.from_numpy(std.astype(np.float32)), scale, lambda z: objective(z, rows), steps, lam0).numpy()
    return out


def corrupt(
    store: EpisodeStore,
    kind: str,
    on: str,
    rate: float,
    scale: float,
    seed: int,
    adversary: Adversary | None = None,
    pgd_steps: int = PGD_STEPS,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The corrupted data arrays of ``store`` and the ``corruption`` record (see the module docstring)."""
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind}: choose one of {', '.join(KINDS)}")
    if not 0.0 < rate <= 1.0:
        raise ConfigError(f"--rate {rate}: the fraction of transitions corrupted must be in (0, 1]")
    if not scale > 0.0:
        raise ConfigError(f"--scale {scale}: the corruption range must be > 0")
    if (kind == "adversarial") != (adversary is not None):
        raise ConfigError("--critic <run folder of an iql, dql or ofql run> is what --kind adversarial attacks with, and only it")
    if RECORD in store.meta:
        raise DatasetError(f"{store.path}: already corrupted ({store.meta[RECORD].get('kind')} on {store.meta[RECORD].get('on')}); corrupt the clean store")
    obs_keys = state_keys(store)
    clean = {k: store[k] for k in store.keys}
    data = {k: v.copy() for k, v in clean.items()}
    obs_dims = [store.keys[k][0] for k in obs_keys]
    split = _split(obs_keys, obs_dims)
    clean_obs = np.concatenate([clean[k] for k in obs_keys], 1)
    rows_of: dict[str, list[int]] = {}
    for element in targets(on):
        rng = np.random.default_rng([seed, ELEMENTS.index(element)])
        eligible = eligible_rows(store, element)
        chosen = np.sort(rng.choice(eligible, size=int(round(rate * len(eligible))), replace=False))
        if len(chosen) == 0:
            raise ConfigError(f"--rate {rate}: corrupts no transition of the {len(eligible)} with {element}; raise the rate")
        rows = chosen + 1 if element == "dynamics" else chosen
        rows_of[element] = rows.tolist()
        if element == "reward":
            r = clean["reward"][rows].astype(np.float64)
            new = rng.uniform(-REWARD_RANGE * scale, REWARD_RANGE * scale, size=len(rows)) if kind == "random" else -scale * r
            data["reward"][rows] = new.astype(data["reward"].dtype)
            continue
        values = clean["action"][rows] if element == "action" else clean_obs[rows]
        std = (clean["action"] if element == "action" else clean_obs).astype(np.float64).std(0)
        if kind == "random":
            new = values + rng.uniform(-scale, scale, size=values.shape) * std
        else:
            assert adversary is not None
            objective = _objective(element, adversary, split, clean_obs[chosen], clean["action"][chosen])
            new = _attack(values, std, scale, objective, pgd_steps, rng)
        if element == "action":
            data["action"][rows] = new.astype(data["action"].dtype)
        else:
            for key, part in split(torch.from_numpy(np.asarray(new))).items():
                data[key][rows] = part.numpy().astype(data[key].dtype)
    record = {"kind": kind, "on": on, "rate": rate, "scale": scale, "seed": seed, "rows": rows_of}
    if kind == "adversarial":
        record["pgd_steps"] = pgd_steps
    return data, record


def corrupt_store(
    src: str | Path,
    out: str | Path,
    kind: str,
    on: str,
    rate: float,
    scale: float,
    seed: int,
    adversary: Adversary | None = None,
    pgd_steps: int = PGD_STEPS,
    adversary_source: str | None = None,
) -> EpisodeStore:
    """Write a corrupted copy of the store ``src`` to ``out``: same episodes and metadata, plus the ``corruption`` record."""
    store = EpisodeStore(src)
    data, record = corrupt(store, kind, on, rate, scale, seed, adversary, pgd_steps)
    if adversary_source is not None:
        record["critic"] = adversary_source
    meta = {k: v for k, v in store.meta.items() if k != "stats"} | {RECORD: record, "corrupted_from": str(store.path)}
    return write_episodes(out, data, store.episode_ends, meta)


def corrupted_rows(record: dict[str, Any]) -> np.ndarray:
    """Every store row a ``corruption`` record says was changed (any element), sorted."""
    rows = [np.asarray(r, dtype=np.int64) for r in record["rows"].values()]
    return np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


def detection(record: dict[str, Any], flagged: np.ndarray) -> dict[str, Any]:
    """Precision and recall of the flagged rows against a ``corruption`` record (null where undefined: nothing flagged),
    and the recall of each element's rows."""
    flagged = np.unique(np.asarray(flagged, dtype=np.int64))
    true = corrupted_rows(record)
    hit = len(np.intersect1d(flagged, true))
    return {
        "precision": hit / len(flagged) if len(flagged) else None,
        "recall": hit / len(true) if len(true) else None,
        "corrupted": int(len(true)),
        "recall_by_element": {e: float(np.isin(np.asarray(r), flagged).mean()) for e, r in record["rows"].items()},
    }
