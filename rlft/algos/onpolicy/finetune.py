"""``rlft finetune`` with chain PPO (DPPO, ReinFlow, ResiP): one iteration = rollout + PPO update.

The provider (named by the algorithm's registry spec) decides what is trained: a copy of the base's
chain (DPPO, ReinFlow) or a residual over the frozen base (ResiP, one env step per rollout step). The
run's ``policy`` weights are the provider's ``actor`` (for ResiP the frozen base, so the run is
self-contained); the critic V(s) always sees the base's normalized observation history.

The run itself (seeding, checkpoints, evaluation, logging) is :func:`rlft.algos.online.run_online`'s.
Each iteration starts from freshly reset envs seeded by the iteration number, so a resumed run replays
exactly what an uninterrupted one does.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from rlft.algos.online import run_online
from rlft.algos.onpolicy.ppo import ChainPPO, Critic, ImageCritic
from rlft.algos.onpolicy.providers import Provider
from rlft.algos.onpolicy.rollout import RewardScaler, collect_rollout
from rlft.algos.registry import entry_point, get
from rlft.envs import make
from rlft.envs.wrappers import ActionChunk, ObsHistory
from rlft.policies.acting import ActingPolicy
from rlft.policies.policy import Policy
from rlft.runtime.run import Run
from rlft.runtime.schedules import warmup_cosine


class ChainPPOLearner:
    """The :class:`~rlft.algos.online.OnlineLearner` of DPPO, ReinFlow and ResiP."""

    def __init__(self, cfg: DictConfig, base: Policy, rng: np.random.Generator, device: torch.device):
        algo = cfg.algo
        self.cfg = cfg
        self.provider: Provider = entry_point(get(algo.name).provider)(algo, base).to(device)  # type: ignore[arg-type]
        self.policy = self.provider.actor
        if base.has_images:  # pixels: the critic has its own encoder (DPPO's), on the normalized observation dict
            self.critic: nn.Module = ImageCritic(base.fresh_encoder(), algo.critic_hidden, algo.critic_depth, algo.critic_layer_norm).to(device)
            encode_value = self.policy.normalized_obs
        else:
            obs_dim = base.obs_horizon * next(iter(base.obs_shapes.values()))[0]
            self.critic = Critic(obs_dim, algo.critic_hidden, algo.critic_depth, algo.critic_layer_norm).to(device)
            encode_value = self.policy.normalized_state
        self.ppo = ChainPPO(self.provider, self.critic, encode_value, algo)  # V(s) on the normalized obs history
        self.n_iters, self.n_envs = cfg.train.iterations, cfg.train.n_envs
        self.actor_sched = torch.optim.lr_scheduler.LambdaLR(self.ppo.actor_opt, warmup_cosine(algo.lr_warmup, self.n_iters, algo.actor_min_lr / algo.actor_lr))
        self.critic_sched = torch.optim.lr_scheduler.LambdaLR(
            self.ppo.critic_opt, warmup_cosine(algo.lr_warmup, self.n_iters, algo.critic_min_lr / algo.critic_lr)
        )
        self.batched = make(cfg.env.name, self.n_envs, backend=cfg.train.backend, device=device)
        self.env = ActionChunk(ObsHistory(self.batched, base.obs_horizon), self.provider.exec_steps)  # ResiP: one env step
        self.scaler = RewardScaler(self.n_envs, algo.gamma) if algo.reward_scaling else None
        self.demo_batch = _demo_batches(cfg, self.policy, rng, device) if algo.get("data_coef") else None
        self.data_loss = self.provider.data_loss  # the anchor's loss, also the held-out diagnostic

    def modules(self) -> dict[str, nn.Module]:
        return {"provider": self.provider, "critic": self.critic} | ({"scaler": self.scaler} if self.scaler else {})

    def optimizers(self) -> dict[str, Any]:
        return {"actor": self.ppo.actor_opt, "critic": self.ppo.critic_opt, "actor_sched": self.actor_sched, "critic_sched": self.critic_sched}

    def iteration(self, itr: int) -> tuple[dict[str, float], int, list[dict[str, Any]]]:
        start = time.perf_counter()
        provider = self.provider
        provider.set_progress((itr - 1) / self.n_iters)
        obs, _ = self.env.reset(seed=self.cfg.seed + 7919 * itr)
        provider.end_episodes(torch.ones(self.n_envs, dtype=torch.bool))
        provider.eval()
        self.critic.eval()  # no random shifts while acting and valuing the rollout (image critics)
        rollout, _ = collect_rollout(self.env, provider, self.ppo.value, obs, self.cfg.train.n_steps, self.scaler)
        episodes = self.batched.pop_episodes()
        rollout_s = time.perf_counter() - start
        provider.train()  # image encoders (actor and critic) see random shifts in the update, as DPPO's pixel runs
        self.critic.train()
        metrics = self.ppo.update(rollout, self.demo_batch)
        self.actor_sched.step()
        self.critic_sched.step()
        return metrics | {"rollout_s": rollout_s, "lr/actor": self.actor_sched.get_last_lr()[0]}, rollout.env_steps, episodes

    def acting_policy(self) -> ActingPolicy:
        return self.provider.eval_policy()

    def close(self) -> None:
        self.env.close()


def finetune(cfg: DictConfig, run: Run) -> ActingPolicy:
    """Fine-tune ``cfg.base`` in ``cfg.env`` with ``cfg.algo``; returns the fine-tuned policy (ResiP: base + residual)."""
    return run_online(cfg, run, ChainPPOLearner)


def _demo_batches(cfg: DictConfig, actor: Policy, rng: Any, device: torch.device) -> Any:
    """The DDRL anchor's data: windows of the demonstrations' training episodes (every 10th episode is held out for
    the diagnostics, :class:`rlft.runtime.diagnostics.Demonstrations`), ``cfg.algo.data_batch_size`` at a time."""
    from rlft.datasets.store import EpisodeStore
    from rlft.runtime.diagnostics import Demonstrations

    demos = Demonstrations(EpisodeStore(cfg.data.path), next(iter(actor.obs_shapes)), actor.obs_horizon, actor.horizon)
    return lambda: {k: v.to(device) for k, v in demos.anchor_batch(cfg.algo.data_batch_size, rng).items()}
