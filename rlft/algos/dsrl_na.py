"""DSRL-NA, DSRL's noise-aliasing variant: learn Q in action space, act in noise space.

Different noises w can give the same executed action; a critic over w must learn each one separately,
a critic over actions shares what it learns between them. So:

* action critic Q^A(s, a) (twin, with targets; :class:`~rlft.algos.critics.TwinQ`) is trained by TD on
  the *executed* actions a (normalized, the chunk's executed part): y = r + gamma^k (1 - terminal)
  (min Q^A_target(s', base(s', w')) - alpha log pi(w' | s')), w' ~ pi(s');
* noise critic Q^W(s, w) (twin) is distilled from Q^A(s, base(s, w)) for w ~ N(0, I) *clipped to the
  bound* (the reference code feeds unbounded noise here, outside the actor's range);
* the actor pi(w | s) = bound * tanh(Gaussian) maximises min Q^W(s, w) - alpha log pi, with alpha tuned
  to the target entropy, as SAC.

Per chunk step of all sub-envs: ``utd`` critic + actor + alpha steps, then ``distill_steps`` noise
critic steps (DSRL's schedule). The replay holds raw observations, so the base can be run on s'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from rlft.algos.critics import TwinQ, mlp
from rlft.algos.replay import Replay

if TYPE_CHECKING:  # dsrl.py builds this learner; the import goes one way
    from rlft.algos.dsrl import LatentNoiseVecEnv

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class NoiseActor(nn.Module):
    """pi(w | s): a tanh-squashed Gaussian over [-1, 1]^noise_dim (times the bound outside), on features [B, F]."""

    def __init__(self, obs_dim: int, noise_dim: int, hidden: int, depth: int, layer_norm: bool, log_std_init: float):
        super().__init__()
        self.trunk = mlp(obs_dim, 2 * noise_dim, hidden, depth, nn.Tanh, layer_norm)
        with torch.no_grad():  # start at the requested std
            self.trunk[-1].bias[noise_dim:].fill_(log_std_init)
        self.noise_dim = noise_dim

    def _params(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.trunk(features).split(self.noise_dim, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(self, features: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """[B, F] -> squashed action [B, noise_dim] in (-1, 1): tanh of the mean, or of a sample."""
        mean, log_std = self._params(features)
        return torch.tanh(mean if deterministic else mean + log_std.exp() * torch.randn_like(mean))

    def sample_log_prob(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(squashed sample [B, noise_dim], log-density of it [B], tanh correction included), reparameterised."""
        mean, log_std = self._params(features)
        u = mean + log_std.exp() * torch.randn_like(mean)
        gauss = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
        # log(1 - tanh(u)^2), computed stably
        correction = (2 * (np.log(2.0) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), gauss - correction


class NoiseAliasedSAC:
    """``algo=dsrl_na`` on a :class:`LatentNoiseVecEnv`: the learner and its replay (see the module docstring)."""

    def __init__(self, venv: LatentNoiseVecEnv, algo: DictConfig):
        self.venv, self.algo, self.base = venv, algo, venv.base
        self.bound = venv.bound
        self.discount = algo.gamma
        obs_dim, noise_dim = venv.observation_space.shape[0], venv.action_space.shape[0]
        exec_dim = self.base.act_steps * self.base.action_dim
        hidden, depth, ln = algo.hidden, algo.depth, algo.layer_norm
        self.actor = NoiseActor(obs_dim, noise_dim, hidden, depth, ln, algo.log_std_init)
        self.action_q = TwinQ(obs_dim, exec_dim, hidden, depth, nn.Tanh, ln)
        self.noise_q = nn.ModuleList([mlp(obs_dim + noise_dim, 1, hidden, depth, nn.Tanh, ln) for _ in range(2)])
        self.log_alpha = nn.Parameter(torch.zeros(1))
        self.holder = nn.ParameterDict({"log_alpha": self.log_alpha})
        self.replay = Replay(algo.buffer_size)
        lr = algo.lr
        self.opts = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=lr),
            "critic": torch.optim.Adam(self.action_q.trained_parameters(), lr=lr),
            "noise_critic": torch.optim.Adam(self.noise_q.parameters(), lr=lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=lr),
        }
        self.obs: np.ndarray | None = None

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "action_q": self.action_q, "noise_q": self.noise_q, "alpha": self.holder, "replay": self.replay}

    def optimizers(self) -> dict[str, Any]:
        return self.opts

    # ---- data ------------------------------------------------------------------------------------------
    def store(self, obs: np.ndarray, noise: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, done: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """The last step of ``venv`` per sub-env: raw obs, noise / bound, executed actions, reward, terminal, discount.

        The signature is the warm-up's (shared with SB3's buffer); the observations come from ``venv.last``
        (raw, so the base can run on them), not from the features passed in."""
        last = self.venv.last
        steps = torch.tensor([info["env_steps"] for info in infos], dtype=torch.float32)
        terminal = torch.tensor([bool(d) and not info.get("TimeLimit.truncated", False) for d, info in zip(done, infos)], dtype=torch.float32)
        self.replay.add(
            obs=last["obs"].float(),
            next_obs=last["next_obs"].float(),
            noise=torch.as_tensor(noise, dtype=torch.float32) / self.bound,
            executed=last["executed"].flatten(1),
            reward=torch.as_tensor(reward, dtype=torch.float32),
            terminal=terminal,
            discount=self.discount**steps,  # gamma^k for the k env steps the chunk took
        )

    def continue_from(self, obs: np.ndarray) -> None:
        self.obs = obs

    # ---- acting and learning -----------------------------------------------------------------------------
    def run(self, n_steps: int) -> dict[str, float]:
        """``n_steps`` chunk steps of every sub-env, each followed by the gradient steps; mean diagnostics."""
        if self.obs is None:
            self.obs = self.venv.reset()
        logs: dict[str, list[float]] = {}
        for _ in range(n_steps):
            with torch.no_grad():
                noise = (self.bound * self.actor(torch.as_tensor(self.obs))).numpy()
            self.venv.step_async(noise)
            next_obs, reward, done, infos = self.venv.step_wait()
            self.store(self.obs, noise, next_obs, reward, done, infos)
            self.obs = next_obs
            for _ in range(self.algo.utd):
                for k, v in self.update().items():
                    logs.setdefault(k, []).append(v)
            for _ in range(self.algo.distill_steps):
                logs.setdefault("loss/noise_critic", []).append(self.distill())
        return {k: float(np.mean(v)) for k, v in logs.items()}

    def _executed(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Raw obs [B, T, D], noise in [-bound, bound] [B, H * A] -> the base's executed actions, normalized [B, act_steps * A]."""
        base = self.base
        chunk = base.sample(obs, noise=noise.view(-1, base.horizon, base.action_dim), steps=self.algo.steps)
        return base.action_norm(chunk[:, : base.act_steps]).flatten(1)

    def update(self) -> dict[str, float]:
        """One critic, actor and temperature step on a replay batch."""
        b = self.replay.sample(self.algo.batch_size)
        s, s2 = self.base.normalized_state(b["obs"]), self.base.normalized_state(b["next_obs"])
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            w2, logp2 = self.actor.sample_log_prob(s2)
            q2 = self.action_q.target(s2, self._executed(b["next_obs"], self.bound * w2)).min(0).values - alpha * logp2
            target = b["reward"] + (1 - b["terminal"]) * b["discount"] * q2
        q = self.action_q(s, b["executed"])
        critic_loss = 0.5 * ((q - target) ** 2).mean(1).sum()
        self.opts["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        self.opts["critic"].step()

        w, logp = self.actor.sample_log_prob(s)
        q_noise = torch.stack([net(torch.cat([s, w], -1)).squeeze(-1) for net in self.noise_q]).min(0).values
        actor_loss = (alpha * logp - q_noise).mean()
        self.opts["actor"].zero_grad(set_to_none=True)
        actor_loss.backward()
        self.opts["actor"].step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.algo.target_entropy)).mean()
        self.opts["alpha"].zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.opts["alpha"].step()
        self.action_q.update_target(self.algo.tau)
        return {"loss/critic": critic_loss.item(), "loss/actor": actor_loss.item(), "sac/ent_coef": float(alpha), "sac/q": q.mean().item()}

    def distill(self) -> float:
        """One step of Q^W(s, w) towards Q^A(s, base(s, w)), w ~ N(0, I) clipped to the bound."""
        b = self.replay.sample(self.algo.batch_size)
        s = self.base.normalized_state(b["obs"])
        noise = torch.randn(len(s), self.venv.action_space.shape[0]).clamp(-self.bound, self.bound)
        with torch.no_grad():
            target = self.action_q(s, self._executed(b["obs"], noise))
        pred = torch.stack([net(torch.cat([s, noise / self.bound], -1)).squeeze(-1) for net in self.noise_q])
        loss = 0.5 * ((pred - target) ** 2).mean(1).sum()
        self.opts["noise_critic"].zero_grad(set_to_none=True)
        loss.backward()
        self.opts["noise_critic"].step()
        return loss.item()
