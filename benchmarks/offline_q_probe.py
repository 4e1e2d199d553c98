"""How much an offline run's critic cares about the action, and how far each actor follows it.

    python benchmarks/offline_q_probe.py CRITIC_RUN [ACTOR_RUN ...] [--data hopper-v5-medium]

On 2048 transitions of the dataset (numpy and torch seeds 0), with CRITIC_RUN's final target critic (min of the twins):

* the spread of Q(s, .) over 64 uniform actions per state (mean std and mean max - min), and the mean
  |dQ/da| at the data actions, against the mean Q: the Q term -Q / mean|Q| pulls an actor with
  |dQ/da| / mean|Q| per unit of (normalized) action;
* for each ACTOR_RUN (its final EMA actor, sampled as it trains): mean Q(s, a_pi) - Q(s, a_data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from rlft.algos.offline import load_offline_policy
from rlft.datasets.store import EpisodeStore
from rlft.datasets.transitions import TransitionSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("critic_run", type=Path)
    parser.add_argument("actor_runs", type=Path, nargs="*")
    parser.add_argument("--data", default="hopper-v5-medium")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch = TransitionSampler(EpisodeStore(args.data), ["obs"]).sample(2048, np.random.default_rng(0))
    acting = load_offline_policy(args.critic_run)
    if not hasattr(acting, "critic"):
        raise SystemExit(f"{args.critic_run} acts without a critic (select.candidates 1); name a run with Q selection, e.g. a dql run")
    actor, critic = acting.actor, acting.critic
    state = actor.encode({"obs": batch["obs"]})
    data_action = actor.action_norm(batch["action"])
    with torch.no_grad():
        q_data = critic.target(state, data_action).min(0).values
        uniform = torch.rand(len(state), 64, *data_action.shape[1:]) * 2 - 1
        q_uniform = critic.target(state.repeat_interleave(64, 0), uniform.flatten(0, 1)).min(0).values.view(-1, 64)
    probe = data_action.clone().requires_grad_(True)
    critic(state, probe).min(0).values.sum().backward()
    slope = probe.grad.flatten(1).norm(dim=1).mean().item()
    print(
        f"{args.critic_run}: mean Q {q_data.mean():.1f}; over 64 uniform actions per state: std {q_uniform.std(1).mean():.2f}, "
        f"range {(q_uniform.max(1).values - q_uniform.min(1).values).mean():.2f}; |dQ/da| {slope:.2f} ({100 * slope / q_data.abs().mean():.1f}% of mean |Q|)"
    )
    for run in args.actor_runs:
        loaded = load_offline_policy(run)
        policy = getattr(loaded, "actor", loaded)
        with torch.no_grad():
            action = policy.sample({"obs": batch["obs"]}, stochastic=policy.head.default_stochastic)
            q_pi = critic.target(state, policy.action_norm(action)).min(0).values
        print(f"  {run}: Q(s, a_pi) - Q(s, a_data) = {(q_pi - q_data).mean():+.2f}, mean |a_pi - a_data| {(action - batch['action']).abs().mean():.3f}")


if __name__ == "__main__":
    main()
