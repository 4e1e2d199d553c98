"""Batched observations: one tensor [N, ...] (state tasks) or a dict of them (image tasks: state + cameras).

Every wrapper and the rollout handle both through these few functions, so a dict observation travels the same
way a flat one does: env -> history -> chunk -> rollout buffer. Image keys stay uint8; state keys are float.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch

Obs = torch.Tensor | dict[str, torch.Tensor]


def obs_map(fn: Callable[..., torch.Tensor], obs: Obs, *others: Obs) -> Obs:
    """``fn`` applied to the tensor, or key by key to dicts (``others`` have the same keys)."""
    if isinstance(obs, Mapping):
        return {k: fn(v, *(o[k] for o in others)) for k, v in obs.items()}  # type: ignore[index]
    return fn(obs, *others)


def obs_where(mask: torch.Tensor, a: Obs, b: Obs) -> Obs:
    """Rows of ``a`` where ``mask`` [N] is true, else of ``b``."""
    return obs_map(lambda x, y: torch.where(mask.view(-1, *[1] * (x.dim() - 1)), x, y), a, b)


def obs_stack(items: Sequence[Obs], dim: int = 0) -> Obs:
    """A list of observations -> one, stacked along ``dim`` (key by key)."""
    if isinstance(items[0], Mapping):
        return {k: torch.stack([o[k] for o in items], dim) for k in items[0]}  # type: ignore[index]
    return torch.stack(items, dim)  # type: ignore[arg-type]


def obs_device(obs: Obs) -> torch.device:
    """The device the observation (its first key) lives on."""
    return (next(iter(obs.values())) if isinstance(obs, Mapping) else obs).device


def obs_rows(obs: Obs, index: Any) -> Obs:
    """``obs[index]`` key by key."""
    return obs_map(lambda x: x[index], obs)


def obs_shapes(space: gym.Space) -> dict[str, tuple[int, ...]]:
    """Per-step observation shapes by key: a Box is the single key ``obs``; a Dict space its Box children."""
    if isinstance(space, gym.spaces.Dict):
        return {k: tuple(s.shape) for k, s in space.spaces.items()}
    return {"obs": tuple(space.shape)}


def is_image_space(space: gym.Space) -> bool:
    """H x W x 3 uint8 boxes are camera images."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3


def to_tensor(array: Any, device: torch.device, dtype: torch.dtype) -> Obs:
    """numpy (or a dict of numpy) -> a copy on ``device``: uint8 arrays (images) stay uint8, the rest in ``dtype``."""
    if isinstance(array, Mapping):
        return {k: to_tensor(v, device, dtype) for k, v in array.items()}  # type: ignore[misc]
    array = np.asarray(array)
    return torch.from_numpy(array).to(device=device, dtype=torch.uint8 if array.dtype == np.uint8 else dtype, copy=True)


def to_numpy(obs: Obs) -> Any:
    """A tensor (or dict of tensors) -> numpy on the CPU."""
    if isinstance(obs, Mapping):
        return {k: v.cpu().numpy() for k, v in obs.items()}
    return obs.cpu().numpy()


def concat_numpy(parts: Sequence[Any]) -> Any:
    """Row blocks (numpy, or dicts of numpy) -> one, concatenated along the first axis."""
    if isinstance(parts[0], Mapping):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)
