"""Exponential moving average of a model's weights (the weights evaluated and shipped)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """``model`` holds the averaged copy; buffers (normalizer statistics) are copied as they are.

    ``update(source)`` every ``every`` steps with ``decay``; before step ``start`` the copy simply
    follows the source (DPPO starts averaging after a warm-up).
    """

    def __init__(self, source: nn.Module, decay: float = 0.995, every: int = 10, start: int = 0):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1) (got {decay})")
        self.model = copy.deepcopy(source).requires_grad_(False).eval()
        self.decay, self.every, self.start = decay, every, start

    @torch.no_grad()
    def update(self, source: nn.Module, step: int) -> None:
        if step % self.every:
            return
        decay = self.decay if step >= self.start else 0.0
        mine, theirs = list(self.model.parameters()), list(source.parameters())
        torch._foreach_lerp_(mine, theirs, 1.0 - decay)
        for b_mine, b_theirs in zip(self.model.buffers(), source.buffers()):
            b_mine.copy_(b_theirs)
