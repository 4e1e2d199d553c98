"""Chain providers: where each Gaussian transition of the sampling chain gets its mean and std.

DPPO and ReinFlow are the same PPO over a chain of Gaussian transitions (:mod:`rlft.algos.onpolicy.ppo`);
they differ only here.

* :class:`DPPOChain`: DDPM/DDIM denoising steps with the head's own std clipped from below; the first
  ``steps - ft_steps`` steps are sampled by a frozen copy; one PPO ratio per (env step, denoising step).
* :class:`ReinFlowChain`: Euler flow steps made stochastic by a learned noise network whose std is
  squashed into [min_std, max_std]; one PPO ratio for the whole chain, initial noise included.

Log-probs are element-wise Gaussian log-densities, clamped where configured, averaged over the executed
part of the chunk and the action dims (DPPO's convention, which keeps ratios of long chunks tame).
The registry names each algorithm's builder (:func:`build_dppo`, :func:`build_reinflow`, ResiP's
:func:`~rlft.algos.onpolicy.residual.build_residual`).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import torch
from torch import nn

from rlft.algos.onpolicy.residual import ResidualProvider
from rlft.policies.backbones import SinusoidalEmbedding
from rlft.policies.chain import StdFloor, gaussian_log_prob
from rlft.policies.heads import RectifiedFlow
from rlft.policies.policy import Policy
from rlft.runtime.schedules import hold_then_cosine


class ChainProvider(nn.Module):
    """Common part: the fine-tuned ``actor`` (a copy of ``base``) and the frozen ``base`` itself."""

    per_step: bool  # True: one ratio per transition (DPPO); False: one per chain (ReinFlow)

    def __init__(self, base: Policy, steps: int, logprob_clamp: tuple[float, float] | None):
        super().__init__()
        self.actor = copy.deepcopy(base).train()
        self.base = [base.eval().requires_grad_(False)]  # a list: not a submodule, never saved or trained
        self.steps = steps
        self.logprob_clamp = logprob_clamp

    def _reduce(self, lp: torch.Tensor) -> torch.Tensor:
        """Element-wise log-probs [..., H, A] -> clamped, averaged over executed steps and action dims [...]."""
        if self.logprob_clamp is not None:
            lp = lp.clamp(*self.logprob_clamp)
        return lp[..., : self.actor.act_steps, :].mean((-2, -1))

    @property
    def exec_steps(self) -> int:
        """Env steps per rollout step: the policy's executed chunk."""
        return self.actor.act_steps

    def eval_policy(self) -> Policy:
        """What evaluation runs: the fine-tuned policy itself."""
        return self.actor

    def data_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The DDRL anchor on demonstration windows: the fine-tuned policy's own pretraining loss (a scalar)."""
        return self.actor.loss(batch)

    def end_episodes(self, done: torch.Tensor) -> None:
        """Sub-envs ``done`` [N] ended an episode; chains keep no state across steps."""

    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1] (for schedules); nothing by default."""

    def metrics(self) -> dict[str, float]:
        return {}


class DPPOChain(ChainProvider):
    """DPPO (Ren et al. 2024): fine-tune the last ``ft_steps`` of ``steps`` denoising steps.

    Sampling std = max(head std, ``min_sampling_std``); likelihood std = max(head std, ``min_logprob_std``).
    Stored per sample: the fine-tuned part of the chain ``latents`` [ft_steps + 1, H, A] and its
    per-step ``log_probs`` [ft_steps].
    """

    per_step = True

    def __init__(self, base: Policy, steps: int, ft_steps: int, min_sampling_std: float, min_logprob_std: float, logprob_clamp: tuple[float, float] | None):
        super().__init__(base, steps, logprob_clamp)
        if not 1 <= ft_steps <= steps:
            raise ValueError(f"ft_steps must be in 1..steps={steps} (got {ft_steps})")
        self.ft_steps = ft_steps
        self.start = steps - ft_steps
        self.actor.freeze_early_steps(self.start)
        self.sampling_noise, self.logprob_noise = StdFloor(min_sampling_std), StdFloor(min_logprob_std)
        self.register_buffer("grid", self.actor.head.time_grid(steps)[self.start :].clone(), persistent=False)

    def step_log_probs(self, obs: torch.Tensor, sampled: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
        """Reduced log-prob [B] of fine-tuned transition ``step`` (0 = noisiest) of ``sampled["latents"]`` under the current actor."""
        lp, _ = self.actor.transition_log_probs(obs, sampled["latents"], self.grid, self.logprob_noise, [step], reduce=False, start=self.start)
        return self._reduce(lp[:, 0])

    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chain = self.actor.chain(obs, self.steps, noise=self.sampling_noise)
        latents = chain.latents[:, self.start :]
        # the sampling distribution's own log-probs, from the chain's means and stds (no second pass)
        log_probs = self._reduce(gaussian_log_prob(latents[:, 1:], chain.means[:, self.start :], chain.stds[:, self.start :]))
        return chain.actions, {"latents": latents, "log_probs": log_probs}

    def regularizer(self, obs: torch.Tensor) -> torch.Tensor:
        """DPPO's optional BC term: minus the actor's log-likelihood of chains sampled by the frozen base."""
        with torch.no_grad():
            chain = self.base[0].chain(obs, self.steps, noise=self.sampling_noise)
        return -torch.stack([self.step_log_probs(obs, {"latents": chain.latents[:, self.start :]}, k) for k in range(self.ft_steps)], 1).mean()


class NoiseNet(nn.Module):
    """ReinFlow's exploration noise: std(cond, t) per chunk element, squashed into [min_std, max_std].

    An MLP (``hidden`` widths, tanh) on [observation condition, time embedding]; ``max_std`` is a buffer
    that the schedule lowers. Implements the :class:`~rlft.policies.chain.ChainNoise` protocol.
    """

    def __init__(self, cond_dim: int, horizon: int, action_dim: int, min_std: float, max_std: float, hidden: tuple[int, ...] = (64, 64), time_dim: int = 16):
        super().__init__()
        if not 0 < min_std <= max_std:
            raise ValueError(f"need 0 < min_std <= max_std (got {min_std}, {max_std})")
        self.shape = (horizon, action_dim)
        self.min_std = min_std
        self.register_buffer("max_std", torch.tensor(float(max_std)))
        self.time = SinusoidalEmbedding(time_dim, scale=100.0)
        layers: list[nn.Module] = []
        dim = cond_dim + time_dim
        for width in hidden:
            layers += [nn.Linear(dim, width), nn.Tanh()]
            dim = width
        self.mlp = nn.Sequential(*layers, nn.Linear(dim, horizon * action_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cond: torch.Tensor, natural_std: torch.Tensor) -> torch.Tensor:
        h = torch.cat([cond, self.time(t.expand(cond.shape[0]))], dim=-1)
        squashed = (torch.tanh(self.mlp(h)) + 1) / 2
        return (self.min_std + (self.max_std - self.min_std) * squashed).view(-1, *self.shape)


class ReinFlowChain(ChainProvider):
    """ReinFlow: every Euler step of a flow (or shortcut) policy made Gaussian by :class:`NoiseNet`.

    Chain log-likelihood = log N(x_0; 0, I) + sum_k log N(x_{k+1}; x_k + v dt, std_k^2); stored per
    sample: ``latents`` [steps + 1, H, A] and the reduced chain ``log_probs`` [1]. ``max_std`` is held
    for ``hold`` of training, then cosine-decayed to ``min_std`` by ``decay_end``.
    """

    per_step = False

    def __init__(
        self,
        base: Policy,
        steps: int,
        min_std: float,
        max_std: float,
        hold: float,
        decay_end: float,
        noise_hidden: tuple[int, ...],
        logprob_clamp: tuple[float, float] | None,
    ):
        super().__init__(base, steps, logprob_clamp)
        if not isinstance(base.head, RectifiedFlow):
            raise ValueError(f"ReinFlow needs a flow policy (flow, shortcut or meanflow head), not {type(base.head).__name__}")
        self.noise = NoiseNet(base.encoder.out_dim, base.horizon, base.action_dim, min_std, max_std, noise_hidden)
        self.max_std_start, self.hold, self.decay_end = max_std, hold, decay_end
        self.register_buffer("grid", self.actor.head.time_grid(steps).clone(), persistent=False)

    def set_progress(self, fraction: float) -> None:
        self.noise.max_std.fill_(hold_then_cosine(fraction, self.max_std_start, self.noise.min_std, self.hold, self.decay_end))

    def chain_log_probs(self, obs: torch.Tensor, sampled: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(reduced chain log-prob [B], entropy per element [B]) of ``sampled["latents"]`` under the current actor and noise net."""
        latents = sampled["latents"]
        lp, std = self.actor.transition_log_probs(obs, latents, self.grid, self.noise, reduce=False)
        x0 = latents[:, 0]
        total = lp.sum(1) + gaussian_log_prob(x0, torch.zeros_like(x0), torch.ones_like(x0))
        entropy = (0.5 * math.log(2 * math.pi * math.e) + torch.log(std)).mean((1, 2, 3))
        return self._reduce(total), entropy

    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chain = self.actor.chain(obs, self.steps, noise=self.noise)
        x0 = chain.latents[:, 0]
        elements = gaussian_log_prob(chain.latents[:, 1:], chain.means, chain.stds).sum(1) + gaussian_log_prob(x0, torch.zeros_like(x0), torch.ones_like(x0))
        return chain.actions, {"latents": chain.latents, "log_probs": self._reduce(elements)[:, None]}

    def regularizer(self, obs: torch.Tensor) -> torch.Tensor:
        """ReinFlow's optional term: squared distance between fine-tuned and frozen actions from the same noise."""
        noise = self.actor.initial_noise(obs.shape[0])
        with torch.no_grad():
            target = self.base[0].sample(obs, noise=noise, steps=self.steps)
        return ((self.actor.sample(obs, noise=noise, steps=self.steps) - target) ** 2).mean()

    def metrics(self) -> dict[str, float]:
        return {"noise/max_std": float(self.noise.max_std)}


Provider = ChainProvider | ResidualProvider


def build_dppo(algo: Any, base: Policy) -> DPPOChain:
    """The DPPO chain for ``base`` from the dppo algo config."""
    clamp = tuple(algo.logprob_clamp) if algo.get("logprob_clamp") else None
    return DPPOChain(base, algo.steps, algo.ft_steps, algo.min_sampling_std, algo.min_logprob_std, clamp)


def build_reinflow(algo: Any, base: Policy) -> ReinFlowChain:
    """The ReinFlow chain for ``base`` from the reinflow algo config."""
    clamp = tuple(algo.logprob_clamp) if algo.get("logprob_clamp") else None
    hold, decay_end = algo.noise_hold, algo.noise_decay_end
    return ReinFlowChain(base, algo.steps, algo.min_std, algo.max_std, hold, decay_end, tuple(algo.noise_hidden), clamp)
