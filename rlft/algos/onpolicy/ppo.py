"""Chain PPO: the one update behind DPPO, ReinFlow and ResiP (the provider decides what a ratio is).

Per-step providers (DPPO) give one ratio per (env step, denoising step) pair; minibatches are drawn
over those pairs, advantages are discounted along the chain (noisier steps count less) and the clip
range is interpolated from ``clip_base`` (noisiest) to ``clip`` (last). Chain providers (ReinFlow, and
ResiP's residual) give one ratio per rollout step and an entropy bonus. All: clipped surrogate, value
loss, optional regularisers (the provider's own, and the pretraining loss on demonstrations: the DDRL
anchor), KL early stop.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from rlft.algos.onpolicy.providers import Provider
from rlft.algos.onpolicy.rollout import Rollout, compute_gae
from rlft.envs.obs import obs_device, obs_map, obs_rows
from rlft.policies.backbones import Mish, ResidualBlock


class Critic(nn.Module):
    """V(s): a residual MLP (Mish) on the policy's normalized, flattened observation history.

    ``depth`` hidden layers of width ``hidden``: an input layer, residual blocks of two, and one plain
    layer where ``depth`` is even (ResiP's 2x256). ``layer_norm`` puts layer norms in the blocks and
    before the output layer, so V is a bounded feature vector times the last layer's weights: TD
    targets bootstrapped from the critic's own values can then no longer grow exponentially (they did
    on robosuite Lift with gamma 0.999, where most episodes end by the time limit; see PQN, Gallici
    et al. 2024, on layer norm and TD stability).
    """

    def __init__(self, obs_dim: int, hidden: int = 256, depth: int = 3, layer_norm: bool = False):
        super().__init__()
        self.inp = nn.Linear(obs_dim, hidden)
        norm = (lambda: nn.LayerNorm(hidden)) if layer_norm else nn.Identity
        plain = [norm(), Mish(), nn.Linear(hidden, hidden)] if depth % 2 == 0 else []
        self.blocks = nn.Sequential(*[ResidualBlock(hidden, layer_norm=layer_norm) for _ in range((depth - 1) // 2)], *plain)
        self.out = nn.Sequential(norm(), Mish(), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(obs))).squeeze(-1)


class ImageCritic(nn.Module):
    """V(s) from pixels (DPPO's pixel critic): its own image encoder, shaped like the policy's (random shifts while
    training), then :class:`Critic` on the features. Input: the policy's normalized observation dict."""

    def __init__(self, encoder: nn.Module, hidden: int = 256, depth: int = 3, layer_norm: bool = False):
        super().__init__()
        self.encoder = encoder
        self.value = Critic(encoder.out_dim, hidden, depth, layer_norm)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.value(self.encoder(obs))


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float(1 - (target - pred).var() / var) if var > 0 else float("nan")


def clip_schedule(k: torch.Tensor | int, n: int, clip_base: float, clip: float) -> torch.Tensor | float:
    """Clip range of fine-tuned step k of n: ``clip_base`` (k = 0, noisiest) to ``clip`` (last).

    With one fine-tuned step this is ``clip`` (DPPO's formula divides 0 by 0 there). ``k`` may be a tensor.
    """
    return clip if n == 1 else clip_base + (clip - clip_base) * k / (n - 1)


class ChainPPO:
    """PPO over a provider's chains. ``encode_value(obs) -> critic input`` flattens normalized observations."""

    def __init__(self, provider: Provider, critic: Critic, encode_value: Callable[[torch.Tensor], torch.Tensor], cfg: Any):
        self.provider, self.critic, self.encode_value, self.cfg = provider, critic, encode_value, cfg
        actor_params = [p for p in provider.parameters() if p.requires_grad]
        self.actor_opt = torch.optim.AdamW(actor_params, lr=cfg.actor_lr, weight_decay=cfg.actor_weight_decay)
        self.critic_opt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr, weight_decay=cfg.critic_weight_decay)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.encode_value(obs))

    def update(self, rollout: Rollout, demo_batch: Callable[[], Mapping[str, torch.Tensor]] | None = None) -> dict[str, float]:
        """Epochs of minibatch updates on one rollout; returns averaged diagnostics."""
        cfg, provider = self.cfg, self.provider
        adv, returns = compute_gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.truncated, cfg.gamma, cfg.gae_lambda)
        n = adv.numel()
        obs = obs_map(lambda x: x.flatten(0, 1), rollout.obs)
        # what the provider sampled and scores again (its own names: chain latents; ResiP's base action and residual)
        sampled = {k: v.flatten(0, 1) for k, v in rollout.stored.items() if k != "log_probs"}
        stored_lp = rollout.stored["log_probs"].flatten(0, 1)  # [n, K'] (per step) or [n, 1] (chain), from sampling
        adv, returns = adv.flatten(), returns.flatten()
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        # regularisers: the chains' own (DPPO's BC term, ReinFlow's; ResiP has none) and the DDRL data anchor
        reg_coef, data_coef = cfg.get("reg_coef") or 0.0, cfg.data_coef
        k_steps = stored_lp.shape[1] if provider.per_step else 1
        n_items = n * k_steps  # (sample, step) pairs or samples
        batch = min(cfg.batch_size, n_items)
        perms = [torch.randperm(n_items) for _ in range(cfg.update_epochs)]
        # Old log-probs: recomputed before any update with the first epoch's minibatches, so the first
        # minibatch's ratio is exactly 1. They match the sampling distribution's log-probs recorded in
        # the rollout up to float rounding (logged), because both use the chain's own time grid (and,
        # for DPPO, when the sampling and likelihood std floors are equal, as by default).
        old_lp = torch.empty(n_items)
        with torch.no_grad():
            for start in range(0, n_items, batch):
                items = perms[0][start : start + batch]
                old_lp[items] = self._new_log_probs(obs, sampled, items // k_steps, items % k_steps)[0].cpu()
        recorded = stored_lp.flatten() if provider.per_step else stored_lp[:, 0]
        sampling_dev = (old_lp - recorded.cpu()).abs().max().item()
        logs: dict[str, list[float]] = {}
        first_ratio_dev: float | None = None
        stop = False
        for epoch, perm in enumerate(perms):
            kls = []
            for start in range(0, n_items, batch):
                items = perm[start : start + batch]
                sample_idx, step_idx = items // k_steps, items % k_steps
                new_lp, entropy = self._new_log_probs(obs, sampled, sample_idx, step_idx)
                old = old_lp[items].to(new_lp)
                a = adv[sample_idx]
                if provider.per_step:  # noisier denoising steps count less
                    a = a * (self.cfg.gamma_denoising ** (k_steps - 1 - step_idx).float()).to(a)
                ratio = torch.exp(new_lp - old)
                clip = self._clip_ranges(step_idx, k_steps).to(ratio)
                pg_loss = -torch.min(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a).mean()
                v = self.value(obs_rows(obs, sample_idx))
                v_loss = 0.5 * ((v - returns[sample_idx]) ** 2).mean()
                loss = pg_loss + cfg.vf_coef * v_loss
                if entropy is not None and cfg.ent_coef:
                    loss = loss - cfg.ent_coef * entropy.mean()
                extra: list[tuple[str, torch.Tensor]] = []
                if reg_coef:
                    extra.append(("loss/regularizer", provider.regularizer(obs_rows(obs, sample_idx))))
                    loss = loss + reg_coef * extra[-1][1]
                if data_coef and demo_batch is not None:
                    extra.append(("loss/data", provider.data_loss(demo_batch())))
                    loss = loss + data_coef * extra[-1][1]
                self.actor_opt.zero_grad(set_to_none=True)
                self.critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm:
                    nn.utils.clip_grad_norm_([p for g in self.actor_opt.param_groups for p in g["params"]], cfg.max_grad_norm)
                    nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.actor_opt.step()
                self.critic_opt.step()
                with torch.no_grad():
                    log_ratio = new_lp - old
                    kl = ((ratio - 1) - log_ratio).mean().item()
                kls.append(kl)
                for key, val in (
                    ("loss/policy", pg_loss.item()),
                    ("loss/value", v_loss.item()),
                    ("ppo/approx_kl", kl),
                    ("ppo/clip_fraction", ((ratio - 1).abs() > clip).float().mean().item()),
                    ("ppo/ratio", ratio.mean().item()),
                    *((("ppo/entropy", entropy.mean().item()),) if entropy is not None else ()),
                    *((key, term.item()) for key, term in extra),
                ):
                    logs.setdefault(key, []).append(val)
                if first_ratio_dev is None:  # PPO's ratio is exactly 1 on the first minibatch
                    first_ratio_dev = (ratio - 1).abs().max().item()
            if cfg.target_kl and np.mean(kls) > cfg.target_kl:
                stop = True
                break
        with torch.no_grad():
            ev = explained_variance(rollout.values.flatten(), returns)
        out = {k: float(np.mean(v)) for k, v in logs.items()}
        out.update(
            {
                "ppo/explained_variance": ev,
                "ppo/early_stop": float(stop),
                "ppo/epochs": float(epoch + 1),
                "ppo/first_ratio_dev": first_ratio_dev,
                "ppo/sampling_logprob_dev": sampling_dev,
            }
        )
        return out | provider.metrics()

    def _new_log_probs(
        self, obs: torch.Tensor, sampled: Mapping[str, torch.Tensor], sample_idx: torch.Tensor, step_idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log-probs [m] in item order, entropy [m] or None) under the current parameters."""
        provider = self.provider
        if not provider.per_step:
            return provider.chain_log_probs(obs_rows(obs, sample_idx), {k: v[sample_idx] for k, v in sampled.items()})
        new_lp = torch.empty(len(sample_idx), device=obs_device(obs))
        for k in step_idx.unique().tolist():  # one network call per denoising step present
            at = (step_idx == k).nonzero().flatten()
            idx = sample_idx[at]
            new_lp = new_lp.index_put((at,), provider.step_log_probs(obs_rows(obs, idx), {key: v[idx] for key, v in sampled.items()}, k))
        return new_lp, None

    def _clip_ranges(self, step_idx: torch.Tensor, k_steps: int) -> torch.Tensor:
        """Clip range per item: :func:`clip_schedule` of its denoising step (one value for chain ratios)."""
        if not self.provider.per_step:
            return torch.as_tensor(self.cfg.clip).expand(step_idx.shape)
        return torch.as_tensor(clip_schedule(step_idx.float(), k_steps, self.cfg.clip_base, self.cfg.clip)).expand(step_idx.shape)
