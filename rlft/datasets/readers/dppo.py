"""DPPO / ReinFlow npz: ``states [T, obs], actions [T, act], traj_lengths [E]`` (+ ``images``, ``rewards``).

The ``normalization.npz`` that DPPO keeps beside the data (obs/action min and max) is stored in the
metadata when present.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from rlft.datasets.readers.base import Imported, check_lengths
from rlft.errors import DatasetError

RENAME = {"states": "obs", "actions": "action", "rewards": "reward", "images": "obs/image", "terminals": "terminated"}


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DatasetError(f"{path}: cannot be read as npz ({type(e).__name__}); the file is truncated or not npz") from None


def read_dppo_npz(path: Path) -> Imported:
    raw = _load_npz(path)
    for key in ("states", "actions", "traj_lengths"):
        if key not in raw:
            raise DatasetError(f"{path}: missing key '{key}'; a DPPO npz has states, actions, traj_lengths")
    lengths = raw.pop("traj_lengths").astype(np.int64).reshape(-1)
    if np.any(lengths <= 0):
        raise DatasetError(f"{path}: traj_lengths holds a non-positive length")
    total = int(lengths.sum())
    data = {RENAME.get(k, k): v for k, v in raw.items() if v.ndim >= 1}
    if len(data["obs"]) != total:
        raise DatasetError(f"{path}: 'states' has {len(data['obs'])} steps but traj_lengths sums to {total}")
    check_lengths(path, data, total)
    for k in ("obs", "action", "reward"):
        if k in data:
            data[k] = data[k].astype(np.float32)
    ends = np.cumsum(lengths)
    data.setdefault("terminated", np.zeros(total, bool))
    data["truncated"] = np.zeros(total, bool)
    data["truncated"][ends - 1] = ~data["terminated"].astype(bool)[ends - 1]
    meta: dict[str, Any] = {"source": f"dppo:{path.name}"}
    norm = path.parent / "normalization.npz"
    if norm.is_file():
        meta["dppo_normalization"] = {k: v.tolist() for k, v in _load_npz(norm).items()}
    return Imported(data, ends, meta)
