"""The SAC experts that record demonstrations, stored as safetensors + JSON (no pickle), as an ActingPolicy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlft.errors import CheckpointError
from rlft.io import atomic_write, atomic_write_json
from rlft.paths import EXPERTS_DIR, is_bare_name
from rlft.policies.acting import Obs


class ExpertPolicy(nn.Module):
    """A stable-baselines3 SAC actor acting one step at a time: obs_horizon 1, act_steps 1, horizon 1.

    ``sample(obs [B, 1, obs_dim]) -> actions [B, 1, act_dim]`` in the action space's units: tanh of the
    Gaussian's mean (``stochastic=False``, the default for evaluation) or of a sample from it (SAC's
    sampled actions, what datasets record), drawn with ``generator`` when one is given.
    """

    obs_horizon, act_steps, horizon = 1, 1, 1
    default_steps = None
    default_stochastic = False

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box, net_arch: list[int], info: dict[str, Any] | None = None):
        from stable_baselines3.sac.policies import SACPolicy

        super().__init__()
        self.net_arch = list(net_arch)
        self.info = dict(info or {})
        self.observation_space, self.action_space = observation_space, action_space
        self.actor = SACPolicy(observation_space, action_space, lambda _: 0.0, net_arch=self.net_arch).actor
        self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))
        self.eval()

    @classmethod
    def from_sb3(cls, model: Any, info: dict[str, Any] | None = None) -> "ExpertPolicy":
        """A copy of an SB3 SAC model's actor."""
        expert = cls(model.observation_space, model.action_space, model.policy.net_args["net_arch"], info)
        expert.actor.load_state_dict(model.policy.actor.state_dict())
        return expert

    @property
    def device(self) -> torch.device:
        return self.low.device

    def end_episodes(self, done: torch.Tensor) -> None:
        """No memory across steps."""

    @torch.no_grad()
    def sample(self, obs: Obs, steps: int | None = None, stochastic: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """obs [B, 1, obs_dim] (or ``{key: [B, 1, obs_dim]}`` with one key) -> actions [B, 1, act_dim]; ``steps`` is unused."""
        if not isinstance(obs, torch.Tensor):
            (obs,) = obs.values()
        mean, log_std, _ = self.actor.get_action_dist_params(obs[:, -1].float())
        if stochastic:  # SB3's squashed Gaussian: tanh(mean + std * N(0, I))
            mean = mean + log_std.exp() * torch.randn(mean.shape, generator=generator, device=mean.device)
        return (self.low + (torch.tanh(mean) + 1.0) * 0.5 * (self.high - self.low)).unsqueeze(1)

    def save(self, path: str | Path) -> None:
        """Write ``<path>.safetensors`` (the actor's weights) and ``<path>.json`` (spaces, architecture, info)."""
        from safetensors.torch import save_file

        path = Path(path)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.actor.state_dict().items()}
        atomic_write(path.with_suffix(".safetensors"), lambda p: save_file(weights, str(p)))
        obs_space, act_space = self.observation_space, self.action_space
        atomic_write_json(
            path.with_suffix(".json"),
            {
                "algo": "sac",
                "net_arch": self.net_arch,
                "info": self.info,
                "obs_low": obs_space.low.tolist(),
                "obs_high": obs_space.high.tolist(),
                "act_low": act_space.low.tolist(),
                "act_high": act_space.high.tolist(),
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> "ExpertPolicy":
        """``<path>.json`` + ``<path>.safetensors``, or the name of a shipped expert (``hopper-v5-expert``)."""
        from safetensors.torch import load_file

        path = Path(path)
        if not path.with_suffix(".json").exists() and is_bare_name(path) and (EXPERTS_DIR / f"{path.name}.json").exists():
            path = EXPERTS_DIR / path.name
        meta_path, weights_path = path.with_suffix(".json"), path.with_suffix(".safetensors")
        for p in (meta_path, weights_path):
            if not p.exists():
                shipped = ", ".join(sorted(f.stem for f in EXPERTS_DIR.glob("*.json"))) or "none"
                raise FileNotFoundError(f"{p}: expert file missing; an expert is <prefix>.json + <prefix>.safetensors, or a shipped one: {shipped}")
        box = lambda lo, hi: gym.spaces.Box(np.asarray(lo, np.float32), np.asarray(hi, np.float32), dtype=np.float32)  # noqa: E731
        try:
            meta = json.loads(meta_path.read_text())
            expert = cls(box(meta["obs_low"], meta["obs_high"]), box(meta["act_low"], meta["act_high"]), meta["net_arch"], meta["info"])
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{meta_path}: not an rlft expert description ({type(e).__name__}: {e}); write experts with ExpertPolicy.save") from None
        try:
            expert.actor.load_state_dict(load_file(str(weights_path)))
        except Exception as e:  # safetensors' own errors for a damaged file, torch's for other shapes
            raise CheckpointError(f"{weights_path}: unreadable or not the weights {meta_path.name} describes ({str(e).splitlines()[0]})") from None
        return expert
