"""Inference rate of the offline actors (benchmarks/RESULTS.md, "Offline RL"): actions/s at batch 1 and 64.

Builds each actor from its config with the Hopper-v5 medium data's shapes and statistics (the rate does
not depend on the weights) and times ``sample`` under ``torch.no_grad`` on one thread, with and without
Q selection among candidates. Usage: python benchmarks/offline_speed.py [SECONDS_PER_CASE]
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from rlft.algos.critics import TwinQ
from rlft.algos.offline import QSelect
from rlft.config import compose
from rlft.datasets.store import EpisodeStore
from rlft.policies.policy import policy_from_store


def actions_per_s(agent: QSelect, obs: torch.Tensor, seconds: float) -> float:
    """Sampled actions per second for batches like ``obs`` [B, 11], after a short warm-up."""
    stochastic = agent.head.default_stochastic
    with torch.no_grad():
        for _ in range(5):
            agent.sample(obs, stochastic=stochastic)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            agent.sample(obs, stochastic=stochastic)
            calls += 1
        return calls * obs.shape[0] / (time.perf_counter() - start)


def main(seconds: float) -> None:
    torch.set_num_threads(1)
    store = EpisodeStore("hopper-v5-medium")
    # (algo, candidates): None = the config's default (DQL 50, OFQL 20); all softmax Q selection
    for algo, candidates in (("dql", None), ("dql", 1), ("ofql", None), ("ofql", 1), ("ofql", 50)):
        cfg = compose("offline", [f"algo={algo}"]).algo
        actor = policy_from_store(cfg.policy, store).eval()
        critic = TwinQ(actor.encoder.out_dim, actor.action_dim, cfg.critic.hidden, cfg.critic.depth)
        candidates = candidates or int(cfg.select.candidates)
        agent = QSelect(actor, critic, candidates, cfg.select.rule).eval()
        rates = {f"batch_{b}": round(actions_per_s(agent, torch.randn(b, 11), seconds), 1) for b in (1, 64)}
        print(json.dumps({"algo": algo, "candidates": candidates, "rule": cfg.select.rule, **rates, "load": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
