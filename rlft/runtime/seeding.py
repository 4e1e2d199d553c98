"""Seeding and capture/restore of every random state a run uses (for exact resume)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy's global RNG and torch; return a fresh numpy Generator for the caller."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def capture_rng(generators: dict[str, np.random.Generator] | None = None) -> tuple[dict[str, Any], torch.Tensor]:
    """JSON-ready python/numpy states (plus named Generators) and the torch CPU RNG state tensor."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy_global": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "generators": {name: g.bit_generator.state for name, g in (generators or {}).items()},
    }
    return state, torch.get_rng_state()


def restore_rng(state: dict[str, Any], torch_state: torch.Tensor, generators: dict[str, np.random.Generator] | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    for name, g in (generators or {}).items():
        g.bit_generator.state = state["generators"][name]
    torch.set_rng_state(torch_state)


def set_threads(n: int) -> None:
    """Use exactly ``n`` torch threads (1 is much faster than 2 on a 2-core machine whose other core is busy)."""
    torch.set_num_threads(max(1, int(n)))
