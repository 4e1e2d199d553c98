"""Observation encoders: a dict of (normalized) observation histories -> one condition vector [B, C].

Inputs are ``{key: [B, T, ...]}`` with T = the observation history length. State keys are [B, T, D]
float; image keys are [B, T, H, W, 3] uint8 (the layout robomimic/LIBERO data and MuJoCo renderers
use). Each camera has its own small CNN or ViT; features of all cameras and all state keys at all T
steps are concatenated.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rlft.policies import draws
from rlft.policies.backbones import Mish, _TransformerLayer


def is_image_shape(shape: Sequence[int]) -> bool:
    """Per-step shapes (H, W, 3) are images; everything else is a state vector."""
    return len(shape) == 3 and shape[-1] == 3


class StateEncoder(nn.Module):
    """Concatenate state keys over the history; optionally an MLP (``hidden`` widths, Mish)."""

    def __init__(self, obs_shapes: Mapping[str, Sequence[int]], obs_horizon: int, hidden: Sequence[int] = ()):
        super().__init__()
        self.keys = sorted(obs_shapes)
        dim = obs_horizon * sum(int(torch.tensor(obs_shapes[k]).prod()) for k in self.keys)
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(dim, width), Mish()]
            dim = width
        self.mlp = nn.Sequential(*layers)
        self.out_dim = dim

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(torch.cat([obs[k].flatten(1) for k in self.keys], dim=-1))


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ augmentation: pad by replication, crop back at a random integer offset per image. [N, C, H, W]."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    rows, total = draws.rows(n, images.device)
    dy, dx = draws.at(lambda m: tuple(torch.randint(0, 2 * pad + 1, (m, 1, 1), device=images.device) for _ in range(2)), rows, total)
    rows = (torch.arange(h, device=images.device).view(1, h, 1) + dy).expand(n, h, w)
    cols = (torch.arange(w, device=images.device).view(1, 1, w) + dx).expand(n, h, w)
    flat = padded.flatten(2)
    index = (rows * (w + 2 * pad) + cols).flatten(1)[:, None].expand(-1, images.shape[1], -1)
    return flat.gather(2, index).view_as(images)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.GroupNorm(8, c_out),
            Mish(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.GroupNorm(8, c_out),
        )
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        self.act = Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class ResNetCNN(nn.Module):
    """A small ResNet (GroupNorm, as Diffusion Policy uses instead of BatchNorm): [N, 3, H, W] -> [N, features]."""

    def __init__(self, features: int = 64, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.GroupNorm(8, widths[0]), Mish()]
        prev = widths[0]
        for i, width in enumerate(widths):
            layers.append(_BasicBlock(prev, width, 1 if i == 0 else 2))
            prev = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(prev, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ViT(nn.Module):
    """A small vision transformer: patches -> transformer layers -> class token -> [N, features]."""

    def __init__(self, image_hw: tuple[int, int], features: int = 64, patch: int = 8, dim: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        h, w = image_hw
        if h % patch or w % patch:
            raise ValueError(f"ViT patch size {patch} must divide the image size {h}x{w}")
        self.patchify = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 1 + (h // patch) * (w // patch), dim))
        self.layers = nn.Sequential(*[_TransformerLayer(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patchify(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos  # shape[0], not len(): traced, not constant
        return self.head(self.norm(self.layers(tokens)[:, 0]))


class ImageEncoder(nn.Module):
    """Cameras (one CNN or ViT each, random-shift augmentation in training) + state keys, over the history."""

    def __init__(self, obs_shapes: Mapping[str, Sequence[int]], obs_horizon: int, net: str = "resnet", features: int = 64, shift: int = 4):
        super().__init__()
        if net not in ("resnet", "vit"):
            raise ValueError(f"unknown image encoder net '{net}'; choose resnet or vit")
        self.cameras = sorted(k for k, s in obs_shapes.items() if is_image_shape(s))
        self.state_keys = sorted(k for k, s in obs_shapes.items() if not is_image_shape(s))
        if not self.cameras:
            raise ValueError("image encoder: no image observations (per-step shape H x W x 3) among " + ", ".join(sorted(obs_shapes)))
        self.shift = shift
        self.nets = nn.ModuleDict(
            {k: ResNetCNN(features) if net == "resnet" else ViT((int(obs_shapes[k][0]), int(obs_shapes[k][1])), features) for k in self.cameras}
        )
        state_dim = sum(int(torch.tensor(obs_shapes[k]).prod()) for k in self.state_keys)
        self.out_dim = obs_horizon * (features * len(self.cameras) + state_dim)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for k in self.cameras:
            img = obs[k]
            b, t = img.shape[:2]
            x = img.reshape(b * t, *img.shape[2:]).permute(0, 3, 1, 2).float() / 255.0
            if self.training and self.shift:
                x = random_shift(x, self.shift)
            parts.append(self.nets[k](x * 2 - 1).view(b, t, -1))
        parts += [obs[k].flatten(2) for k in self.state_keys]
        return torch.cat(parts, dim=-1).flatten(1)


def build_encoder(kind: str, obs_shapes: Mapping[str, Sequence[int]], obs_horizon: int, **kwargs) -> nn.Module:
    """``state`` or ``image``; kwargs are the encoder's own options from the policy config."""
    if kind == "state":
        return StateEncoder(obs_shapes, obs_horizon, **kwargs)
    if kind == "image":
        return ImageEncoder(obs_shapes, obs_horizon, **kwargs)
    raise ValueError(f"unknown encoder type '{kind}'; choose state or image")
