"""The contract of a policy that acts: what evaluation, export checks and data recording rely on.

Everything that acts in an env implements :class:`ActingPolicy`: the generative :class:`~rlft.policies.policy.Policy`,
an offline run's Q selection, DSRL's steered policy, ResiP's base + residual, an exported controller and the
SAC experts that record demonstrations. Observations are raw ``{key: [B, T, ...]}`` dicts or, for a single
state key, a tensor [B, T, D]; actions are raw chunks [B, H, A], of which the first ``act_steps`` are executed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from rlft.policies.policy import Policy

Obs = Mapping[str, torch.Tensor] | torch.Tensor


@runtime_checkable
class ActingPolicy(Protocol):
    """A policy that turns observation histories into action chunks.

    * ``obs_horizon``: observation history length T it takes;
    * ``act_steps``: actions executed per chunk (the chunk itself may be longer);
    * ``default_steps``: its sampling steps when none are given (None: it has no step count);
    * ``default_stochastic``: whether it samples stochastically by default (DDPM heads do);
    * ``device``: where its inputs go.
    """

    obs_horizon: int
    act_steps: int

    @property
    def default_steps(self) -> int | None: ...

    @property
    def default_stochastic(self) -> bool: ...

    @property
    def device(self) -> torch.device: ...

    def sample(self, obs: Obs, steps: int | None = None, stochastic: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw action chunks [B, H, A] for observation histories [B, T, ...]."""
        ...

    def end_episodes(self, done: torch.Tensor) -> None:
        """``done`` [B] bool: those episodes ended (after a step, or all True after a reset); for policies with memory."""
        ...


class OverFrozenBase(nn.Module):
    """What the acting policies of steering methods share (DSRL's noise actor, ResiP's residual): a frozen
    base :class:`~rlft.policies.policy.Policy` that stays in eval mode, its observation history, its sampling
    steps unless ``steps`` says otherwise, and deterministic acting by default (the learned part's mean)."""

    default_stochastic = False

    def __init__(self, base: "Policy", steps: int | None):
        super().__init__()
        self.base = base.eval().requires_grad_(False)
        self.steps = steps

    @property
    def obs_horizon(self) -> int:
        return self.base.obs_horizon

    @property
    def default_steps(self) -> int:
        return self.steps or self.base.default_steps

    @property
    def device(self) -> torch.device:
        return self.base.device

    def train(self, mode: bool = True) -> "OverFrozenBase":
        super().train(mode)
        self.base.eval()
        return self

    def end_episodes(self, done: torch.Tensor) -> None:
        """No memory across chunks (a subclass with memory overrides this)."""
