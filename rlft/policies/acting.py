"""The contract of a policy that acts: what evaluation, export checks and data recording rely on.

Everything that acts in an env implements :class:`ActingPolicy`: the generative :class:`~rlft.policies.policy.Policy`,
an offline run's Q selection, DSRL's steered policy, ResiP's base + residual, an exported controller and the
SAC experts that record demonstrations. Observations are raw ``{key: [B, T, ...]}`` dicts or, for a single
state key, a tensor [B, T, D]; actions are raw chunks [B, H, A], of which the first ``act_steps`` are executed.

Those that can be deployed also say what ``rlft export`` writes of them: ``export_spec(steps)`` -> :class:`ExportSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, runtime_checkable

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


@dataclass(frozen=True)
class Graph:
    """A traceable, deterministic forward of an acting policy: ``fn(*inputs, obs)``, with the tensors named
    by ``inputs`` (batch first) and the raw observation dict ``obs``, returns ``output`` (batch first)."""

    fn: Callable[..., torch.Tensor]
    inputs: tuple[str, ...]
    output: str = "action"


@dataclass(frozen=True)
class ExportSpec:
    """What ``rlft export`` writes of an acting policy (:mod:`rlft.export.exporter` traces the graphs).

    * ``kind``: ``policy``, ``q_select``, ``steered`` or ``residual`` (recorded in ``controller.json``);
    * ``policy``: the generative :class:`~rlft.policies.policy.Policy` inside (observation shapes and
      normalizers, the sampler, the noise clip);
    * ``chunk``: ``(noise [B, *noise_shape], obs) -> raw action chunk [B, horizon, A]``, with no noise input
      where ``noise_shape`` is None (DSRL's actor chooses it); with a ``residual``, the base's normalized
      actions [B, queue, A] for the controller's queue instead;
    * ``residual``: ResiP's step ``(base_action [B, A], obs) -> raw action [B, 1, A]``, run every step on the
      next queued base action (``queue`` of them per chunk);
    * ``horizon``, ``act_steps``: the chunks the controller returns and how many of each it executes;
    * ``meta``: what else ``controller.json`` records of it (the Q selection, DSRL's bound, ResiP's scale).
    """

    kind: str
    policy: "Policy"
    chunk: Graph
    noise_shape: tuple[int, ...] | None
    horizon: int
    act_steps: int
    residual: Graph | None = None
    queue: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


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
