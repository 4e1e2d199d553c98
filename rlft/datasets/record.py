"""Recording D4RL-style datasets: an acting policy in rlft's batched envs, one transition per env step."""

from __future__ import annotations

import numpy as np
import torch

from rlft.envs import make
from rlft.envs.obs import obs_map
from rlft.envs.wrappers import ObsHistory
from rlft.policies.acting import ActingPolicy
from rlft.progress import Progress

DTYPES = {"obs": np.float32, "action": np.float32, "reward": np.float32, "terminated": bool, "truncated": bool, "cost": np.float32}


@torch.no_grad()
def record(
    policy: ActingPolicy, env_name: str, steps: int, n_envs: int, seed: int, stochastic: bool, backend: str = "auto", desc: str = "record"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run ``policy`` in ``n_envs`` batched envs (sub-env i seeded ``seed + i``) for exactly ``steps`` transitions.

    Returns (data, episode_ends): obs [T, obs_dim] float32 (the observation the action was taken in; image tasks:
    one key per observation key instead, ``state`` [T, 9] float32, ``agentview`` [T, 84, 84, 3] uint8, ...),
    action [T, act_dim] float32 (the raw executed action), reward [T] float32, terminated [T] bool,
    truncated [T] bool (and cost [T] float32 for safety tasks), with T = ``steps``; each episode's transitions are contiguous (sub-env by sub-env,
    in time order) and end with one flag set; episodes still running at the end get ``truncated`` on
    their last step. Of each chunk the policy samples, the first ``act_steps`` actions are executed one
    env step at a time; a sub-env whose episode ended sits out the rest of the chunk, and in the last
    round only as many sub-envs step as transitions are still missing.
    """
    base = make(env_name, n_envs, backend=backend, seed=seed, device=policy.device)
    env = ObsHistory(base, policy.obs_horizon)
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    rows: dict[str, list[torch.Tensor]] = {"active": []}
    recorded = 0
    try:
        obs, _ = env.reset()
        policy.end_episodes(torch.ones(n_envs, dtype=torch.bool))
        with Progress(steps, desc, every=max(1, steps // 10)) as bar:  # off a terminal: a line per tenth
            while recorded < steps:
                chunk = policy.sample(obs, stochastic=stochastic, generator=generator)
                running = torch.ones(n_envs, dtype=torch.bool, device=base.device)
                ended = torch.zeros_like(running)
                for k in range(policy.act_steps):
                    active = running & (torch.cumsum(running, 0) <= steps - recorded)  # the budget goes to the first sub-envs
                    if not bool(active.any()):
                        break
                    current = obs_map(lambda x: x[:, -1], obs)
                    obs, reward, terminated, truncated, info = env.step(chunk[:, k], None if bool(active.all()) else active)
                    step = (current if isinstance(current, dict) else {"obs": current}) | {"action": chunk[:, k], "reward": reward}
                    step |= {"terminated": terminated, "truncated": truncated} | ({"cost": info["cost"]} if base.has_cost else {})
                    for key, value in step.items():
                        rows.setdefault(key, []).append(value.cpu())
                    rows["active"].append(active.cpu())
                    recorded += int(active.sum())
                    bar.advance(int(active.sum()))
                    ended |= info["done"]
                    running &= active & ~info["done"]
                policy.end_episodes(ended)
    finally:
        env.close()
    return _episodes({k: torch.stack(v).numpy() for k, v in rows.items()})


def _episodes(rows: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-step rows [S, N, ...] with their ``active`` mask [S, N] -> episodes, sub-env by sub-env, and their ends."""
    active = rows.pop("active")
    per_env = []
    for i in range(active.shape[1]):
        taken = active[:, i]
        if not taken.any():
            continue
        stream = {k: np.asarray(v[taken, i], dtype=DTYPES.get(k, np.uint8 if v.dtype == np.uint8 else np.float32)) for k, v in rows.items()}
        if not (stream["terminated"][-1] or stream["truncated"][-1]):
            stream["truncated"][-1] = True  # still running when recording stopped
        per_env.append(stream)
    data = {k: np.concatenate([s[k] for s in per_env]) for k in per_env[0]}
    return data, np.flatnonzero(data["terminated"] | data["truncated"]) + 1


def record_successes(
    policy: ActingPolicy, env_name: str, episodes: int, n_envs: int, max_episode_steps: int, seed: int, backend: str = "auto", desc: str = "demos"
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """The first ``episodes`` successful episodes of ``policy`` (robomimic keeps only successful demonstrations).

    Records in rounds of ``4 x n_envs x max_episode_steps`` transitions (round r seeded ``seed + r * n_envs``) with
    :func:`record` and keeps the episodes that ended ``terminated`` with a positive last reward (the robosuite
    tasks end an episode on success with reward 1). Returns (data, episode_ends, attempts): ``attempts``
    counts every finished episode seen, failed ones included, up to the last one kept.
    """
    kept: list[dict[str, np.ndarray]] = []
    attempts, round_ = 0, 0
    while len(kept) < episodes:
        round_seed, label = seed + round_ * n_envs, f"{desc} round {round_ + 1}"
        data, ends = record(policy, env_name, 4 * n_envs * max_episode_steps, n_envs, round_seed, stochastic=True, backend=backend, desc=label)
        starts = np.concatenate([[0], ends[:-1]])
        for start, end in zip(starts, ends):
            if data["truncated"][end - 1] and end - start < max_episode_steps:
                continue  # cut short by the end of the round: neither success nor failure
            attempts += 1
            if data["terminated"][end - 1] and data["reward"][end - 1] > 0:
                kept.append({k: v[start:end] for k, v in data.items()})
                if len(kept) == episodes:
                    break
        round_ += 1
        if round_ >= 3 and not kept:
            raise RuntimeError(f"{desc}: no successful episode in {attempts} attempts on {env_name}; the demonstrator does not solve this task")
    out = {k: np.concatenate([e[k] for e in kept]) for k in kept[0]}
    return out, np.cumsum([len(e["reward"]) for e in kept]), attempts
