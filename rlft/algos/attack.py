"""The adversary of ``rlft data corrupt --kind adversarial``: the trained critic of an offline run.

RIQL attacks with a pre-trained agent's critic; here any iql, dql or ofql run folder serves:

* Q(s, a): the mean of its twin Q networks on the run's own normalized inputs;
* the value of a next state: an iql run's V(s'); a dql / ofql run's Q(s', pi(s')), with pi its EMA actor's
  deterministic sample from zero noise (differentiable in s', as RIQL's attack on next observations is).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlft.algos.critics import TwinQ, ValueNet
from rlft.algos.offline import learns_critic
from rlft.datasets.store import EpisodeStore
from rlft.errors import ConfigError
from rlft.policies.policy import Policy
from rlft.runtime.checkpoint import load_policy, load_weights, read_spec, resolve_policy, run_checkpoint

CRITIC_ALGOS = ("iql", "dql", "ofql")


class CriticAdversary:
    """:class:`rlft.datasets.corrupt.Adversary` from an actor (for its normalizers and, without V, its actions),
    its twin Q and, for iql, its V."""

    def __init__(self, actor: Policy, critic: TwinQ, value: ValueNet | None):
        self.actor, self.critic, self.value = actor.eval().requires_grad_(False), critic.eval().requires_grad_(False), value
        if value is not None:
            value.eval().requires_grad_(False)

    def q(self, obs: dict[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        return self.critic(self.actor.encode(obs), self.actor.action_norm(action[:, None])).mean(0)

    def next_value(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        state = self.actor.encode(obs)
        if self.value is not None:
            return self.value(state)
        noise = torch.zeros(state.shape[0], self.actor.horizon, self.actor.action_dim)
        return self.critic(state, self.actor.sample_normalized(obs, noise=noise, stochastic=False)).mean(0)


def critic_adversary(folder: str | Path, store: EpisodeStore, state_keys: list[str]) -> CriticAdversary:
    """The adversary of the offline run ``folder`` (newest checkpoint), checked against the store it attacks."""
    folder = resolve_policy(folder)
    meta = read_spec(folder).get("meta", {})
    algo, config = meta.get("algo"), meta.get("algo_config")
    if algo not in CRITIC_ALGOS or config is None:
        raise ConfigError(f"--critic {folder}: a {algo or 'pretrained'} run has no trained Q; give an {', '.join(CRITIC_ALGOS)} run folder")
    if algo != "iql" and not learns_critic(config):
        raise ConfigError(f"--critic {folder}: this {algo} run trained no critic (algo.eta=0 with one candidate); give a run with a Q")
    checkpoint = run_checkpoint(folder)
    actor = load_policy(folder, weights="policy" if algo == "iql" else "ema", checkpoint=checkpoint)
    if sorted(actor.obs_shapes) != sorted(state_keys) or actor.obs_horizon != 1:
        raise ConfigError(
            f"--critic {folder}: its Q reads {', '.join(sorted(actor.obs_shapes))} with history {actor.obs_horizon}; "
            f"the store has {', '.join(state_keys)} (history 1 needed)"
        )
    if any(tuple(store.keys[k]) != actor.obs_shapes[k] for k in state_keys) or store.keys["action"] != (actor.action_dim,):
        raise ConfigError(f"--critic {folder}: trained on observations or actions of other sizes than {store.path}'s")
    hidden, depth = int(config["critic"]["hidden"]), int(config["critic"]["depth"])
    critic = TwinQ(actor.encoder.out_dim, actor.horizon * actor.action_dim, hidden, depth)
    value = ValueNet(actor.encoder.out_dim, hidden, depth) if algo == "iql" else None
    load_weights(checkpoint, {"critic": critic} | ({"value": value} if value is not None else {}))
    return CriticAdversary(actor, critic, value)
