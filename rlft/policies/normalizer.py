"""Normalizers built from the per-key statistics every episode store carries."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn


class Normalizer(nn.Module):
    """Maps data to a normalized space and back, per dimension.

    ``mode="limits"`` maps [min, max] to [-1, 1] (DPPO and Diffusion Policy; right for actions that a
    sampler clips to [-1, 1]); ``mode="gaussian"`` maps to zero mean and unit std. Dimensions with
    (almost) no spread are left centred, not divided by ~0.
    """

    def __init__(self, stats: Mapping[str, np.ndarray], mode: str = "limits", eps: float = 1e-6):
        super().__init__()
        if mode == "limits":
            lo, hi = np.asarray(stats["min"], np.float32), np.asarray(stats["max"], np.float32)
            center, scale = (hi + lo) / 2, (hi - lo) / 2
        elif mode == "gaussian":
            center, scale = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
        else:
            raise ValueError(f"unknown normalizer mode '{mode}'; choose limits or gaussian")
        scale = np.where(scale < eps, 1.0, scale).astype(np.float32)
        self.mode = mode
        self.register_buffer("center", torch.from_numpy(center))
        self.register_buffer("scale", torch.from_numpy(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., dim] raw -> normalized."""
        return (x - self.center) / self.scale

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        """[..., dim] normalized -> raw."""
        return y * self.scale + self.center
