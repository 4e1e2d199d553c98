"""Behaviour cloning of a generative policy: the head's own loss on dataset windows, with EMA weights.

The step loop, logging, checkpoints and resume are :func:`rlft.runtime.trainer.fit`'s; this file holds
the loss, the optimiser and the schedule.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import torch
from omegaconf import DictConfig

from rlft.datasets.sampler import WindowSampler
from rlft.datasets.store import EpisodeStore
from rlft.envs.registry import check_fits_env
from rlft.errors import ConfigError
from rlft.policies import draws
from rlft.policies.ema import EMA
from rlft.policies.policy import Policy, policy_from_store
from rlft.runtime.checkpoint import write_spec
from rlft.runtime.distributed import data_parallel
from rlft.runtime.evaluate import policy_evaluator, reference_returns
from rlft.runtime.run import Run
from rlft.runtime.schedules import warmup_cosine
from rlft.runtime.seeding import seed_everything
from rlft.runtime.trainer import fit

PLOTTED = (("loss",), ("eval/return_mean",))  # learning_curve.png panels


def policy_meta(cfg: DictConfig, source: str) -> dict[str, Any]:
    """What a trained policy's ``policy.json`` records: its env, reference returns, data and origin."""
    refs = reference_returns(cfg)
    return {
        "env": cfg.data.get("env") or cfg.env.name,
        "ref_returns": {"random": refs[0], "expert": refs[1]} if refs else None,
        "data": str(cfg.data.path),
        "source": source,
    }


def check_data(cfg: DictConfig, policy: Mapping[str, Any]) -> None:
    """The dataset exists, matches its checksums, holds the keys of ``policy`` (a policy config) and was recorded in
    the chosen env. A store without checksums (another tool's, an older rlft's) trains as it is."""
    store = EpisodeStore(cfg.data.path)
    if store.has_checksums:
        store.verify()
    missing = [k for k in (*policy["obs_keys"], "action") if k not in store]
    if missing:
        raise ConfigError(
            f"policy {policy['name']} needs key(s) {', '.join(missing)} but {store.path} has {', '.join(sorted(store.keys))}; set policy.obs_keys"
        )
    if cfg.data.get("env") and cfg.data.env != cfg.env.name:
        raise ConfigError(f"data {cfg.data.path} was recorded in '{cfg.data.env}' but env={cfg.env.name}; choose env={cfg.data.env}")
    if cfg.data.get("env"):  # one state key is compared with the env's Box; image / multi-key observations are not
        obs_keys = policy["obs_keys"]
        state = store.keys[obs_keys[0]] if len(obs_keys) == 1 and len(store.keys[obs_keys[0]]) == 1 else None
        check_fits_env(f"data {store.path}", state, store.keys["action"], cfg.env)


def check(cfg: DictConfig) -> None:
    """What ``rlft pretrain`` refuses before anything is written."""
    check_data(cfg, cfg.policy)


class _BatchLoss(torch.nn.Module):
    """The policy's mean loss on a batch as a module's forward (what DistributedDataParallel wraps)."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.policy.loss(batch)


def pretrain(cfg: DictConfig, run: Run) -> Policy:
    """Train ``cfg.policy`` on ``cfg.data`` for ``cfg.train.steps``; returns the EMA policy.

    With ``cfg.eval.episodes``, the EMA policy is evaluated every ``cfg.eval.every`` steps and at the end.
    Under torchrun each rank trains on its rows of every global batch of ``cfg.train.batch_size``
    (:mod:`rlft.runtime.distributed`); rank 0 evaluates.
    """
    evaluate = policy_evaluator(cfg) if cfg.eval.episodes > 0 else None
    rng = seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    store = EpisodeStore(cfg.data.path)
    policy = policy_from_store(cfg.policy, store).to(device)
    sampler = WindowSampler(store, obs_keys=list(cfg.policy.obs_keys), obs_horizon=policy.obs_horizon, horizon=policy.horizon)
    if run.world.main:
        write_spec(run.folder, policy, policy_meta(cfg, f"rlft pretrain, run {run.folder}"))
    ema = EMA(policy, decay=cfg.ema.decay, every=cfg.ema.every, start=cfg.ema.start)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.train.warmup, cfg.train.steps, cfg.train.min_lr / cfg.train.lr))
    batch_size, world = cfg.train.batch_size, run.world
    rows = world.rows(batch_size)  # this rank's rows of the global batch (all of it in one process)
    loss_of = data_parallel(_BatchLoss(policy), world)  # DDP averages the ranks' gradients in backward
    eval_every = cfg.eval.every if evaluate is not None else 0
    clock = {"t": time.perf_counter()}

    def update(step: int) -> dict[str, Any]:
        batch = {k: v.to(device) for k, v in sampler.sample(batch_size, rng, rows).items()}
        policy.train()
        with draws.shard(world.rank, world.size):
            loss = loss_of(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), float("inf"))
        opt.step()
        sched.step()
        ema.update(policy, step)
        metrics: dict[str, Any] = world.mean({"loss": loss.item()}) | {"grad_norm": grad_norm.item(), "lr": sched.get_last_lr()[0]}
        if step % cfg.train.log_every == 0:
            now = time.perf_counter()
            metrics["samples_per_s"] = batch_size * cfg.train.log_every / (now - clock["t"])
            clock["t"] = now
        if world.main and evaluate is not None and ((eval_every and step % eval_every == 0) or step == cfg.train.steps):
            metrics.update({f"eval/{k}": v for k, v in evaluate(ema.model, step).items()})
            clock["t"] = time.perf_counter()
        return metrics

    fit(
        run,
        update,
        cfg.train.steps,
        modules={"policy": policy, "ema": ema},
        optimizers={"opt": opt, "sched": sched},
        generators={"data": rng},
        log_every=cfg.train.log_every,
        checkpoint_every=cfg.train.checkpoint_every,
        desc="pretrain",
        plot=PLOTTED,
    )
    return ema.model
