"""ResiP (Ankile et al. 2024): PPO on a per-step Gaussian residual over a frozen base policy.

The base predicts a chunk with its deterministic sampler (DDIM eta 0 / the flow ODE) from fresh random
initial noise and executes its first ``act_steps`` actions, one per env step; every env step the
residual sees [normalized observation history, normalized base action] and the executed action is
``base + scale * residual`` in normalized action space (clipped to [-1, 1] where the base clips, then
unnormalized). The residual's last layer starts at zero, so training starts exactly at the base policy;
its log-std is fixed (not learned).

* :class:`ResidualActor`: the Gaussian residual;
* :class:`BaseQueue`: each sub-env's queue of base actions, replanned when used up or at an episode end;
* :class:`ResidualProvider`: what :class:`~rlft.algos.onpolicy.ppo.ChainPPO` trains (one ratio per env step);
* :class:`ResidualPolicy` and :func:`load_residual_policy`: base + residual as one policy (``rlft eval``).

Log-probs are summed over the action dims (the Gaussian policy's own likelihood, as in PPO for Gaussian
policies, which ResiP's clip 0.2 and KL stop 0.1 assume), not averaged like the chain providers'.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from rlft.algos.registry import LoadOptions
from rlft.errors import ConfigError
from rlft.policies.acting import ExportSpec, Graph, Obs, OverFrozenBase
from rlft.policies.chain import gaussian_log_prob
from rlft.policies.policy import Policy
from rlft.runtime.checkpoint import load_policy, load_weights, read_spec, run_checkpoint


class ResidualActor(nn.Module):
    """The residual: N(mean([obs, base action]), exp(log_std)^2) per action dim, in normalized units.

    ``mean``: ``depth`` Tanh layers of width ``hidden``, then a zero-initialised linear output. ``log_std``
    is a buffer: fixed, but saved with the weights.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, depth: int = 2, log_std: float = -1.0):
        super().__init__()
        layers: list[nn.Module] = []
        dim = obs_dim + action_dim
        for _ in range(depth):
            layers += [nn.Linear(dim, hidden), nn.Tanh()]
            dim = hidden
        out = nn.Linear(dim, action_dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.mean = nn.Sequential(*layers, out)
        self.register_buffer("log_std", torch.full((action_dim,), float(log_std)))

    def forward(self, obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        """Normalized obs [B, D] and base action [B, A] -> residual mean [B, A]."""
        return self.mean(torch.cat([obs, base_action], -1))

    def log_prob(self, obs: torch.Tensor, base_action: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-prob [B], entropy [B]) of ``residual`` [B, A], both summed over the action dims."""
        std = self.log_std.exp().expand_as(residual)
        lp = gaussian_log_prob(residual, self(obs, base_action), std).sum(-1)
        entropy = (0.5 * math.log(2 * math.pi * math.e) + self.log_std).sum().expand(residual.shape[0])
        return lp, entropy


class BaseQueue:
    """Each sub-env's queue of the frozen base's normalized actions (clipped where the base clips).

    ``next(obs)`` pops one action per sub-env; sub-envs whose queue is used up (after ``act_steps``) or
    whose episode ended (``end_episodes``) first get a new chunk: the base's deterministic sampler
    (``steps``; None = the head's own) from fresh initial noise, drawn for those sub-envs only.
    """

    def __init__(self, base: Policy, steps: int | None):
        self.base, self.steps = base, steps
        self.chunk = torch.zeros(0, base.act_steps, base.action_dim)  # [N, act_steps, A]
        self.pos = torch.zeros(0, dtype=torch.long)  # [N] index of the next action; act_steps = replan

    def end_episodes(self, done: torch.Tensor) -> None:
        """done [N] bool: those sub-envs replan at their next step (a new N starts every queue afresh)."""
        n, base = done.shape[0], self.base
        if self.pos.shape[0] != n:
            self.chunk = base.action_norm.center.new_zeros(n, base.act_steps, base.action_dim)
            self.pos = torch.full((n,), base.act_steps, dtype=torch.long)
        self.pos[done.cpu()] = base.act_steps

    def plan(self, obs: Obs, noise: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """obs [k, T, D] and initial noise [k, H, A] -> the queue's next base actions [k, act_steps, A], normalized."""
        x = self.base.sample_normalized(obs, noise, steps or self.steps)[:, : self.base.act_steps]
        return x.clamp(-1, 1) if self.base.clip_action else x

    @torch.no_grad()
    def next(self, obs: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """obs [N, T, D] -> normalized base actions [N, A] for this env step."""
        n, base = obs.shape[0], self.base
        if self.pos.shape[0] != n:
            self.end_episodes(torch.ones(n, dtype=torch.bool))
        replan = (self.pos >= base.act_steps).nonzero().flatten()
        if len(replan):
            x = self.plan(obs[replan.to(obs.device)], base.initial_noise(len(replan), generator), steps)
            self.chunk[replan.to(x.device)] = x
            self.pos[replan] = 0
        out = self.chunk[torch.arange(n, device=self.chunk.device), self.pos.to(self.chunk.device)]
        self.pos += 1
        return out


def executed_actions(base: Policy, base_action: torch.Tensor, residual: torch.Tensor, scale: float) -> torch.Tensor:
    """Normalized base action and residual [N, A] -> raw actions [N, 1, A]: ``base + scale * residual``."""
    return base.to_actions(base_action + scale * residual)[:, None]


class ResidualProvider(nn.Module):
    """ResiP for :class:`~rlft.algos.onpolicy.ppo.ChainPPO`: one Gaussian ratio per env step.

    The rollout env executes one action per step (``exec_steps`` = 1). Stored per sample: ``base_action``
    [A] (normalized), the sampled ``residual`` [A] and the residual's ``log_probs`` [1]. The base is
    held in a list (not a submodule): never trained, and saved once, as the run's ``policy``.
    """

    per_step = False
    exec_steps = 1

    def __init__(self, base: Policy, steps: int | None, hidden: int, depth: int, log_std: float, scale: float):
        super().__init__()
        obs_dim = base.obs_horizon * next(iter(base.obs_shapes.values()))[0]
        self.residual = ResidualActor(obs_dim, base.action_dim, hidden, depth, log_std)
        self.base = [base.eval().requires_grad_(False)]
        self.steps, self.scale = steps, scale
        self.queue = BaseQueue(base, steps)

    @property
    def actor(self) -> Policy:
        """The frozen base: the run's ``policy`` (its spec and weights) and its observation normalizer."""
        return self.base[0]

    def eval_policy(self) -> "ResidualPolicy":
        """Base + the current residual as one policy, with its own queue (for evaluation)."""
        return ResidualPolicy(self.base[0], self.residual, self.steps, self.scale)

    def end_episodes(self, done: torch.Tensor) -> None:
        self.queue.end_episodes(done)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """obs [N, T, D] -> (raw actions [N, 1, A], {base_action [N, A], residual [N, A], log_probs [N, 1]})."""
        base_action = self.queue.next(obs)
        mean = self.residual(self.base[0].normalized_state(obs), base_action)
        std = self.residual.log_std.exp().expand_as(mean)
        residual = mean + std * torch.randn_like(mean)
        log_probs = gaussian_log_prob(residual, mean, std).sum(-1, keepdim=True)
        return executed_actions(self.base[0], base_action, residual, self.scale), {"base_action": base_action, "residual": residual, "log_probs": log_probs}

    def data_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The DDRL anchor on demonstration windows (a scalar): the negative log-likelihood, per action dim, of the
        demonstrated action a_t under base + scale x residual, the base planning afresh at t from fixed initial
        noise (so the queue's position and the clip are left out): the residual N(mean, std) scores the
        residual the demonstration needs, (normalized a_t - base action) / scale."""
        base = self.base[0]
        obs = {k: batch[k] for k in base.obs_shapes}
        device = base.action_norm.center.device
        with torch.no_grad():
            noise = base.initial_noise(batch["action"].shape[0], torch.Generator(device=device).manual_seed(0))
            base_action = self.queue.plan(obs, noise)[:, 0]
        needed = (base.action_norm(batch["action"][:, 0].to(device, torch.float32)) - base_action) / self.scale
        mean = self.residual(base.normalized_state(obs), base_action)
        return -gaussian_log_prob(needed, mean, self.residual.log_std.exp().expand_as(mean)).mean()

    def chain_log_probs(self, obs: torch.Tensor, sampled: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-prob [B], entropy [B]) of the stored residuals under the current residual actor."""
        return self.residual.log_prob(self.base[0].normalized_state(obs), sampled["base_action"], sampled["residual"])

    def set_progress(self, fraction: float) -> None:
        """No schedules."""

    def metrics(self) -> dict[str, float]:
        return {}


class ResidualPolicy(OverFrozenBase):
    """The frozen base + ResiP's residual as one policy that acts every env step (``act_steps`` = 1).

    ``sample(obs)`` -> raw actions [N, 1, A] with the residual's mean, or a Gaussian draw if
    ``stochastic``; ``steps`` overrides the base sampler's steps. Call ``end_episodes(done [N])`` after
    every env step (:func:`rlft.runtime.evaluate.evaluate` does).
    """

    act_steps = 1

    def __init__(self, base: Policy, residual: ResidualActor, steps: int | None, scale: float):
        super().__init__(base, steps)
        self.residual, self.scale = residual, scale
        self.queue = BaseQueue(base, steps)

    def end_episodes(self, done: torch.Tensor) -> None:
        self.queue.end_episodes(done)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, steps: int | None = None, stochastic: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """obs [N, T, D] -> raw actions [N, 1, A]."""
        base_action = self.queue.next(obs, steps, generator)
        noise = torch.randn(base_action.shape, generator=generator, device=base_action.device) if stochastic else None
        return self.correct(obs, base_action, noise)

    def correct(self, obs: Obs, base_action: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """This step's raw actions [N, 1, A] from the normalized base action [N, A]: the residual's mean, plus
        its std times ``noise`` [N, A] where given."""
        residual = self.residual(self.base.normalized_state(obs), base_action)
        if noise is not None:
            residual = residual + self.residual.log_std.exp() * noise
        return executed_actions(self.base, base_action, residual, self.scale)

    def export_spec(self, steps: int) -> ExportSpec:
        """Two graphs around the controller's queue: the base's plan ``(noise, obs) -> normalized base actions
        [B, act_steps, A]`` (run when the queue is used up or an episode starts) and every step's
        ``(base_action, obs) -> raw action [B, 1, A]``."""
        spec = self.base.export_spec(steps)
        plan = Graph(lambda noise, obs: self.queue.plan(obs, noise, steps), ("noise",), "base_action")
        step = Graph(lambda base_action, obs: self.correct(obs, base_action), ("base_action",))
        meta = {"residual_scale": self.scale}
        return replace(spec, kind="residual", chunk=plan, horizon=1, act_steps=1, residual=step, queue=self.base.act_steps, meta=meta)


def build_residual(algo: Mapping[str, Any], base: Policy) -> ResidualProvider:
    """The provider for ``base`` from the resip algo config (``steps``, ``residual.*``)."""
    res = algo["residual"]
    steps = int(algo["steps"]) if algo.get("steps") else None
    return ResidualProvider(base, steps, int(res["hidden"]), int(res["depth"]), float(res["log_std"]), float(res["scale"]))


def load_residual_policy(folder: Path, checkpoint: Path | None = None, options: LoadOptions = LoadOptions()) -> ResidualPolicy:
    """The combined policy of a resip run: base weights (``policy.*``) and residual (``provider.residual.*``)
    from the newest (or the given) checkpoint, architecture and settings from ``policy.json``."""
    if options.selects or options.weights not in ("auto", "policy"):
        raise ConfigError(f"{folder} is a resip run: it acts with its frozen base and the residual (no EMA weights, no Q selection)")
    checkpoint = run_checkpoint(folder, checkpoint)
    base = load_policy(folder, weights="policy", checkpoint=checkpoint)
    provider = build_residual(read_spec(folder)["meta"]["algo_config"], base)
    load_weights(checkpoint, {"provider.residual": provider.residual})
    return provider.eval_policy().eval()
