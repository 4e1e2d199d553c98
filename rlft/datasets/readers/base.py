"""Pieces shared by the readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from rlft.errors import DatasetError


@dataclass
class Imported:
    """A dataset read into memory: ``data[key]`` is [total_steps, ...]; ``episode_ends`` is cumulative."""

    data: dict[str, np.ndarray]
    episode_ends: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def open_hdf5(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: cannot be opened as HDF5 ({str(e).splitlines()[0]}); the file is truncated or not HDF5") from None


def read_array(path: Path, node: Any, name: str) -> np.ndarray:
    """``node[name][()]`` with a one-line error when it is missing or unreadable."""
    if name not in node:
        where = node.name if hasattr(node, "name") else "/"
        raise DatasetError(f"{path}: missing key '{name}' in {where}")
    try:
        return np.asarray(node[name][()])
    except Exception as e:
        raise DatasetError(f"{path}: '{node[name].name}' cannot be read ({type(e).__name__}); the file is truncated or damaged") from None


def check_lengths(path: Path, arrays: dict[str, np.ndarray], expected: int, where: str = "") -> None:
    for key, arr in arrays.items():
        if len(arr) != expected:
            raise DatasetError(f"{path}: {where}'{key}' has {len(arr)} steps, expected {expected}")


def concat_episodes(path: Path, episodes: Iterable[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Concatenate per-episode dicts (same keys each) into (data, episode_ends)."""
    episodes = list(episodes)
    if not episodes:
        raise DatasetError(f"{path}: holds no episodes")
    keys = set(episodes[0])
    for i, ep in enumerate(episodes):
        if set(ep) != keys:
            raise DatasetError(f"{path}: episode {i} has keys {sorted(ep)}, the first has {sorted(keys)}")
    data = {k: np.concatenate([ep[k] for ep in episodes]) for k in keys}
    ends = np.cumsum([len(ep["action"]) for ep in episodes])
    return data, ends


def env_from_name(text: str) -> str | None:
    """A locomotion short name at the start of ``text`` (``hopper_medium-v2`` -> ``hopper``)."""
    from rlft.envs.registry import LOCOMOTION

    low = text.lower()
    for name in sorted(LOCOMOTION, key=len, reverse=True):
        if low.startswith(name):
            return name
    return None
