"""The one online run skeleton: every ``rlft finetune`` algorithm is a learner run by :func:`run_online`.

A run fine-tunes (or steers) the pretrained policy ``cfg.base`` in ``cfg.env`` for ``cfg.train.iterations``
iterations. The skeleton seeds everything, loads the base, asks the algorithm for its
:class:`OnlineLearner`, writes ``policy.json`` (the saved policy's architecture, the base's meta, the
algorithm and its config), and runs the iterations under :func:`rlft.runtime.trainer.fit` (one fit step
= one iteration: logging, checkpoints, exact resume). Around each iteration it counts env steps and
wall time (checkpointed), logs training returns of the episodes that ended, and evaluates the learner's
acting policy every ``cfg.eval.every`` iterations, at the first and at the last. Each evaluation also
logs the reward-hacking diagnostics against the run's ``data=`` demonstrations (``diag/*``,
:mod:`rlft.runtime.diagnostics`) where they fit the base, and on a proxy-reward task (``env=hopper_fwd``,
:mod:`rlft.envs.proxy`) the return on the true task (``eval/true_*``).

Learners: chain PPO (DPPO, ReinFlow, ResiP; :mod:`rlft.algos.onpolicy.finetune`) and SAC over the
initial noise (DSRL, DSRL-NA; :mod:`rlft.algos.dsrl`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rlft.algos.registry import get
from rlft.datasets.store import resolve_path
from rlft.envs.proxy import true_task
from rlft.envs.registry import check_fits_env
from rlft.errors import CheckpointError, ConfigError
from rlft.policies.acting import ActingPolicy
from rlft.policies.encoders import is_image_shape
from rlft.policies.policy import Policy
from rlft.runtime.checkpoint import load_policy, read_spec, write_spec
from rlft.runtime.diagnostics import Demonstrations, demonstrations_for
from rlft.runtime.evaluate import evaluate
from rlft.runtime.run import Run
from rlft.runtime.seeding import seed_everything
from rlft.runtime.trainer import fit

# learning_curve.png: both returns (and the true task's on a proxy task), then the diagnostics against the data
PLOTTED = (
    ("train/return_mean", "eval/return_mean", "eval/true_return_mean"),
    ("diag/data_loss", "diag/data_loss_base"),
    ("diag/state_distance", "diag/state_distance_data"),
    ("diag/jerk", "diag/jerk_data"),
)


class OnlineLearner(Protocol):
    """What an online algorithm gives the skeleton.

    * ``policy``: the Policy saved as the run's ``policy`` weights (the fine-tuned copy, or the frozen base);
    * ``data_loss``: the learner's loss on demonstration windows (the DDRL anchor), or None where it has none;
    * ``modules()`` / ``optimizers()``: everything a checkpoint holds for exact resume;
    * ``iteration(itr)``: one iteration (1-based): (metrics, env steps taken, episodes that ended there);
    * ``acting_policy()``: what evaluation runs now;
    * ``close()``: release the envs.
    """

    policy: Policy
    data_loss: Callable[[Mapping[str, torch.Tensor]], torch.Tensor] | None

    def modules(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, Any]: ...

    def iteration(self, itr: int) -> tuple[dict[str, float], int, list[dict[str, Any]]]: ...

    def acting_policy(self) -> ActingPolicy: ...

    def close(self) -> None: ...


class Progress(nn.Module):
    """Counters that belong in checkpoints: env steps and training wall time so far."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("env_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("seconds", torch.zeros((), dtype=torch.float64))


def default_base(cfg: DictConfig) -> str:
    """The shipped policy pretrained on ``cfg.data`` with the algorithm's preset, e.g. hopper-v5-medium-flow_mlp."""
    return f"{Path(str(cfg.data.path)).name.removesuffix('.zarr.zip')}-{cfg.algo.policy}"


PIXEL_ALGOS = ("dppo", "reinflow")  # the online algorithms that fine-tune image policies (encoder in the PPO update)


