"""Denoising backbones. Every backbone has one signature, ``forward(x, t, cond) -> same shape as x``:

* ``x``    [B, H, A]  noisy action chunk (H steps, A action dims)
* ``t``    [B, n_times] time inputs in [0, 1] (one for diffusion and rectified flow; two for
  shortcut (t, step size) and mean flow (t, t - r)); a [B] tensor is read as one time input
* ``cond`` [B, C]     the observation encoder's output

Times are embedded with sinusoidal features of ``1000 * t``, so a 20-step DDPM grid and a continuous
flow time use the same embedding.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Mish(nn.Module):
    """Mish, x * tanh(softplus(x)), composed of elementwise ops: the same values as ``nn.Mish`` (to float
    rounding), about twice as fast forward and backward as PyTorch's fused CPU kernel on 256-wide layers,
    and differentiable in forward mode too (OFQL's JVP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(nn.functional.softplus(x))


class SinusoidalEmbedding(nn.Module):
    """[B] -> [B, dim] sin/cos features at geometrically spaced frequencies."""

    def __init__(self, dim: int, scale: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even (got {dim})")
        freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, dtype=torch.float32) / max(dim // 2 - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = (self.scale * t)[..., None] * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimeEmbedding(nn.Module):
    """[B, n_times] -> [B, out_dim]: one sinusoidal embedding per time input, concatenated, then an MLP."""

    def __init__(self, n_times: int, dim: int, out_dim: int, scale: float = 1000.0):
        super().__init__()
        self.n_times = n_times
        self.sin = SinusoidalEmbedding(dim, scale)
        self.mlp = nn.Sequential(nn.Linear(n_times * dim, 2 * dim), Mish(), nn.Linear(2 * dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 1:
            t = t[:, None]
        if t.shape[-1] != self.n_times:
            raise ValueError(f"backbone takes {self.n_times} time input(s) per sample, got t of shape {tuple(t.shape)}")
        return self.mlp(self.sin(t).flatten(1))


def _check_x(x: torch.Tensor, horizon: int, action_dim: int) -> None:
    if x.dim() != 3 or x.shape[1:] != (horizon, action_dim):
        raise ValueError(f"backbone expects x of shape [B, {horizon}, {action_dim}], got {tuple(x.shape)}")


class ResidualBlock(nn.Module):
    """Two pre-activation linear layers with a skip connection (dropout on the block's input if asked)."""

    def __init__(self, width: int, layer_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        norm = (lambda: nn.LayerNorm(width)) if layer_norm else nn.Identity
        drop = [nn.Dropout(dropout)] if dropout else []
        self.body = nn.Sequential(*drop, norm(), Mish(), nn.Linear(width, width), norm(), Mish(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualMLP(nn.Module):
    """DPPO's denoiser shape: [flattened chunk, time embedding, cond] -> residual MLP -> chunk.

    ``depth`` counts hidden layers of width ``hidden``: one input layer, then residual blocks of two
    layers each (depth 3 = input layer + one block, DPPO's 512-512-512). ``residual=False`` makes it a
    plain Mish MLP of ``depth`` hidden layers (any depth; DQL's 3x256 noise net). ``dropout``: on the input
    of each residual block while training (FISOR's LN-ResNet actor: layer norm, 3 blocks, dropout 0.1).
    """

    def __init__(
        self,
        action_dim: int,
        horizon: int,
        cond_dim: int,
        n_times: int = 1,
        hidden: int = 512,
        depth: int = 3,
        time_dim: int = 16,
        layer_norm: bool = False,
        time_scale: float = 1000.0,
        residual: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if depth < 1 or (residual and (depth - 1) % 2):
            raise ValueError(f"ResidualMLP depth must be odd (1 input layer + 2 per residual block), got {depth}")
        if not 0.0 <= dropout < 1.0 or (dropout and not residual):
            raise ValueError(f"ResidualMLP dropout must be in [0, 1) and needs residual blocks, got {dropout} (residual={residual})")
        self.action_dim, self.horizon = action_dim, horizon
        self.time = TimeEmbedding(n_times, time_dim, time_dim, time_scale)
        self.inp = nn.Linear(horizon * action_dim + time_dim + cond_dim, hidden)
        if residual:
            self.blocks = nn.Sequential(*[ResidualBlock(hidden, layer_norm, dropout) for _ in range((depth - 1) // 2)])
        else:
            norm = (lambda: nn.LayerNorm(hidden)) if layer_norm else nn.Identity
            self.blocks = nn.Sequential(*[nn.Sequential(norm(), Mish(), nn.Linear(hidden, hidden)) for _ in range(depth - 1)])
        self.out = nn.Sequential(Mish(), nn.Linear(hidden, horizon * action_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.horizon, self.action_dim)
        h = self.inp(torch.cat([x.flatten(1), self.time(t), cond], dim=-1))
        return self.out(self.blocks(h)).view_as(x)


class _Conv1dBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int):
        super().__init__(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(min(groups, c_out), c_out), Mish())


class _FiLMResBlock(nn.Module):
    """Two conv blocks; the condition sets a per-channel scale and bias after the first (FiLM)."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int):
        super().__init__()
        self.conv1 = _Conv1dBlock(c_in, c_out, kernel, groups)
        self.conv2 = _Conv1dBlock(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, bias = self.film(cond)[..., None].chunk(2, dim=1)
        return self.conv2(self.conv1(x) * (1 + scale) + bias) + self.skip(x)


class UNet1D(nn.Module):
    """Diffusion Policy's temporal UNet over the chunk: channels = action dims, length = horizon.

    Each level halves the length, so ``horizon`` must be divisible by ``2 ** (len(channels) - 1)``.
    Time embedding and cond are joined and applied to every residual block by FiLM.
    """

    def __init__(
        self,
        action_dim: int,
        horizon: int,
        cond_dim: int,
        n_times: int = 1,
        channels: tuple[int, ...] = (64, 128, 256),
        kernel: int = 5,
        groups: int = 8,
        time_dim: int = 64,
        time_scale: float = 1000.0,
    ):
        super().__init__()
        factor = 2 ** (len(channels) - 1)
        if horizon % factor:
            raise ValueError(f"UNet1D with {len(channels)} levels needs a horizon divisible by {factor} (got {horizon}); use fewer channels or another horizon")
        self.action_dim, self.horizon = action_dim, horizon
        self.time = TimeEmbedding(n_times, time_dim, time_dim, time_scale)
        c = time_dim + cond_dim
        self.down = nn.ModuleList()
        prev = action_dim
        for i, ch in enumerate(channels):
            last = i == len(channels) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        _FiLMResBlock(prev, ch, c, kernel, groups),
                        _FiLMResBlock(ch, ch, c, kernel, groups),
                        nn.Identity() if last else nn.Conv1d(ch, ch, 3, 2, 1),
                    ]
                )
            )
            prev = ch
        self.mid = nn.ModuleList([_FiLMResBlock(prev, prev, c, kernel, groups), _FiLMResBlock(prev, prev, c, kernel, groups)])
        self.up = nn.ModuleList()
        for ch_skip, ch in zip(reversed(channels[1:]), reversed(channels[:-1])):
            self.up.append(
                nn.ModuleList(
                    [_FiLMResBlock(2 * ch_skip, ch, c, kernel, groups), _FiLMResBlock(ch, ch, c, kernel, groups), nn.ConvTranspose1d(ch, ch, 4, 2, 1)]
                )
            )
        self.final = nn.Sequential(_Conv1dBlock(channels[0], channels[0], kernel, groups), nn.Conv1d(channels[0], action_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.horizon, self.action_dim)
        c = torch.cat([self.time(t), cond], dim=-1)
        h = x.transpose(1, 2)
        skips = []  # outputs of every level but the first (Diffusion Policy's layout)
        for level, (block1, block2, downsample) in enumerate(self.down):
            h = block2(block1(h, c), c)
            if level:
                skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = block(h, c)
        for block1, block2, upsample in self.up:
            h = block2(block1(torch.cat([h, skips.pop()], dim=1), c), c)
            h = upsample(h)
        return self.final(h).transpose(1, 2)


class _Attention(nn.Module):
    """Multi-head self-attention written out (forward-mode AD, needed by mean flow, works through it)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        w = (q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)).softmax(-1)
        return self.proj((w @ v).transpose(1, 2).reshape(b, n, d))


class _TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A small pre-norm transformer: tokens = [time+cond token, one token per chunk step]."""

    def __init__(
        self,
        action_dim: int,
        horizon: int,
        cond_dim: int,
        n_times: int = 1,
        dim: int = 128,
        layers: int = 4,
        heads: int = 4,
        time_dim: int = 64,
        time_scale: float = 1000.0,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer dim ({dim}) must be divisible by heads ({heads})")
        self.action_dim, self.horizon = action_dim, horizon
        self.time = TimeEmbedding(n_times, time_dim, dim, time_scale)
        self.cond = nn.Linear(cond_dim, dim)
        self.inp = nn.Linear(action_dim, dim)
        self.pos = nn.Parameter(torch.zeros(1, horizon + 1, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.layers = nn.Sequential(*[_TransformerLayer(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, action_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.horizon, self.action_dim)
        ctx = (self.time(t) + self.cond(cond))[:, None]
        h = self.layers(torch.cat([ctx, self.inp(x)], dim=1) + self.pos)
        return self.out(self.norm(h[:, 1:]))


BACKBONES = {"mlp": ResidualMLP, "unet": UNet1D, "transformer": Transformer}
