"""FISOR (Zheng et al., ICLR 2024): feasibility-guided safe offline RL with a weighted diffusion actor.

A hard state constraint (no cost, ever) learnt from data through Hamilton-Jacobi reachability:

* costs are relabelled h = ``cost_scale`` (25) where the step's cost > 0, else -1;
* feasibility critics: twin Q_h(s, a) by regression to (1 - gamma) h + gamma max(h, V_h(s')) (h alone at a
  terminal step), V_h(s) a *reversed* expectile (``cost_expectile`` 0.9 on the negative differences) of
  max_i Q_h,i'(s, a) over dataset actions, so V_h tends to the best (least) feasibility reachable with the
  data; V_h(s) <= 0 marks a feasible state;
* reward critics as IQL's: V(s) an upper expectile (``expectile`` 0.9) of min_i Q_i'(s, a), Q by TD to
  r + gamma (1 - terminal) V(s'); rewards scaled by (episode length) / (max - min episode return);
* actor: a DDPM (T = 5, VP) trained by the noise loss weighted per sample by
  1[V_h > 0] clip(exp(``cost_temperature`` (V_h - Q_h)), 1, ``max_cost_weight``)   (infeasible: get back)
  + 1[V_h <= 0] 1[Q_h <= 0] clip(exp(``reward_temperature`` (Q - V)), 0, ``max_reward_weight``)   (feasible: AWR)
  with the target critics and the current values; per training step the actor takes ``actor_updates``
  steps on batches of ``actor_batch_size``, the critics one on ``train.batch_size`` (the reference's 2 x 1024
  and 256); the actor's EMA (1 - 0.001) is what acts;
* acting: ``select.candidates`` (16) samples of the EMA actor, the one with the least max_i Q_h,i' kept.

Against the reference code (JAX, ZhengYinan-AIR/FISOR): time-limit truncations are not terminals here (the
reference marks them done, so the critics never bootstrap through a timeout); the transition sampler drops
the truncated last step instead, as D4RL does. The actor's residual blocks are rlft's (pre-LN Mish, two
layers) with the reference's width, depth, layer norm and dropout; the sampler clips x0 rather than each x_t.
The step loop, checkpoints and exact resume are :func:`rlft.runtime.trainer.fit`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn

from rlft.algos.critics import TwinQ, ValueNet, expectile_loss
from rlft.algos.iql import reward_scale
from rlft.algos.offline import QSelect, check_transitions, offline_start
from rlft.algos.pretrain import policy_meta
from rlft.algos.registry import LoadOptions
from rlft.errors import CheckpointError, ConfigError, DatasetError
from rlft.policies.ema import EMA
from rlft.policies.policy import Policy
from rlft.runtime.checkpoint import latest_checkpoint, load_policy, load_weights, read_spec, write_spec
from rlft.runtime.evaluate import policy_evaluator
from rlft.runtime.run import Run
from rlft.runtime.trainer import fit
from rlft.schemas import CriticConfig, EMAConfig, PolicyConfig, fraction, learning_rate, non_empty, non_negative, positive

PLOTTED = (("q_loss", "v_loss"), ("qh_loss", "vh_loss"), ("actor_loss",), ("feasible_fraction",), ("eval/normalized_score",), ("eval/cost_mean",))


@dataclass
class FISORSelectConfig:
    """Acting: ``candidates`` samples of the EMA actor, the least-Q_h one kept."""

    candidates: int = MISSING

    def __post_init__(self) -> None:
        positive(self, "candidates")


@dataclass
class FISORConfig:
    """``algo=fisor`` (defaults in configs/algo/fisor.yaml, the reference's one hyper-parameter set)."""

    name: str = MISSING
    gamma: float = MISSING
    tau: float = MISSING
    expectile: float = MISSING
    cost_expectile: float = MISSING
    cost_scale: float = MISSING
    reward_temperature: float = MISSING
    cost_temperature: float = MISSING
    max_reward_weight: float = MISSING
    max_cost_weight: float = MISSING
    lr: float = MISSING
    actor_lr_decay_steps: int = MISSING
    actor_batch_size: int = MISSING
    actor_updates: int = MISSING
    normalize_rewards: bool = MISSING
    ema: EMAConfig = MISSING
    select: FISORSelectConfig = MISSING
    critic: CriticConfig = MISSING
    policy: PolicyConfig = MISSING

    def __post_init__(self) -> None:
        non_empty(self, "name")
        fraction(self, "gamma", "tau", "expectile", "cost_expectile")
        positive(self, "cost_scale", "max_reward_weight", "max_cost_weight", "actor_batch_size", "actor_updates")
        non_negative(self, "reward_temperature", "cost_temperature", "actor_lr_decay_steps")
        learning_rate(self, "lr")
        if self.max_cost_weight < 1:
            raise ConfigError(f"algo.max_cost_weight={self.max_cost_weight}: the infeasible weights are clipped to [1, max_cost_weight], so it must be >= 1")


def check(cfg: DictConfig) -> None:
    """The offline checks, and a dataset with a per-step ``cost``."""
    store = check_transitions(cfg)
    if "cost" not in store:
        keys = ", ".join(sorted(store.keys))
        raise DatasetError(f"{store.path}: FISOR needs a per-step 'cost' key (keys: {keys}); record a safety task (env=hopper_vel, ...)")


def feasibility_labels(cost: torch.Tensor, cost_scale: float) -> torch.Tensor:
    """h = ``cost_scale`` where cost > 0, else -1 (FISOR's relabelling), same shape as ``cost``."""
    return torch.where(cost > 0, torch.full_like(cost, cost_scale), torch.full_like(cost, -1.0))


def feasibility_target(h: torch.Tensor, next_vh: torch.Tensor, terminal: torch.Tensor, gamma: float) -> torch.Tensor:
    """The HJ-reachability target of Q_h: (1 - gamma) h + gamma max(h, V_h(s')), or h at a terminal step. [B]."""
    return torch.where(terminal > 0, h, (1 - gamma) * h + gamma * torch.maximum(h, next_vh))


def actor_weights(q: torch.Tensor, v: torch.Tensor, qh: torch.Tensor, vh: torch.Tensor, algo: Any) -> torch.Tensor:
    """Per-sample weights of the actor's noise loss [B] (no gradient); see the module docstring."""
    infeasible = (vh > 0).float()
    feasible = ((vh <= 0) & (qh <= 0)).float()
    back = torch.exp(algo.cost_temperature * (vh - qh)).clamp(1.0, algo.max_cost_weight)
    advantage = torch.exp(algo.reward_temperature * (q - v)).clamp(0.0, algo.max_reward_weight)
    return (infeasible * back + feasible * advantage).detach()


class FeasibleSelect(QSelect):
    """Acts with the candidate of least feasibility value max_i Q_h,i'(s, a) (FISOR's selection)."""

    def __init__(self, actor: Policy, feasibility: TwinQ, candidates: int):
        super().__init__(actor, feasibility, candidates, "least_qh")

    def score(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return -self.critic.target(state, action).max(0).values


def _critics(actor: Policy, algo: Any) -> tuple[TwinQ, ValueNet, TwinQ, ValueNet]:
    """Reward Q and V, feasibility Q_h and V_h: ReLU MLPs ``depth`` x ``hidden`` (the reference's 2 x 256)."""
    state, action, hidden, depth = actor.encoder.out_dim, actor.horizon * actor.action_dim, int(algo["critic"]["hidden"]), int(algo["critic"]["depth"])
    twin = lambda: TwinQ(state, action, hidden, depth, nn.ReLU)  # noqa: E731
    value = lambda: ValueNet(state, hidden, depth, nn.ReLU)  # noqa: E731
    return twin(), value(), twin(), value()


def train_fisor(cfg: DictConfig, run: Run) -> nn.Module:
    """Train FISOR on ``cfg.data`` (with costs) for ``cfg.train.steps``; returns the acting policy."""
    algo = cfg.algo
    evaluate = policy_evaluator(cfg) if cfg.eval.episodes > 0 else None
    rng, device, store, actor, sampler = offline_start(cfg)
    scale = reward_scale(store, cfg.env.max_episode_steps) if algo.normalize_rewards else 1.0
    algo_config = OmegaConf.to_container(algo, resolve=True) | {"reward_scale": scale}
    write_spec(run.folder, actor, policy_meta(cfg, f"rlft offline algo={algo.name}, run {run.folder}") | {"algo": algo.name, "algo_config": algo_config})
    critic, value, feasibility, feasibility_value = (m.to(device) for m in _critics(actor, algo))
    ema = EMA(actor, decay=algo.ema.decay, every=algo.ema.every, start=algo.ema.start)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=algo.lr)
    decay = algo.actor_lr_decay_steps
    cosine = (lambda step: 0.5 * (1 + np.cos(np.pi * min(step, decay) / decay))) if decay else (lambda step: 1.0)
    opts = {
        "actor_opt": actor_opt,
        "q_opt": torch.optim.Adam(critic.trained_parameters(), lr=algo.lr),
        "v_opt": torch.optim.Adam(value.parameters(), lr=algo.lr),
        "qh_opt": torch.optim.Adam(feasibility.trained_parameters(), lr=algo.lr),
        "vh_opt": torch.optim.Adam(feasibility_value.parameters(), lr=algo.lr),
        "actor_sched": torch.optim.lr_scheduler.LambdaLR(actor_opt, cosine),
    }
    steps, obs_keys = cfg.train.steps, list(algo.policy.obs_keys)
    critic_batch, actor_batch = cfg.train.batch_size, algo.actor_batch_size
    eval_every = cfg.eval.every if evaluate is not None else 0

    def step_on(name: str, loss: torch.Tensor) -> None:
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    def acting(model: Policy) -> FeasibleSelect:
        return FeasibleSelect(model, feasibility, algo.select.candidates).eval()

    def update(step: int) -> dict[str, Any]:
        batch = {k: v.to(device) for k, v in sampler.sample(max(critic_batch, actor_batch * algo.actor_updates), rng).items()}
        actor.train()
        with torch.no_grad():
            state = actor.encode({k: batch[k] for k in obs_keys})
            action = actor.action_norm(batch["action"])
            q_t, qh_t = critic.target(state, action).min(0).values, feasibility.target(state, action).max(0).values
            weights = actor_weights(q_t, value(state), qh_t, feasibility_value(state), algo)
        actor_losses = []
        for k in range(algo.actor_updates):  # the reference's two actor steps on two halves of its batch
            part = slice(k * actor_batch, (k + 1) * actor_batch)
            loss = (weights[part] * actor.loss({key: x[part] for key, x in batch.items()}, reduce=False)).mean()
            step_on("actor_opt", loss)
            actor_losses.append(loss.item())
        opts["actor_sched"].step()
        ema.update(actor, step)

        # critics on the first ``critic_batch`` transitions: V, Q, V_h, Q_h in the reference's order
        b = {key: x[:critic_batch] for key, x in batch.items()}
        with torch.no_grad():
            s, s_next, a = state[:critic_batch], actor.encode({k: b[f"next_{k}"] for k in obs_keys}), action[:critic_batch]
        v = value(s)
        v_loss = expectile_loss(q_t[:critic_batch] - v, algo.expectile).mean()
        step_on("v_opt", v_loss)
        with torch.no_grad():
            target = scale * b["reward"] + algo.gamma * (1 - b["terminal"]) * value(s_next)
        q = critic(s, a)
        q_loss = ((q - target) ** 2).mean(1).sum()
        step_on("q_opt", q_loss)
        critic.update_target(algo.tau)

        vh = feasibility_value(s)
        vh_loss = expectile_loss(qh_t[:critic_batch] - vh, 1.0 - algo.cost_expectile).mean()  # reversed: weight on diff < 0
        step_on("vh_opt", vh_loss)
        with torch.no_grad():
            h = feasibility_labels(b["cost"], algo.cost_scale)
            target_h = feasibility_target(h, feasibility_value(s_next), b["terminal"], algo.gamma)
        qh = feasibility(s, a)
        qh_loss = ((qh - target_h) ** 2).mean(1).sum()
        step_on("qh_opt", qh_loss)
        feasibility.update_target(algo.tau)

        metrics: dict[str, Any] = {"q_loss": q_loss.item(), "v_loss": v_loss.item(), "qh_loss": qh_loss.item(), "vh_loss": vh_loss.item()}
        metrics |= {"actor_loss": float(np.mean(actor_losses)), "weight_mean": weights.mean().item(), "lr": opts["actor_sched"].get_last_lr()[0]}
        metrics |= {"q_mean": q.mean().item(), "vh_mean": vh.mean().item(), "feasible_fraction": (vh <= 0).float().mean().item()}
        if evaluate is not None and ((eval_every and step % eval_every == 0) or step == steps):
            metrics |= {f"eval/{k}": x for k, x in evaluate(acting(ema.model), step).items()}
        return metrics

    modules = {"policy": actor, "ema": ema, "critic": critic, "value": value, "feasibility": feasibility, "feasibility_value": feasibility_value}
    fit(
        run,
        update,
        steps,
        modules=modules,
        optimizers=opts,
        generators={"data": rng},
        log_every=cfg.train.log_every,
        checkpoint_every=cfg.train.checkpoint_every,
        desc=f"offline {algo.name}",
        plot=PLOTTED,
    )
    return acting(ema.model)


def load_fisor_policy(folder: Path, checkpoint: Path | None = None, options: LoadOptions = LoadOptions()) -> nn.Module:
    """What a fisor run acts with: the EMA actor with least-Q_h selection among ``select.candidates`` samples
    (the run's own unless ``options.select_candidates`` says otherwise; the actor alone for 1).
    ``weights=policy`` is the raw actor, without selection."""
    if options.select_rule is not None:
        raise ConfigError("select.rule: FISOR keeps the candidate of least feasibility value Q_h; only select.candidates can change")
    if options.weights == "policy":
        if options.selects:
            raise ConfigError("select.* applies to the selection of the EMA actor; weights=policy is the raw actor")
        return load_policy(folder, weights="policy", checkpoint=checkpoint)
    algo = read_spec(folder).get("meta", {}).get("algo_config")
    if algo is None:
        raise CheckpointError(f"{folder}/policy.json has no 'algo_config'; it was not written by rlft offline algo=fisor")
    candidates = int(algo["select"]["candidates"] if options.select_candidates is None else options.select_candidates)
    if candidates < 1:
        raise ConfigError(f"select.candidates={candidates}: must be >= 1")
    checkpoint = Path(checkpoint or latest_checkpoint(folder))
    actor = load_policy(folder, weights="ema", checkpoint=checkpoint)
    if candidates == 1:
        return actor
    feasibility = _critics(actor, algo)[2]
    load_weights(checkpoint, {"feasibility": feasibility})
    return FeasibleSelect(actor, feasibility.eval(), candidates).eval()
