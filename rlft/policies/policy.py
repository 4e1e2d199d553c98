"""The Policy every algorithm uses: normalizers + observation encoder + generative head + action chunking.

Observations are ``{key: [B, T, ...]}`` dicts (T = ``obs_horizon``); a state-only policy also takes a
plain tensor [B, T, D] or [B, D] for its single key. Actions are chunks [B, H, A] (H = ``horizon``), of
which ``act`` returns the first ``act_steps``. Everything the head does happens in normalized action
space; returned actions are raw.

* ``act(obs)``                 control: the head's own sampler at its default steps
* ``sample(obs, noise, steps, stochastic)``  deterministic given ``noise`` unless ``stochastic``
* ``chain(obs, steps, noise)`` the sampling chain with its Gaussian transitions (fine-tuning)
* ``log_prob_chain(obs, chain)`` those log-probs recomputed under the current parameters
* ``loss(batch)``              the head's training loss on a window batch
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rlft.policies.acting import ExportSpec, Graph
from rlft.policies.backbones import BACKBONES
from rlft.policies.chain import Chain, ChainNoise, StdFloor, gaussian_log_prob
from rlft.policies.encoders import build_encoder, is_image_shape
from rlft.policies.heads import HEADS
from rlft.policies.normalizer import Normalizer

Obs = Mapping[str, torch.Tensor] | torch.Tensor


def _options(section: Mapping[str, Any]) -> dict[str, Any]:
    opts = dict(section)
    opts.pop("type")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()}


def clipped_normal(
    shape: Sequence[int], clip: float, generator: torch.Generator | None = None, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """N(0, I) draws of ``shape``, clipped at ``clip`` std where ``clip`` > 0 (DPPO's noise clipping)."""
    x = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    return x.clamp(-clip, clip) if clip else x


class Policy(nn.Module):
    """Build from a policy config (``configs/policy/*.yaml``), observation shapes and dataset statistics.

    ``obs_shapes``: per-step shape of each observation key; ``stats``: per-key ``{mean, std, min, max}``
    (what every episode store carries) for the state keys and ``action``.
    """

    def __init__(self, cfg: Mapping[str, Any], obs_shapes: Mapping[str, Sequence[int]], action_dim: int, stats: Mapping[str, Mapping[str, Any]]):
        super().__init__()
        cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        self.cfg = cfg
        self.obs_shapes = {k: tuple(int(d) for d in s) for k, s in obs_shapes.items()}
        self.action_dim = int(action_dim)
        self.obs_horizon, self.horizon, self.act_steps = int(cfg["obs_horizon"]), int(cfg["horizon"]), int(cfg["act_steps"])
        if not 1 <= self.act_steps <= self.horizon:
            raise ValueError(f"act_steps must be in 1..horizon={self.horizon} (got {self.act_steps})")
        self.noise_clip = float(cfg.get("noise_clip") or 0.0)
        self.clip_action = bool(cfg.get("clip_action", True)) and cfg["normalizer"]["action"] == "limits"
        self.obs_norm = nn.ModuleDict({k: Normalizer(stats[k], cfg["normalizer"]["obs"]) for k, s in self.obs_shapes.items() if not is_image_shape(s)})
        self.action_norm = Normalizer(stats["action"], cfg["normalizer"]["action"])
        self.encoder = build_encoder(cfg["encoder"]["type"], self.obs_shapes, self.obs_horizon, **_options(cfg["encoder"]))
        head_cls = HEADS.get(cfg["head"]["type"])
        if head_cls is None:
            raise ValueError(f"unknown head type '{cfg['head']['type']}'; choose one of: {', '.join(HEADS)}")
        backbone_cls = BACKBONES.get(cfg["backbone"]["type"])
        if backbone_cls is None:
            raise ValueError(f"unknown backbone type '{cfg['backbone']['type']}'; choose one of: {', '.join(BACKBONES)}")
        backbone_opts = {"time_scale": head_cls.time_scale} | _options(cfg["backbone"])
        net = backbone_cls(self.action_dim, self.horizon, self.encoder.out_dim, n_times=head_cls.n_times, **backbone_opts)
        self.head = head_cls(net, **_options(cfg["head"]))
        self.frozen_head: nn.Module | None = None
        self.frozen_steps = 0
        if cfg.get("frozen_steps"):
            self.freeze_early_steps(int(cfg["frozen_steps"]))

    def freeze_early_steps(self, n: int) -> None:
        """Sample the first ``n`` steps of every grid with a frozen copy of the current head (DPPO: only
        the last denoising steps are fine-tuned). Recorded in the config, so saved policies keep it."""
        if n <= 0:
            return
        self.frozen_head = copy.deepcopy(self.head).requires_grad_(False)
        self.frozen_steps = n
        self.cfg["frozen_steps"] = n

    def _head_at(self, i: int) -> Any:
        """The head that samples transition ``i`` of a grid (the frozen copy for the first ``frozen_steps``)."""
        return self.frozen_head if self.frozen_head is not None and i < self.frozen_steps else self.head

    # ---- observations ------------------------------------------------------------------------------
    def _as_dict(self, obs: Obs) -> dict[str, torch.Tensor]:
        if isinstance(obs, torch.Tensor):
            if len(self.obs_shapes) != 1:
                raise ValueError(f"this policy takes a dict of observations with keys {', '.join(sorted(self.obs_shapes))}")
            obs = {next(iter(self.obs_shapes)): obs}
        out = {}
        for key, shape in self.obs_shapes.items():
            if key not in obs:
                raise ValueError(f"observation key '{key}' missing (got {', '.join(sorted(obs))})")
            x = obs[key]
            if tuple(x.shape[1:]) == shape and self.obs_horizon == 1:
                x = x[:, None]  # [B, ...] -> [B, 1, ...]
            if tuple(x.shape[1:]) != (self.obs_horizon, *shape):
                raise ValueError(f"observation '{key}' has shape {tuple(x.shape)}; expected [B, {self.obs_horizon}, {', '.join(map(str, shape))}]")
            out[key] = x
        return out

    def normalized_state(self, obs: Obs) -> torch.Tensor:
        """A state policy's raw observation history [N, T, D] (or its one-key dict) -> normalized and flattened
        [N, T * D] (the input of the critics, residuals and noise actors built on top of it)."""
        key = next(iter(self.obs_norm))
        return self.obs_norm[key](self._as_dict(obs)[key].to(self.action_norm.center.device, torch.float32)).flatten(1)

    def normalized_obs(self, obs: Obs) -> dict[str, torch.Tensor]:
        """Raw observations -> a dict by key on the policy's device: state keys normalized [B, T, D], images as they are."""
        device = self.action_norm.center.device
        return {k: self.obs_norm[k](v.to(device, torch.float32)) if k in self.obs_norm else v.to(device) for k, v in self._as_dict(obs).items()}

    def encode(self, obs: Obs) -> torch.Tensor:
        """Raw observations -> condition [B, C] (normalizes state keys, encodes images)."""
        return self.encoder(self.normalized_obs(obs))

    def fresh_encoder(self) -> nn.Module:
        """A new, untrained encoder of this policy's shape (for critics with their own, as DPPO's pixel critic)."""
        return build_encoder(self.cfg["encoder"]["type"], self.obs_shapes, self.obs_horizon, **_options(self.cfg["encoder"]))

    @property
    def has_images(self) -> bool:
        return any(is_image_shape(s) for s in self.obs_shapes.values())

    # ---- training ----------------------------------------------------------------------------------
    def loss(self, batch: Mapping[str, torch.Tensor], reduce: bool = True) -> torch.Tensor:
        """The head's loss on a window batch (observation keys + ``action`` [B, H, A]); [B] if not ``reduce``."""
        action = batch["action"]
        if tuple(action.shape[1:]) != (self.horizon, self.action_dim):
            raise ValueError(f"batch action has shape {tuple(action.shape)}; expected [B, {self.horizon}, {self.action_dim}]")
        x0 = self.action_norm(action.to(self.action_norm.center.device, torch.float32))
        per_sample = self.head.loss(x0, self.encode({k: batch[k] for k in self.obs_shapes}))
        return per_sample.mean() if reduce else per_sample

    # ---- sampling ----------------------------------------------------------------------------------
    def initial_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_0 ~ N(0, I) [B, H, A], clipped at ``noise_clip`` std where set."""
        return clipped_normal((batch, self.horizon, self.action_dim), self.noise_clip, generator, self.action_norm.center.device)

    def _randn_like(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return clipped_normal(x.shape, self.noise_clip, generator, x.device, x.dtype)

    def to_actions(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized chunk -> raw actions (clipped to the data's range where the normalizer is limits)."""
        return self.action_norm.unnormalize(x.clamp(-1, 1) if self.clip_action else x)

    def _check_noise(self, noise: torch.Tensor, batch: int) -> None:
        if tuple(noise.shape) != (batch, self.horizon, self.action_dim):
            raise ValueError(f"noise has shape {tuple(noise.shape)}; expected [{batch}, {self.horizon}, {self.action_dim}]")

    def sample(
        self, obs: Obs, noise: torch.Tensor | None = None, steps: int | None = None, stochastic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Raw action chunk [B, H, A]. Deterministic given ``noise`` (DDIM eta 0 / the flow ODE) unless ``stochastic``."""
        return self.to_actions(self.sample_normalized(obs, noise, steps, stochastic, generator))

    def sample_normalized(
        self, obs: Obs, noise: torch.Tensor | None = None, steps: int | None = None, stochastic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The chunk of :meth:`sample` in normalized action space [B, H, A], before clipping."""
        cond = self.encode(obs)
        x = self.initial_noise(cond.shape[0], generator) if noise is None else noise.to(cond)
        self._check_noise(x, cond.shape[0])
        grid = self.head.time_grid(steps or self.head.steps).to(cond.device)
        for i in range(len(grid) - 1):
            mean, std = self._head_at(i).transition(x, grid[i], grid[i + 1], cond, stochastic)
            x = mean + std * self._randn_like(x, generator) if stochastic else mean
        return x

    # ---- acting (the ActingPolicy contract) --------------------------------------------------------
    @property
    def default_steps(self) -> int:
        """The head's own sampling steps."""
        return self.head.steps

    @property
    def default_stochastic(self) -> bool:
        """Whether the head's default sampler is stochastic (DDPM) or deterministic (DDIM eta 0, flow ODE)."""
        return bool(self.head.default_stochastic)

    @property
    def device(self) -> torch.device:
        return self.action_norm.center.device

    def end_episodes(self, done: torch.Tensor) -> None:
        """A policy keeps no memory across chunks."""

    def export_spec(self, steps: int) -> ExportSpec:
        """What ``rlft export`` writes: ``sample(obs, noise, steps)``, the deterministic sampler at ``steps``
        (ValueError for a step count the head cannot sample with)."""
        self.head.time_grid(steps)
        chunk = Graph(lambda noise, obs: self.sample(obs, noise=noise, steps=steps), ("noise",))
        return ExportSpec("policy", self, chunk, (self.horizon, self.action_dim), self.horizon, self.act_steps)

    @torch.no_grad()
    def act(self, obs: Obs, generator: torch.Generator | None = None) -> torch.Tensor:
        """The chunk to execute [B, act_steps, A], with the head's own sampler and steps."""
        return self.sample(obs, stochastic=self.head.default_stochastic, generator=generator)[:, : self.act_steps]

    # ---- chain view --------------------------------------------------------------------------------
    def chain(
        self,
        obs: Obs,
        steps: int | None = None,
        noise: ChainNoise | None = None,
        generator: torch.Generator | None = None,
        init_noise: torch.Tensor | None = None,
    ) -> Chain:
        """Sample a chain of Gaussian transitions; ``noise`` gives each step's std (default: head std floored at 0.1)."""
        noise = noise or StdFloor(0.1)
        cond = self.encode(obs)
        x = self.initial_noise(cond.shape[0], generator) if init_noise is None else init_noise.to(cond)
        self._check_noise(x, cond.shape[0])
        grid = self.head.time_grid(steps or self.head.steps).to(cond.device)
        latents, means, stds = [x], [], []
        for i in range(len(grid) - 1):
            mean, std = self._gaussian_step(i, x, grid[i], grid[i + 1], cond, noise)
            x = mean + std * self._randn_like(mean, generator)
            latents.append(x)
            means.append(mean)
            stds.append(std)
        latents_t, means_t, stds_t = torch.stack(latents, 1), torch.stack(means, 1), torch.stack(stds, 1)
        log_probs = gaussian_log_prob(latents_t[:, 1:], means_t, stds_t).sum((2, 3))
        init_log_prob = gaussian_log_prob(latents_t[:, 0], torch.zeros_like(x), torch.ones_like(x)).sum((1, 2))
        return Chain(latents_t, grid, means_t, stds_t, log_probs, init_log_prob, self.to_actions(x))

    def _gaussian_step(
        self, i: int, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cond: torch.Tensor, noise: ChainNoise
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) [B, H, A] of transition ``i`` (t -> t_next): the head's step mean, the noise source's std."""
        mean, natural = self._head_at(i).transition(x, t, t_next, cond, stochastic=True)
        return mean, noise(x, t, t_next, cond, natural).expand_as(mean)

    def log_prob_chain(self, obs: Obs, chain: Chain, noise: ChainNoise | None = None, steps: Sequence[int] | None = None, reduce: bool = True) -> torch.Tensor:
        """Log-probs of the chain's transitions under the current parameters, on the chain's own grid.

        ``steps``: transition indices to score (default all); returns [B, len(steps)] or, without
        ``reduce``, element-wise [B, len(steps), H, A].
        """
        return self.transition_log_probs(obs, chain.latents, chain.grid, noise, steps, reduce)[0]

    def transition_log_probs(
        self,
        obs: Obs,
        latents: torch.Tensor,
        grid: torch.Tensor,
        noise: ChainNoise | None = None,
        steps: Sequence[int] | None = None,
        reduce: bool = True,
        start: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs, stds) of transitions ``latents[:, i] -> latents[:, i + 1]`` on ``grid`` [K+1].

        ``start``: the index of ``grid``'s first transition in the full sampling grid, when ``latents`` and
        ``grid`` are the tail of a chain (DPPO scores only its fine-tuned last steps).
        ``latents`` [B, K+1, H, A]; log-probs [B, n] (or [B, n, H, A] without ``reduce``) and the stds
        [B, n, H, A] used, for the n transition indices in ``steps`` (default all K).
        """
        noise = noise or StdFloor(0.1)
        cond = self.encode(obs)
        grid = grid.to(cond.device)
        log_probs, stds = [], []
        for i in range(latents.shape[1] - 1) if steps is None else steps:
            mean, std = self._gaussian_step(start + i, latents[:, i], grid[i], grid[i + 1], cond, noise)
            lp = gaussian_log_prob(latents[:, i + 1], mean, std)
            log_probs.append(lp.sum((1, 2)) if reduce else lp)
            stds.append(std)
        return torch.stack(log_probs, 1), torch.stack(stds, 1)

    # ---- architecture ------------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """What rebuilds this policy's architecture (weights and statistics live in its state dict);
        :mod:`rlft.runtime.checkpoint` stores both."""
        return {"policy": self.cfg, "obs_shapes": {k: list(s) for k, s in self.obs_shapes.items()}, "action_dim": self.action_dim}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "Policy":
        """An untrained policy of that architecture; placeholder statistics until weights are loaded."""
        obs_shapes = spec["obs_shapes"]
        dims = {k: int(np.prod(s)) for k, s in obs_shapes.items()} | {"action": int(spec["action_dim"])}
        stats = {k: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)} for k, d in dims.items()}
        return cls(spec["policy"], obs_shapes, spec["action_dim"], stats)


def policy_from_store(cfg: Mapping[str, Any], store: Any) -> Policy:
    """A policy for the observation keys ``cfg.obs_keys`` and the actions of an episode store."""
    shapes = store.keys
    for key in (*cfg["obs_keys"], "action"):
        if key not in shapes:
            raise ValueError(f"{store.path}: the policy needs key '{key}', the dataset has {', '.join(sorted(shapes))}")
    stats = {k: store.stats[k] for k in (*cfg["obs_keys"], "action") if k in store.stats}
    return Policy(cfg, {k: shapes[k] for k in cfg["obs_keys"]}, shapes["action"][0], stats)
