"""Training-time random draws that a data-parallel run splits by rows of the global batch.

Losses and augmentations draw their per-sample randomness (noise, times, crop offsets) through :func:`at`.
Inside :func:`shard` (``rank`` of ``world`` ranks, each holding ``n`` rows of a global batch of
``world * n``), a draw is made for the whole global batch and this rank's rows are returned: W ranks
together use exactly the numbers one process draws for the whole batch, and every rank's torch RNG
advances the same way, so one saved RNG state resumes all of them. Outside it (one process), the draws
are the plain torch draws they replace.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator, TypeVar

import torch

_SHARD: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("rlft_draw_shard", default=(0, 1))
Drawn = TypeVar("Drawn", torch.Tensor, tuple[torch.Tensor, ...])


@contextlib.contextmanager
def shard(rank: int, world: int) -> Iterator[None]:
    """Draws inside are this rank's rows of the global batch's (rank in 0..world-1)."""
    token = _SHARD.set((int(rank), int(world)))
    try:
        yield
    finally:
        _SHARD.reset(token)


def rows(n: int, device: torch.device | str) -> tuple[torch.Tensor | None, int]:
    """(global row indices of this rank's ``n`` rows [n], global batch size); indices None when not sharded."""
    rank, world = _SHARD.get()
    if world == 1:
        return None, n
    return rank * n + torch.arange(n, device=device), world * n


def at(draw: Callable[[int], Drawn], positions: torch.Tensor | None, population: int) -> Drawn:
    """``draw(population)`` (a tensor, or a tuple of tensors, with ``population`` rows) at row ``positions``.

    ``positions`` None: all of them (one process). Sub-populations (say the bootstrap rows of a shortcut
    batch) pass their own positions within their own global population.
    """
    out = draw(population)
    if positions is None:
        return out
    if isinstance(out, tuple):
        return tuple(o[positions] for o in out)  # type: ignore[return-value]
    return out[positions]


def randn(n: int, shape: tuple[int, ...], device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal noise [n, *shape] (this rank's rows)."""
    positions, total = rows(n, device)
    return at(lambda m: torch.randn((m, *shape), device=device, dtype=dtype), positions, total)
