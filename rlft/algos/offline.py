"""Offline RL with a generative actor and a twin-Q critic: DQL (diffusion) and OFQL (mean flow).

Both methods share one skeleton (OFQL is DQL's with another actor); the config's ``algo`` says which:

* critic: twin Q with Polyak targets, TD target r + gamma (1 - terminal) min_i Q_i'(s', a'), a' from
  the EMA actor (or, with ``max_q_backup``, the max over ``backup_samples`` actions per Q first);
* actor: BC loss of its head + eta * (-Q_i(s, a_pi) / mean|Q_j|) with a_pi sampled *with gradients*
  by the head's own sampler, (i, j) a random order of the two critics (DQL's). For DQL the sampler is
  the whole T-step DDPM chain (backprop through the chain); for OFQL it is the one-step mean-flow map
  a = eps - u(eps, 0, 1; s), so no chain is differentiated (alpha = eta / E|Q|);
* acting: ``select.candidates`` samples per state, one picked by max or softmax of the target Q.

The step loop, checkpoints and exact resume are :func:`rlft.runtime.trainer.fit`'s; evaluation is
:func:`rlft.runtime.evaluate.evaluate` through :class:`QSelect`. Evaluation numbers are logged, never
used to pick weights: the result is the final EMA actor.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rlft.algos.critics import TwinQ
from rlft.algos.pretrain import check_data, policy_meta
from rlft.algos.registry import LoadOptions
from rlft.datasets.store import EpisodeStore
from rlft.datasets.transitions import TransitionSampler
from rlft.errors import CheckpointError, ConfigError
from rlft.policies.acting import ExportSpec, Graph
from rlft.policies.ema import EMA
from rlft.policies.policy import Obs, Policy, policy_from_store
from rlft.runtime.checkpoint import load_policy, load_weights, read_spec, run_checkpoint, write_spec
from rlft.runtime.evaluate import policy_evaluator
from rlft.runtime.run import Run
from rlft.runtime.schedules import warmup_cosine
from rlft.runtime.seeding import seed_everything
from rlft.runtime.trainer import fit

SELECT_RULES = ("max", "softmax")
PLOTTED = (("critic_loss",), ("bc_loss",), ("q_mean",), ("eval/normalized_score",))  # learning_curve.png panels


def check(cfg: DictConfig) -> None:
    """Config and data errors a user can fix, before anything is written."""
    check_select(cfg.algo.select.candidates, cfg.algo.select.rule, "algo.select")
    check_transitions(cfg)


def check_transitions(cfg: DictConfig) -> EpisodeStore:
    """A single-action actor and a dataset with usable transitions for it (the checks every offline method needs)."""
    algo = cfg.algo
    if algo.policy.horizon != 1 or algo.policy.act_steps != 1:
        raise ConfigError(
            f"offline RL learns Q over single actions: set algo.policy.horizon=1 and algo.policy.act_steps=1 (got {algo.policy.horizon}, "
            f"{algo.policy.act_steps})"
        )
    check_data(cfg, algo.policy)
    store = EpisodeStore(cfg.data.path)
    TransitionSampler(store, list(algo.policy.obs_keys))  # rewards, terminals, usable transitions
    return store


def check_select(candidates: int, rule: str, where: str) -> None:
    """A usable Q selection (else a one-line ConfigError naming ``where`` it was set)."""
    if rule not in SELECT_RULES or candidates < 1:
        raise ConfigError(f"{where}: rule must be one of {', '.join(SELECT_RULES)} and candidates >= 1 (got {rule}, {candidates})")


def learns_critic(algo: Mapping[str, Any]) -> bool:
    """Whether an offline algo config trains a critic: pure BC (eta 0, one candidate) needs none."""
    return bool(algo["eta"]) or int(algo["select"]["candidates"]) > 1


def _repeat(obs: Obs, n: int) -> Obs:
    """Each observation n times in a row (dim 0)."""
    if isinstance(obs, torch.Tensor):
        return obs.repeat_interleave(n, 0)
    return {k: v.repeat_interleave(n, 0) for k, v in obs.items()}


class QSelect(nn.Module):
    """An actor that samples ``candidates`` chunks per observation and keeps one by the critic's target Q.

    An :class:`~rlft.policies.acting.ActingPolicy`, so :func:`rlft.runtime.evaluate.evaluate` runs it as it is.
    ``rule``: ``max`` (argmax Q) or ``softmax`` (sample with probabilities softmax(Q), DQL's).
    """

    def __init__(self, actor: Policy, critic: TwinQ, candidates: int, rule: str):
        super().__init__()
        self.actor, self.critic, self.candidates, self.rule = actor, critic, candidates, rule
        self.obs_horizon, self.act_steps = actor.obs_horizon, actor.act_steps

    @property
    def default_steps(self) -> int:
        return self.actor.default_steps

    @property
    def default_stochastic(self) -> bool:
        return self.actor.default_stochastic

    @property
    def device(self) -> torch.device:
        return self.actor.device

    def end_episodes(self, done: torch.Tensor) -> None:
        """No memory across chunks."""

    def score(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """What selection ranks candidates by, [B]: min_i of the target Q_i (higher is better)."""
        return self.critic.target(state, action).min(0).values

    @torch.no_grad()
    def sample(
        self, obs: Obs, noise: torch.Tensor | None = None, steps: int | None = None, stochastic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Raw action chunks [B, H, A], one per observation; ``noise`` [B, candidates, H, A]: each candidate's
        initial noise (drawn where None)."""
        if self.candidates == 1:
            return self.actor.sample(obs, None if noise is None else noise[:, 0], steps, stochastic, generator)
        many = _repeat(obs, self.candidates)
        chunks = self.actor.sample(many, None if noise is None else noise.flatten(0, 1), steps, stochastic, generator)
        q = self.score(self.actor.encode(many), self.actor.action_norm(chunks)).view(-1, self.candidates)
        if self.rule == "softmax":
            pick = torch.multinomial(torch.softmax(q, 1), 1, generator=generator).squeeze(1)
        else:  # max (and subclasses' own argmax rules)
            pick = q.argmax(1)
        return chunks.view(q.shape[0], self.candidates, *chunks.shape[1:])[torch.arange(q.shape[0]), pick]

    def export_spec(self, steps: int) -> ExportSpec:
        """The candidates and the pick in one graph: ``(noise [B, candidates, H, A], obs) -> the chunk of
        highest score``; a softmax pick is random given the noise, so it is refused (ConfigError)."""
        spec = self.actor.export_spec(steps)
        if self.candidates == 1:
            return spec
        if self.rule == "softmax":
            raise ConfigError(
                f"select.rule=softmax draws the pick at random from softmax(Q), which no deterministic graph can; use select.rule=max "
                f"(the candidate of highest Q among {self.candidates}) or select.candidates=1 (the actor alone)"
            )
        chunk = Graph(lambda noise, obs: self.sample(obs, noise, steps), ("noise",))
        meta = {"select": {"candidates": self.candidates, "rule": self.rule}}
        return replace(spec, kind="q_select", chunk=chunk, noise_shape=(self.candidates, self.actor.horizon, self.actor.action_dim), meta=meta)


def actor_action(policy: Policy, obs: Obs) -> torch.Tensor:
    """a ~ pi(.|s) in normalized action space [B, H, A], with gradients through the head's sampler.

    DDPM: all T ancestral steps are differentiated; mean flow: one step eps - u(eps, 0, 1).
    """
    return policy.action_norm(policy.sample(obs, stochastic=policy.head.default_stochastic))


def q_objective(q: torch.Tensor) -> torch.Tensor:
    """-Q_i(s, a_pi) / mean|Q_j| for a random order (i, j) of the twins; q [2, B] -> scalar."""
    i = int(torch.randint(2, ()))
    return -q[i].mean() / q[1 - i].abs().mean().detach()


def offline_start(cfg: DictConfig) -> tuple[np.random.Generator, torch.device, EpisodeStore, Policy, TransitionSampler]:
    """What every offline learner starts from: the seeded data RNG, the device, the dataset, the actor
    ``cfg.algo.policy`` built for it (normalizers from the data) and its transition sampler."""
    rng = seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    store = EpisodeStore(cfg.data.path)
    actor = policy_from_store(cfg.algo.policy, store).to(device)
    return rng, device, store, actor, TransitionSampler(store, list(cfg.algo.policy.obs_keys), actor.obs_horizon)


def train_offline(cfg: DictConfig, run: Run) -> QSelect:
    """Train ``cfg.algo`` on ``cfg.data`` for ``cfg.train.steps``; returns the final EMA actor with Q selection."""
    algo = cfg.algo
    evaluate = policy_evaluator(cfg) if cfg.eval.episodes > 0 else None
    rng, device, store, actor, sampler = offline_start(cfg)
    # `rlft eval run=...` rebuilds what the run acts with from this: EMA actor + Q selection (load_offline_policy)
    algo_config = OmegaConf.to_container(algo, resolve=True)
    write_spec(run.folder, actor, policy_meta(cfg, f"rlft offline algo={algo.name}, run {run.folder}") | {"algo": algo.name, "algo_config": algo_config})
    critic = TwinQ(actor.encoder.out_dim, actor.horizon * actor.action_dim, algo.critic.hidden, algo.critic.depth).to(device)
    ema = EMA(actor, decay=algo.ema.decay, every=algo.ema.every, start=algo.ema.start)
    steps, batch_size = cfg.train.steps, cfg.train.batch_size
    actor_opt = torch.optim.Adam(actor.parameters(), lr=algo.lr)
    critic_opt = torch.optim.Adam(critic.trained_parameters(), lr=algo.lr)
    factor = warmup_cosine(0, steps, 0.0) if algo.lr_decay else (lambda step: 1.0)
    actor_sched, critic_sched = (torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (actor_opt, critic_opt))
    obs_keys = list(algo.policy.obs_keys)
    grad_clip = algo.grad_clip if algo.grad_clip else float("inf")
    eval_every = cfg.eval.every if evaluate is not None else 0
    learn_q = learns_critic(algo)
    clock = {"t": time.perf_counter()}

    def acting(model: Policy) -> QSelect:
        return QSelect(model, critic, algo.select.candidates, algo.select.rule).eval()

    def next_value(next_obs: dict[str, torch.Tensor], next_state: torch.Tensor) -> torch.Tensor:
        """min_i Q_i'(s', a') [B], a' from the EMA actor (max over samples first with max_q_backup)."""
        n = algo.backup_samples if algo.max_q_backup else 1
        with torch.no_grad():
            a_next = actor_action(ema.model, _repeat(next_obs, n))
            q = critic.target(next_state.repeat_interleave(n, 0), a_next).view(2, -1, n)
        return q.max(2).values.min(0).values

    def update(step: int) -> dict[str, Any]:
        batch = {k: v.to(device) for k, v in sampler.sample(batch_size, rng).items()}
        obs = {k: batch[k] for k in obs_keys}
        next_obs = {k: batch[f"next_{k}"] for k in obs_keys}
        actor.train()
        metrics: dict[str, Any] = {}
        if learn_q:
            with torch.no_grad():
                state, next_state = actor.encode(obs), actor.encode(next_obs)
                target = batch["reward"] + algo.gamma * (1 - batch["terminal"]) * next_value(next_obs, next_state)
            q = critic(state, actor.action_norm(batch["action"]))
            critic_loss = ((q - target) ** 2).mean(1).sum()
            critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_grad = nn.utils.clip_grad_norm_(critic.trained_parameters(), grad_clip)
            critic_opt.step()
            critic_sched.step()
            critic.update_target(algo.tau)
            metrics |= {"critic_loss": critic_loss.item(), "q_mean": q.mean().item(), "critic_grad_norm": critic_grad.item()}

        actor_loss = bc_loss = actor.loss(batch)
        if algo.eta:
            critic.requires_grad_(False)  # the Q term's gradient is for the actor only
            q_loss = q_objective(critic(state, actor_action(actor, obs)))
            critic.q.requires_grad_(True)
            actor_loss = bc_loss + algo.eta * q_loss
            metrics["q_loss"] = q_loss.item()
        actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        actor_grad = nn.utils.clip_grad_norm_(actor.parameters(), grad_clip)
        actor_opt.step()
        ema.update(actor, step)
        actor_sched.step()
        metrics |= {"bc_loss": bc_loss.item(), "actor_loss": actor_loss.item(), "actor_grad_norm": actor_grad.item(), "lr": actor_sched.get_last_lr()[0]}
        if step % cfg.train.log_every == 0:
            now = time.perf_counter()
            metrics["steps_per_s"] = cfg.train.log_every / (now - clock["t"])
            clock["t"] = now
        if evaluate is not None and ((eval_every and step % eval_every == 0) or step == steps):
            metrics.update({f"eval/{k}": v for k, v in evaluate(acting(ema.model), step).items()})
            clock["t"] = time.perf_counter()
        return metrics

    fit(
        run,
        update,
        steps,
        modules={"policy": actor, "ema": ema, "critic": critic},
        optimizers={"actor_opt": actor_opt, "critic_opt": critic_opt, "actor_sched": actor_sched, "critic_sched": critic_sched},
        generators={"data": rng},
        log_every=cfg.train.log_every,
        checkpoint_every=cfg.train.checkpoint_every,
        desc=f"offline {algo.name}",
        plot=PLOTTED,
    )
    return acting(ema.model)


def load_offline_policy(folder: Path, checkpoint: Path | None = None, options: LoadOptions = LoadOptions()) -> nn.Module:
    """What a dql / ofql run acts with: the EMA actor of the newest (or given) checkpoint, with Q selection
    among ``options.select_candidates`` samples by ``options.select_rule`` (the run's own ``algo.select``
    where None; the actor alone for 1). ``options.weights=policy`` is the raw actor, without selection."""
    if options.weights == "policy":
        if options.selects:
            raise ConfigError("select.* applies to the Q selection of the EMA actor; weights=policy is the raw actor")
        return load_policy(folder, weights="policy", checkpoint=checkpoint)
    algo = read_spec(folder).get("meta", {}).get("algo_config")
    if algo is None:
        raise CheckpointError(f"{folder}/policy.json has no 'algo_config'; it was written by an older rlft, train the run again")
    candidates = int(algo["select"]["candidates"] if options.select_candidates is None else options.select_candidates)
    rule = algo["select"]["rule"] if options.select_rule is None else options.select_rule
    check_select(candidates, rule, "select")
    if candidates > 1 and not learns_critic(algo):
        raise ConfigError(f"{folder} trained no critic (algo.eta=0 with one candidate: plain BC), so it has no Q to select by; use select.candidates=1")
    checkpoint = run_checkpoint(folder, checkpoint)
    actor = load_policy(folder, weights="ema", checkpoint=checkpoint)
    if candidates == 1:
        return actor
    critic = TwinQ(actor.encoder.out_dim, actor.horizon * actor.action_dim, int(algo["critic"]["hidden"]), int(algo["critic"]["depth"]))
    load_weights(checkpoint, {"critic": critic})
    return QSelect(actor, critic.eval(), candidates, rule).eval()
