"""Rollout collection and GAE, shared by every on-policy algorithm (chain PPO, residual PPO).

One rollout step is one executed action chunk: the agent is called once for all N sub-envs, the
chunk wrapper sums the chunk's rewards, and the critic values the observations. Truncated episodes
(time limit) bootstrap from the value of their true final observation; terminated ones from zero;
advantages never run across an episode boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import nn

from rlft.envs.obs import Obs, obs_rows, obs_stack


class Agent(Protocol):
    """What the rollout needs from an algorithm: sample chunks with what its update will score."""

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """obs [N, ...] -> (raw action chunk [N, H, A], per-sample tensors to store, e.g. latents and log-probs)."""
        ...

    def end_episodes(self, done: torch.Tensor) -> None:
        """done [N] bool: those sub-envs' episodes ended (after a step, or all at a reset); for agents with memory."""
        ...


@dataclass
class Rollout:
    """T steps of N sub-envs. ``stored`` holds the agent's per-sample tensors, each [T, N, ...]."""

    obs: Obs  # [T, N, ...] (dict observations: each key)
    stored: dict[str, torch.Tensor]
    rewards: torch.Tensor  # [T, N] (scaled, what the critic learns)
    values: torch.Tensor  # [T, N]
    next_values: torch.Tensor  # [T, N]: V(s_{t+1}); V(final obs) where truncated
    terminated: torch.Tensor  # [T, N] bool
    truncated: torch.Tensor  # [T, N] bool
    env_steps: int  # env steps taken (chunks count their executed steps)


class RewardScaler(nn.Module):
    """Divide rewards by the running std of the discounted return (DPPO's and PPO's reward scaling).

    The statistics are buffers, so checkpoints carry them and a resumed run scales the same way.
    """

    def __init__(self, n_envs: int, gamma: float, eps: float = 1e-8):
        super().__init__()
        self.gamma, self.eps = gamma, eps
        self.register_buffer("ret", torch.zeros(n_envs, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))
        self.register_buffer("count", torch.full((), 1e-4, dtype=torch.float64))

    def forward(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        self.ret = self.ret * self.gamma + reward.double().cpu()
        batch_mean, batch_var, n = self.ret.mean(), self.ret.var(unbiased=False), self.ret.numel()
        delta, total = batch_mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total
        self.ret[done.cpu()] = 0.0
        return (reward / torch.sqrt(self.var + self.eps).to(reward)).to(reward.dtype)


@torch.no_grad()
def collect_rollout(
    env: Any, agent: Agent, value: Callable[[torch.Tensor], torch.Tensor], obs: torch.Tensor, n_steps: int, scaler: RewardScaler | None = None
) -> tuple[Rollout, torch.Tensor]:
    """Step ``env`` (an :class:`ActionChunk`-wrapped batched env) ``n_steps`` times from ``obs``.

    ``value(obs) -> [N]`` is the critic. Returns the rollout and the observation to continue from.
    """
    all_obs, rewards, values, terms, truncs, finals = [], [], [], [], [], []
    stored: dict[str, list[torch.Tensor]] = {}
    env_steps = 0
    for _ in range(n_steps):
        chunk, extra = agent.sample(obs)
        for k, v in extra.items():
            stored.setdefault(k, []).append(v)
        all_obs.append(obs)
        values.append(value(obs))
        obs, reward, terminated, truncated, info = env.step(chunk)
        done = terminated | truncated
        agent.end_episodes(done)
        rewards.append(scaler(reward, done) if scaler is not None else reward)
        terms.append(terminated)
        truncs.append(truncated & ~terminated)
        finals.append(info["final_obs"])
        env_steps += int(info["steps"].sum())
    values_t = torch.stack(values)
    next_values = torch.cat([values_t[1:], value(obs)[None]])
    truncated_t = torch.stack(truncs)
    for t in range(n_steps):  # time-limit truncation: bootstrap from the true last observation
        if bool(truncated_t[t].any()):
            idx = truncated_t[t].nonzero().flatten()
            next_values[t, idx] = value(obs_rows(finals[t], idx))
    rollout = Rollout(
        obs=obs_stack(all_obs),
        stored={k: torch.stack(v) for k, v in stored.items()},
        rewards=torch.stack(rewards).float(),
        values=values_t,
        next_values=next_values,
        terminated=torch.stack(terms),
        truncated=truncated_t,
        env_steps=env_steps,
    )
    return rollout, obs


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over [T, N]; returns (advantages, returns = advantages + values).

    delta_t = r_t + gamma * next_value_t * (1 - terminated_t) - V_t, and the recursion is cut at every
    episode end (terminated or truncated), so no advantage mixes two episodes.
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    done = (terminated | truncated).float()
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1 - terminated[t].float()) - values[t]
        running = delta + gamma * lam * (1 - done[t]) * running
        advantages[t] = running
    return advantages, advantages + values
