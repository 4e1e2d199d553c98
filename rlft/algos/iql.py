"""IQL (Kostrikov et al. 2021): implicit Q-learning, never querying Q on actions outside the dataset,
with a generative actor extracted by advantage-weighted regression.

* V(s) fits an upper expectile (``expectile``, 0.7 on locomotion) of min_i Q_i'(s, a) over dataset actions
  (:func:`~rlft.algos.critics.expectile_loss`), an in-sample stand-in for max_a Q;
* twin Q(s, a) by TD to r + gamma (1 - terminal) V(s'), with Polyak targets (``tau``);
* actor: the head's own BC loss per sample (noise MSE for diffusion, flow matching for flow heads), weighted
  by exp(``temperature`` (min_i Q_i'(s, a) - V(s))) clipped at ``max_weight`` (AWR; IQL's Gaussian actor
  maximises the same weighted log-likelihood; a diffusion actor weighted this way is IDQL's / FISOR's);
* rewards scaled by 1000 / (max - min episode return) of the dataset (IQL's locomotion normalisation);
* acting: the actor's own sampler; ``select.candidates`` > 1 picks among samples by Q (IDQL's selection).

The step loop, checkpoints and exact resume are :func:`rlft.runtime.trainer.fit`'s; evaluation is the
shared :func:`rlft.runtime.evaluate.evaluate` of the acting policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn

from rlft.algos.critics import TwinQ, ValueNet, expectile_loss
from rlft.algos.offline import QSelect, check_select, offline_start
from rlft.algos.pretrain import policy_meta
from rlft.algos.registry import LoadOptions
from rlft.datasets.store import EpisodeStore
from rlft.errors import CheckpointError, ConfigError
from rlft.policies.policy import Policy
from rlft.runtime.checkpoint import load_policy, load_weights, read_spec, run_checkpoint, write_spec
from rlft.runtime.evaluate import policy_evaluator
from rlft.runtime.run import Run
from rlft.runtime.trainer import fit
from rlft.schemas import CriticConfig, PolicyConfig, SelectConfig, fraction, learning_rate, non_empty, non_negative, positive

PLOTTED = (("q_loss",), ("v_loss",), ("actor_loss",), ("eval/normalized_score",))  # learning_curve.png panels


@dataclass
class IQLConfig:
    """``algo=iql`` (defaults in configs/algo/iql.yaml): ``expectile`` of V, AWR ``temperature`` and ``max_weight``."""

    name: str = MISSING
    gamma: float = MISSING
    tau: float = MISSING
    expectile: float = MISSING
    temperature: float = MISSING
    max_weight: float = MISSING
    lr: float = MISSING
    normalize_rewards: bool = MISSING
    select: SelectConfig = MISSING
    critic: CriticConfig = MISSING
    policy: PolicyConfig = MISSING

    def __post_init__(self) -> None:
        non_empty(self, "name")
        fraction(self, "gamma", "tau", "expectile")
        positive(self, "max_weight")
        non_negative(self, "temperature")  # 0: plain BC
        learning_rate(self, "lr")


def reward_scale(store: EpisodeStore, length: float = 1000.0) -> float:
    """``length`` / (max - min episode return): IQL's locomotion normalisation with 1000, FISOR's with the env's
    episode limit (1 for a store whose returns are all equal)."""
    returns = store.episode_returns()
    spread = float(returns.max() - returns.min())
    return length / spread if spread > 0 else 1.0


def awr_weights(q: torch.Tensor, v: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """exp(temperature (Q - V)) clipped at ``max_weight``, [B] (no gradient)."""
    return torch.exp(temperature * (q - v)).clamp(max=max_weight).detach()


def _acting(actor: Policy, critic: TwinQ, select: Any) -> nn.Module:
    candidates = int(select["candidates"])
    return actor if candidates == 1 else QSelect(actor, critic, candidates, select["rule"]).eval()


def train_iql(cfg: DictConfig, run: Run) -> nn.Module:
    """Train ``cfg.algo`` (iql) on ``cfg.data`` for ``cfg.train.steps``; returns the acting policy."""
    algo = cfg.algo
    evaluate = policy_evaluator(cfg) if cfg.eval.episodes > 0 else None
    rng, device, store, actor, sampler = offline_start(cfg)
    scale = reward_scale(store) if algo.normalize_rewards else 1.0
    algo_config = OmegaConf.to_container(algo, resolve=True) | {"reward_scale": scale}
    write_spec(run.folder, actor, policy_meta(cfg, f"rlft offline algo={algo.name}, run {run.folder}") | {"algo": algo.name, "algo_config": algo_config})
    hidden, depth = algo.critic.hidden, algo.critic.depth
    critic = TwinQ(actor.encoder.out_dim, actor.horizon * actor.action_dim, hidden, depth).to(device)
    value = ValueNet(actor.encoder.out_dim, hidden, depth).to(device)
    opts = {
        "actor_opt": torch.optim.Adam(actor.parameters(), lr=algo.lr),
        "q_opt": torch.optim.Adam(critic.trained_parameters(), lr=algo.lr),
        "v_opt": torch.optim.Adam(value.parameters(), lr=algo.lr),
    }
    steps, batch_size, obs_keys = cfg.train.steps, cfg.train.batch_size, list(algo.policy.obs_keys)
    eval_every = cfg.eval.every if evaluate is not None else 0

    def step_on(name: str, loss: torch.Tensor) -> None:
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    def update(step: int) -> dict[str, Any]:
        batch = {k: v.to(device) for k, v in sampler.sample(batch_size, rng).items()}
        actor.train()
        with torch.no_grad():
            state, next_state = actor.encode({k: batch[k] for k in obs_keys}), actor.encode({k: batch[f"next_{k}"] for k in obs_keys})
            action = actor.action_norm(batch["action"])
            q_target = critic.target(state, action).min(0).values
        v = value(state)
        v_loss = expectile_loss(q_target - v, algo.expectile).mean()
        step_on("v_opt", v_loss)
        with torch.no_grad():  # the actor and the critic use the updated V, as IQL's learner
            v_new = value(state)
            target = scale * batch["reward"] + algo.gamma * (1 - batch["terminal"]) * value(next_state)
        q = critic(state, action)
        q_loss = ((q - target) ** 2).mean(1).sum()
        step_on("q_opt", q_loss)
        critic.update_target(algo.tau)
        weights = awr_weights(q_target, v_new, algo.temperature, algo.max_weight)
        actor_loss = (weights * actor.loss(batch, reduce=False)).mean()
        step_on("actor_opt", actor_loss)
        metrics: dict[str, Any] = {"q_loss": q_loss.item(), "v_loss": v_loss.item(), "actor_loss": actor_loss.item()}
        metrics |= {"q_mean": q.mean().item(), "v_mean": v.mean().item(), "weight_mean": weights.mean().item()}
        if evaluate is not None and ((eval_every and step % eval_every == 0) or step == steps):
            metrics |= {f"eval/{k}": x for k, x in evaluate(_acting(actor, critic, algo.select), step).items()}
        return metrics

    fit(
        run,
        update,
        steps,
        modules={"policy": actor, "critic": critic, "value": value},
        optimizers=opts,
        generators={"data": rng},
        log_every=cfg.train.log_every,
        checkpoint_every=cfg.train.checkpoint_every,
        desc=f"offline {algo.name}",
        plot=PLOTTED,
    )
    return _acting(actor.eval(), critic, algo.select)


def load_iql_policy(folder: Path, checkpoint: Path | None = None, options: LoadOptions = LoadOptions()) -> nn.Module:
    """What an iql run acts with: its actor, with Q selection among ``select.candidates`` samples where > 1
    (the run's own ``algo.select`` unless ``options`` say otherwise). IQL keeps no EMA: weights are the trained ones."""
    if options.weights == "ema":
        raise ConfigError(f"{folder} is an iql run: it keeps no EMA weights; use weights=auto or weights=policy")
    algo = read_spec(folder).get("meta", {}).get("algo_config")
    if algo is None:
        raise CheckpointError(f"{folder}/policy.json has no 'algo_config'; it was not written by rlft offline algo=iql")
    select = {
        "candidates": algo["select"]["candidates"] if options.select_candidates is None else options.select_candidates,
        "rule": algo["select"]["rule"] if options.select_rule is None else options.select_rule,
    }
    check_select(int(select["candidates"]), select["rule"], "select")
    checkpoint = run_checkpoint(folder, checkpoint)
    actor = load_policy(folder, weights="policy", checkpoint=checkpoint)
    critic = TwinQ(actor.encoder.out_dim, actor.horizon * actor.action_dim, int(algo["critic"]["hidden"]), int(algo["critic"]["depth"]))
    load_weights(checkpoint, {"critic": critic})
    return _acting(actor, critic.eval(), select)
