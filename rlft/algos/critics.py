"""Critics shared by the offline (and later online) value-based methods.

* :class:`TwinQ`: two Q networks Q_i(s, a) with Polyak-averaged target copies (TD3/DQL style);
* :class:`ValueNet` and :func:`expectile_loss`: V(s) fitted by expectile regression (IQL, FISOR's reward
  and feasibility values).

Critics take a state feature vector [B, C] (the policy's normalized, encoded observation) and
normalized actions [B, H, A] (flattened inside).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from rlft.policies.backbones import Mish


def mlp(in_dim: int, out_dim: int, hidden: int = 256, depth: int = 3, activation: type[nn.Module] = Mish, layer_norm: bool = False) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden`` (Linear, LayerNorm if asked, activation), then a linear output."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(in_dim, hidden), *([nn.LayerNorm(hidden)] if layer_norm else []), activation()]
        in_dim = hidden
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


class TwinQ(nn.Module):
    """Q_1, Q_2 over (state features, action chunk) and their target copies.

    ``forward`` -> [2, B] from the trained networks; ``target`` -> [2, B] from the targets (no
    gradient); ``update_target(tau)`` moves the targets by Polyak averaging. Networks: :func:`mlp`
    (Mish by default, as DQL's; DSRL's are Tanh with LayerNorm).
    """

    def __init__(self, state_dim: int, action_dim: int, hidden: int = 256, depth: int = 3, activation: type[nn.Module] = Mish, layer_norm: bool = False):
        super().__init__()
        self.q = nn.ModuleList([mlp(state_dim + action_dim, 1, hidden, depth, activation, layer_norm) for _ in range(2)])
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)

    @staticmethod
    def _run(nets: nn.ModuleList, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([state, action.flatten(1)], dim=-1)
        return torch.stack([net(x).squeeze(-1) for net in nets])

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[B, C], [B, H, A] -> [2, B]."""
        return self._run(self.q, state, action)

    @torch.no_grad()
    def target(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[B, C], [B, H, A] -> [2, B] from the target networks."""
        return self._run(self.q_target, state, action)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """theta_target <- (1 - tau) theta_target + tau theta."""
        torch._foreach_lerp_(list(self.q_target.parameters()), list(self.q.parameters()), tau)

    def trained_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer updates (the targets only follow)."""
        return list(self.q.parameters())


class ValueNet(nn.Module):
    """V(s): [B, C] -> [B]."""

    def __init__(self, state_dim: int, hidden: int = 256, depth: int = 3, activation: type[nn.Module] = Mish):
        super().__init__()
        self.net = mlp(state_dim, 1, hidden, depth, activation)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state).squeeze(-1)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric squared loss |expectile - 1(diff < 0)| diff^2 per element, diff = target - V(s).

    ``expectile`` > 0.5 weights under-estimates (diff > 0) more, so V tends to an upper expectile of
    the target (IQL's in-sample max); < 0.5 tends to a lower one (FISOR's reversed expectile).
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff**2