def check(cfg: DictConfig) -> None:
    """A base policy that exists and suits the algorithm (fills in the default base); before anything is written."""
    spec = get(cfg.algo.name, "online")
    if cfg.base is None:
        resolve_path(cfg.data.path)  # the default base is named after the dataset, which must exist
        cfg.base = default_base(cfg)
    try:
        base = read_spec(cfg.base)
    except CheckpointError as e:
        raise ConfigError(f"base={cfg.base}: {e}") from None
    head = base["policy"]["head"]["type"]
    if head not in spec.heads:
        raise ConfigError(f"algo={spec.name} fine-tunes {' or '.join(spec.heads)} policies; base {cfg.base} is a {head} policy")
    shapes = {k: tuple(int(d) for d in s) for k, s in base["obs_shapes"].items()}
    images = any(is_image_shape(s) for s in shapes.values())
    if images and spec.name not in PIXEL_ALGOS:  # pixels: chain PPO (DPPO, ReinFlow) with an image critic
        raise ConfigError(f"base={cfg.base} is an image policy; algo={spec.name} fine-tunes state policies so far (use {' or '.join(PIXEL_ALGOS)})")
    if not images and len(shapes) != 1:
        raise ConfigError(f"base={cfg.base}: rlft finetune takes one flat state key or cameras + state; this base observes {', '.join(shapes)}")
    # cameras + state: key by key (the base may leave env keys out); a flat state: its key is the dataset's name
    check_fits_env(f"base {cfg.base}", shapes if images else next(iter(shapes.values())), (int(base["action_dim"]),), cfg.env)


def run_online(cfg: DictConfig, run: Run, build: Callable[[DictConfig, Policy, np.random.Generator, torch.device], OnlineLearner]) -> ActingPolicy:
    """Run ``build(cfg, base, rng, device)``'s learner for ``cfg.train.iterations``; returns its final acting policy."""
    rng = seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    base = load_policy(cfg.base).to(device)
    learner = build(cfg, base, rng, device)
    progress = Progress()
    algo_config = OmegaConf.to_container(cfg.algo, resolve=True)  # what rebuilds a steered run's acting policy
    source = f"rlft finetune algo={cfg.algo.name}, run {run.folder}"
    meta = read_spec(cfg.base).get("meta", {}) | {
        "env": cfg.env.name,
        "algo": cfg.algo.name,
        "source": source,
        "base": str(cfg.base),
        "algo_config": algo_config,
    }
    write_spec(run.folder, learner.policy, meta)
    refs = (meta["ref_returns"]["random"], meta["ref_returns"]["expert"]) if meta.get("ref_returns") else None
    n_iters = cfg.train.iterations
    demos: Demonstrations | None = demonstrations_for(cfg, base) if cfg.eval.episodes else None
    data_loss = learner.data_loss
    base_loss = demos.data_loss(data_loss, learner.policy) if demos is not None and data_loss is not None else None  # before any update
    truth = true_task(cfg.env.name)

    def iteration(itr: int) -> dict[str, Any]:
        start = time.perf_counter()
        metrics, env_steps, episodes = learner.iteration(itr)
        progress.env_steps += env_steps
        elapsed = time.perf_counter() - start
        progress.seconds += elapsed
        metrics |= {"env_steps": int(progress.env_steps), "time_s": float(progress.seconds), "env_steps_per_s": env_steps / elapsed}
        if episodes:
            metrics["train/return_mean"] = sum(e["return"] for e in episodes) / len(episodes)
            metrics["train/episodes"] = len(episodes)
            successes = [e["success"] for e in episodes if e["success"] is not None]
            if successes:
                metrics["train/success_rate"] = sum(successes) / len(successes)
            if episodes[0]["cost"] is not None:
                metrics["train/cost_mean"] = sum(e["cost"] for e in episodes) / len(episodes)
        if cfg.eval.episodes and (itr % cfg.eval.every == 0 or itr == n_iters or itr == 1):
            policy = learner.acting_policy()
            was_training = policy.training
            policy.eval()
            limit = cfg.env.get("cost_limit")
            common = {"backend": cfg.train.backend, "cost_limit": limit}
            # on a proxy task the data's reference returns score the true task's return only
            result = evaluate(policy, cfg.env.name, cfg.eval.episodes, cfg.eval.seed, refs=None if truth else refs, trace=demos is not None, **common)
            trace = {"jerk": result.pop("jerk", None), "states": result.pop("states", None)}
            metrics |= {f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float)) and v is not None}
            if truth:
                true = evaluate(policy, truth, cfg.eval.episodes, cfg.eval.seed, refs=refs, **common)
                metrics |= {f"eval/true_{k}": true[k] for k in ("return_mean", "return_std", "normalized_score", "length_mean") if true[k] is not None}
            policy.train(was_training)
            if demos is not None:
                metrics |= demos.diagnostics(trace, data_loss, learner.policy) | ({"diag/data_loss_base": base_loss} if base_loss is not None else {})
        return metrics

    try:
        fit(
            run,
            iteration,
            n_iters,
            modules={"policy": learner.policy, **learner.modules(), "progress": progress},
            optimizers=learner.optimizers(),
            generators={"data": rng},
            log_every=1,
            checkpoint_every=cfg.train.checkpoint_every,
            desc=f"finetune {cfg.algo.name}",
            plot=PLOTTED,
        )
    finally:
        learner.close()
    return learner.acting_policy()
