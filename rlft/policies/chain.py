"""The chain view of a generative head, which on-policy fine-tuning (DPPO, ReinFlow) optimises.

Sampling is a chain x_0 -> x_1 -> ... -> x_K over a time grid from noise to data. Each step is a
Gaussian transition x_{k+1} ~ N(mean_k, std_k^2) whose mean comes from the head (a DDPM/DDIM step or an
Euler flow step) and whose std comes from a :class:`ChainNoise` source: the head's own std with a
floor (DPPO) or a learned noise network (ReinFlow). The grid that sampled a chain is stored with it,
so log-probabilities are always recomputed on that same grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch


class ChainNoise(Protocol):
    """Std of each chain transition: ``(x_k, t_k, t_next, cond, natural_std) -> std`` broadcastable to x_k.

    ``natural_std`` is the head's own std for the step ([B, 1, 1]; zero for flow heads).
    """

    def __call__(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cond: torch.Tensor, natural_std: torch.Tensor) -> torch.Tensor: ...


class StdFloor:
    """The head's std clipped from below at ``min_std`` (DPPO's sampling and likelihood floors).

    For flow heads, whose natural std is zero, this is a constant std: the simplest stochastic flow.
    """

    def __init__(self, min_std: float):
        if min_std <= 0:
            raise ValueError(f"min_std must be > 0 for a chain with log-probabilities (got {min_std})")
        self.min_std = min_std

    def __call__(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cond: torch.Tensor, natural_std: torch.Tensor) -> torch.Tensor:
        return natural_std.clamp(min=self.min_std)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(x; mean, std^2)."""
    return -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


@dataclass
class Chain:
    """One sampled chain per batch element (normalized action space).

    * ``latents``   [B, K+1, H, A]  x_0 (initial noise) .. x_K (the normalized action chunk)
    * ``grid``      [K+1]           the times that sampled it (head-specific units)
    * ``means``     [B, K, H, A]    transition means
    * ``stds``      [B, K, H, A]    transition stds
    * ``log_probs`` [B, K]          log-density of each transition, summed over (H, A)
    * ``init_log_prob`` [B]         log N(x_0; 0, I) summed over (H, A) (ReinFlow counts it)
    * ``actions``   [B, H, A]       x_K mapped back to raw actions (clipped where the policy clips)
    """

    latents: torch.Tensor
    grid: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor
    log_probs: torch.Tensor
    init_log_prob: torch.Tensor
    actions: torch.Tensor

    @property
    def steps(self) -> int:
        return self.latents.shape[1] - 1
