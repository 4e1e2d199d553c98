"""``rlft bench finetune``: one chain-PPO iteration (DPPO, ReinFlow, ResiP) timed by phase, with its compute floor.

The finetune config is composed as for ``rlft finetune`` (``algo=``, ``env=``, ``train.n_envs=`` ...), with
``train.n_steps`` shortened to 50 unless given. One untimed iteration warms up; the next is timed, its phases
measured by wrapping the learner's own calls (nothing in the loop changes):

* rollout: ``physics`` (the batched env's step, chunk wrappers included), ``policy`` (sampling the chains),
  ``value`` (the critic), and the rest (bookkeeping, reward scaling);
* update: ``logprob_recompute`` (the old log-probs before the first minibatch), ``forward`` (new log-probs
  and values with gradients), ``optimizer`` (the AdamW steps), and the rest (loss, backward, clipping).

The compute floor: FLOPs of one sample-gradient (the forward + backward of the actor's log-prob and the
critic on one item, counted by :class:`torch.utils.flop_counter.FlopCounterMode`) times the sample-gradients
the update took, over the measured float32 matmul rate of this machine on the run's torch threads (a
[4096, width] x [width, width] matmul at the actor's width; the rates on 1 and 2 threads are reported too):
the update can not run faster than that.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from rlft.algos.onpolicy.finetune import ChainPPOLearner
from rlft.runtime.checkpoint import load_policy
from rlft.runtime.seeding import seed_everything


class _Timers:
    """Seconds per phase, accumulated by wrapping callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.items = 0  # sample-gradients (items scored with gradients)

    def wrap(self, fn: Callable[..., Any], phase: Callable[[], str] | str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[phase() if callable(phase) else phase] += time.perf_counter() - start

        return timed


def matmul_rate(width: int, threads: int, repeats: int = 20) -> float:
    """float32 FLOP/s of a [4096, width] x [width, width] matmul on ``threads`` torch threads (best of ``repeats``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(4096, width), torch.randn(width, width)
        torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
    return 2.0 * 4096 * width * width / best


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _flops_per_item(learner: ChainPPOLearner, rollout: Any, items: int = 64) -> float:
    """FLOPs of forward + backward of the actor's new log-probs and the critic's value on ``items`` items, per item."""
    ppo, provider = learner.ppo, learner.provider
    obs = rollout.obs.flatten(0, 1)
    sampled = {k: v.flatten(0, 1) for k, v in rollout.stored.items() if k != "log_probs"}
    k_steps = rollout.stored["log_probs"].shape[-1] if provider.per_step else 1
    idx = torch.arange(items) % obs.shape[0]
    step_idx = torch.arange(items) % k_steps
    with FlopCounterMode(display=False) as counter:
        new_lp, _ = ppo._new_log_probs(obs, sampled, idx, step_idx)
        (new_lp.mean() + ppo.value(obs[idx]).mean()).backward()
    ppo.actor_opt.zero_grad(set_to_none=True)
    ppo.critic_opt.zero_grad(set_to_none=True)
    return counter.get_total_flops() / items


def _actor_width(learner: ChainPPOLearner) -> int:
    """The most common hidden width of the trained networks' linear layers (what the matmul rate is measured at)."""
    widths = [m.out_features for m in learner.provider.modules() if isinstance(m, torch.nn.Linear)]
    return int(np.bincount(widths).argmax()) if widths else 256


def bench_finetune(cfg: DictConfig) -> dict[str, Any]:
    """Time one iteration of ``cfg.algo`` (after an untimed one); returns phases (s), rates and the compute floor."""
    load_before = os.getloadavg()[0]
    rng = seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    base = load_policy(cfg.base).to(device)
    learner = ChainPPOLearner(cfg, base, rng, device)
    try:
        learner.iteration(1)  # warm-up: first calls, allocations
        timers = _Timers()
        ppo, provider, env = learner.ppo, learner.provider, learner.env
        captured: dict[str, Any] = {}
        collect, update = ppo.value, ppo.update
        new_log_probs = ppo._new_log_probs

        def scored(obs: torch.Tensor, sampled: Any, sample_idx: torch.Tensor, step_idx: torch.Tensor) -> Any:
            if torch.is_grad_enabled():
                timers.items += len(sample_idx)
            return new_log_probs(obs, sampled, sample_idx, step_idx)

        def updating(rollout: Any, demo_batch: Any = None) -> Any:
            captured["rollout"] = rollout
            return timers.wrap(update, "update")(rollout, demo_batch)

        env.step = timers.wrap(env.step, "physics")
        provider.sample = timers.wrap(provider.sample, "policy")
        ppo.value = timers.wrap(collect, lambda: "forward" if torch.is_grad_enabled() else "value")
        ppo._new_log_probs = timers.wrap(scored, lambda: "forward" if torch.is_grad_enabled() else "logprob_recompute")
        ppo.actor_opt.step = timers.wrap(ppo.actor_opt.step, "optimizer")
        ppo.critic_opt.step = timers.wrap(ppo.critic_opt.step, "optimizer")
        ppo.update = updating
        start = time.perf_counter()
        metrics, env_steps, _ = learner.iteration(2)
        total = time.perf_counter() - start
        ppo.update, ppo._new_log_probs, ppo.value = update, new_log_probs, collect
        flops = _flops_per_item(learner, captured["rollout"])
        width = _actor_width(learner)
    finally:
        learner.close()
    s = dict(timers.seconds)
    update_s = s.pop("update")
    rollout_s = total - update_s
    phases = {
        "rollout": {"physics": s["physics"], "policy": s["policy"], "value": s["value"], "rest": rollout_s - s["physics"] - s["policy"] - s["value"]},
        "update": {
            "logprob_recompute": s.get("logprob_recompute", 0.0),
            "forward": s.get("forward", 0.0),
            "optimizer": s.get("optimizer", 0.0),
            "rest": update_s - s.get("logprob_recompute", 0.0) - s.get("forward", 0.0) - s.get("optimizer", 0.0),
        },
    }
    threads = torch.get_num_threads()
    rates = {n: matmul_rate(width, n) for n in sorted({1, 2, threads})}
    floor_s = flops * timers.items / rates[threads]  # at the threads the update ran on
    return {
        "algo": cfg.algo.name,
        "env": cfg.env.name,
        "n_envs": cfg.train.n_envs,
        "n_steps": cfg.train.n_steps,
        "env_steps": env_steps,
        "iteration_s": total,
        "rollout_s": rollout_s,
        "update_s": update_s,
        "phases_s": phases,
        "env_steps_per_s": env_steps / total,
        "rollout_env_steps_per_s": env_steps / rollout_s,
        "physics_env_steps_per_s": env_steps / s["physics"],
        "sample_gradients": timers.items,
        "sample_gradients_per_s": timers.items / update_s,
        "epochs": metrics.get("ppo/epochs"),
        "flops_per_sample_gradient": flops,
        "matmul_width": width,
        "matmul_flops_per_s": {f"{n}_thread{'s' if n > 1 else ''}": rate for n, rate in rates.items()},
        "update_floor_s": floor_s,
        "update_over_floor": update_s / floor_s,
        "threads": threads,
        "load": [load_before, os.getloadavg()[0]],
    }


def summary_lines(r: dict[str, Any]) -> str:
    """The human-readable report of :func:`bench_finetune`."""
    ro, up = r["phases_s"]["rollout"], r["phases_s"]["update"]

    def rate(n: int) -> float:
        return r["matmul_flops_per_s"][f"{n}_thread{'s' if n > 1 else ''}"]

    lines = [
        f"{r['algo']} on {r['env']}: {r['n_envs']} envs x {r['n_steps']} steps = {r['env_steps']} env steps, "
        f"{r['iteration_s']:.2f} s: {r['env_steps_per_s']:.0f} env steps/s for the whole iteration; load {r['load'][0]:.2f} -> {r['load'][1]:.2f}",
        f"  rollout {r['rollout_s']:6.2f} s ({r['rollout_env_steps_per_s']:.0f} env steps/s): physics {ro['physics']:.2f}, policy {ro['policy']:.2f}, "
        f"value {ro['value']:.2f}, rest {ro['rest']:.2f}",
        f"  update  {r['update_s']:6.2f} s ({r['sample_gradients']} sample-gradients in {r['epochs']:g} epochs, {r['sample_gradients_per_s']:.0f}/s): "
        f"old log-probs {up['logprob_recompute']:.2f}, forward {up['forward']:.2f}, optimizer {up['optimizer']:.2f}, backward and rest {up['rest']:.2f}",
        f"  floor   {r['update_floor_s']:6.2f} s ({r['flops_per_sample_gradient'] / 1e6:.2f} MFLOP per sample-gradient at "
        f"{rate(r['threads']) / 1e9:.1f} GFLOP/s on {r['threads']} thread(s); {rate(1) / 1e9:.1f} on 1, {rate(2) / 1e9:.1f} on 2): "
        f"the update takes {r['update_over_floor']:.1f}x its floor",
    ]
    return "\n".join(lines)
