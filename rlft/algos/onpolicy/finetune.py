"""``rlft finetune``: on-policy fine-tuning of a pretrained policy (one iteration = rollout + PPO update).

The provider (:func:`build_provider`) decides what is trained: a copy of the base's chain (DPPO,
ReinFlow) or a residual over the frozen base (ResiP, one env step per rollout step). The run's
``policy`` weights are the provider's ``actor`` (for ResiP the frozen base, so the run is self-contained);
the critic V(s) always sees the base's normalized observation history.

The iteration loop, logging, checkpoints and exact resume are :func:`rlft.runtime.trainer.fit`'s (one
fit "step" is one iteration). Each iteration starts from freshly reset envs seeded by the iteration
number, so a resumed run replays exactly what an uninterrupted one does.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rlft.algos.onpolicy.ppo import ChainPPO, Critic
from rlft.algos.onpolicy.providers import build_provider
from rlft.algos.onpolicy.rollout import RewardScaler, collect_rollout
from rlft.envs import make
from rlft.envs.wrappers import ActionChunk, ObsHistory
from rlft.policies.policy import Policy, load_policy, read_spec, write_spec
from rlft.runtime.plots import plot_metrics
from rlft.runtime.run import Run
from rlft.runtime.schedules import warmup_cosine
from rlft.runtime.seeding import seed_everything
from rlft.runtime.trainer import fit


class Progress(nn.Module):
    """Counters that belong in checkpoints: env steps and training wall time so far."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("env_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("seconds", torch.zeros((), dtype=torch.float64))


def finetune(cfg: DictConfig, run: Run) -> nn.Module:
    """Fine-tune ``cfg.base`` in ``cfg.env`` with ``cfg.algo``; returns the fine-tuned policy (ResiP: base + residual)."""
    rng = seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    base = load_policy(cfg.base).to(device)
    if any(len(s) != 1 for s in base.obs_shapes.values()) or len(base.obs_shapes) != 1:
        raise ValueError("rlft finetune supports state-observation policies (one flat observation key) so far")
    algo = cfg.algo
    provider = build_provider(algo, base).to(device)
    actor = provider.actor
    obs_dim = base.obs_horizon * next(iter(base.obs_shapes.values()))[0]
    critic = Critic(obs_dim, int(algo.critic_hidden), int(algo.critic_depth)).to(device)
    ppo = ChainPPO(provider, critic, actor.normalized_state, algo)  # V(s) on the normalized obs history
    n_iters = int(cfg.train.iterations)
    actor_sched = torch.optim.lr_scheduler.LambdaLR(ppo.actor_opt, warmup_cosine(algo.lr_warmup, n_iters, algo.actor_min_lr / algo.actor_lr))
    critic_sched = torch.optim.lr_scheduler.LambdaLR(ppo.critic_opt, warmup_cosine(algo.lr_warmup, n_iters, algo.critic_min_lr / algo.critic_lr))
    env_name = cfg.env.name
    batched = make(env_name, int(cfg.train.n_envs), backend=cfg.train.backend, device=device)
    env = ActionChunk(ObsHistory(batched, base.obs_horizon), provider.exec_steps)  # ResiP: one env step
    scaler = RewardScaler(int(cfg.train.n_envs), float(algo.gamma)) if algo.reward_scaling else None
    progress = Progress()
    demo_batch = _demo_batches(cfg, actor, rng, device) if algo.data_coef else None
    source = f"rlft finetune algo={algo.name}, run {run.folder}"
    algo_config = OmegaConf.to_container(algo, resolve=True)  # what rebuilds a steered run's policy (ResiP)
    meta = read_spec(cfg.base).get("meta", {}) | {"env": env_name, "algo": algo.name, "source": source, "base": str(cfg.base), "algo_config": algo_config}
    write_spec(run.folder, actor, meta)
    refs = (meta["ref_returns"]["random"], meta["ref_returns"]["expert"]) if meta.get("ref_returns") else None

    def iteration(itr: int) -> dict[str, Any]:
        start = time.perf_counter()
        provider.set_progress((itr - 1) / n_iters)
        obs, _ = env.reset(seed=int(cfg.seed) + 7919 * itr)
        provider.end_episodes(torch.ones(int(cfg.train.n_envs), dtype=torch.bool))
        provider.eval()
        rollout, _ = collect_rollout(env, provider, ppo.value, obs, int(cfg.train.n_steps), scaler)
        episodes = batched.pop_episodes()
        rollout_s = time.perf_counter() - start
        provider.train()
        metrics = ppo.update(rollout, demo_batch)
        actor_sched.step()
        critic_sched.step()
        progress.env_steps += rollout.env_steps
        progress.seconds += time.perf_counter() - start
        metrics |= {
            "env_steps": int(progress.env_steps),
            "time_s": float(progress.seconds),
            "env_steps_per_s": rollout.env_steps / (time.perf_counter() - start),
            "rollout_s": rollout_s,
            "lr/actor": actor_sched.get_last_lr()[0],
        }
        if episodes:
            metrics["train/return_mean"] = sum(e["return"] for e in episodes) / len(episodes)
            metrics["train/episodes"] = len(episodes)
            successes = [e["success"] for e in episodes if e["success"] is not None]
            if successes:
                metrics["train/success_rate"] = sum(successes) / len(successes)
        if cfg.eval.episodes and (itr % int(cfg.eval.every) == 0 or itr == n_iters or itr == 1):
            from rlft.runtime.evaluate import evaluate

            policy = provider.eval_policy().eval()
            result = evaluate(policy, env_name, int(cfg.eval.episodes), int(cfg.eval.seed), backend=cfg.train.backend, refs=refs)
            policy.train()
            metrics |= {f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float)) and v is not None}
        return metrics

    modules = {"policy": actor, "provider": provider, "critic": critic, "progress": progress} | ({"scaler": scaler} if scaler else {})
    fit(
        run,
        iteration,
        n_iters,
        modules=modules,
        optimizers={"actor": ppo.actor_opt, "critic": ppo.critic_opt, "actor_sched": actor_sched, "critic_sched": critic_sched},
        generators={"data": rng},
        log_every=1,
        checkpoint_every=int(cfg.train.checkpoint_every),
        desc=f"finetune {algo.name}",
    )
    env.close()
    plot_metrics(run.folder, ["train/return_mean", "eval/return_mean"], run.folder / "learning_curve.png")
    return provider.eval_policy()


def _demo_batches(cfg: DictConfig, actor: Policy, rng: Any, device: torch.device) -> Any:
    """The DDRL anchor's data: windows of the demonstration dataset, ``cfg.algo.data_batch_size`` at a time."""
    from rlft.datasets.sampler import WindowSampler
    from rlft.datasets.store import EpisodeStore

    sampler = WindowSampler(EpisodeStore(cfg.data.path), obs_keys=list(actor.obs_shapes), obs_horizon=actor.obs_horizon, horizon=actor.horizon)
    return lambda: {k: v.to(device) for k, v in sampler.sample(int(cfg.algo.data_batch_size), rng).items()}
