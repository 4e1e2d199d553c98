"""D4RL HDF5: flat arrays ``observations, actions, rewards, terminals, timeouts`` (+ ``infos/*``).

Episodes end where ``terminals | timeouts``; a last episode cut off by the end of the file is kept and
marked ``truncated``. ``next_observations`` and ``infos/*`` are kept under their own names. For the
locomotion tasks (file name starting ``hopper``, ``walker2d``, ...) the published D4RL reference returns
are stored as ``ref_returns``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rlft.datasets.readers.base import Imported, check_lengths, env_from_name, open_hdf5, read_array
from rlft.envs.registry import env_config
from rlft.errors import DatasetError

REQUIRED = ("observations", "actions", "rewards", "terminals", "timeouts")


def read_d4rl(path: Path) -> Imported:
    with open_hdf5(path) as f:
        missing = [k for k in REQUIRED if k not in f]
        if missing:
            raise DatasetError(f"{path}: missing key '{missing[0]}'; a D4RL file has {', '.join(REQUIRED)}")
        raw = {k: read_array(path, f, k) for k in REQUIRED}
        n = len(raw["observations"])
        check_lengths(path, raw, n)
        extra: dict[str, np.ndarray] = {}
        if "next_observations" in f:
            extra["next_observations"] = read_array(path, f, "next_observations")
        if "infos" in f:
            for name in f["infos"]:
                arr = read_array(path, f["infos"], name)
                if arr.ndim >= 1 and len(arr) == n:
                    extra[f"infos/{name}"] = arr
        check_lengths(path, extra, n)
        # D4RL keeps provenance as scalar datasets under metadata/ (algorithm, iteration, policy/...)
        provenance: dict[str, object] = {}

        def keep(name: str, node: object) -> None:
            value = _scalar(node)
            if value is not None:
                provenance[name] = value

        if "metadata" in f:
            f["metadata"].visititems(keep)
    terminated = raw["terminals"].astype(bool).reshape(n)
    truncated = raw["timeouts"].astype(bool).reshape(n) & ~terminated
    if n == 0:
        raise DatasetError(f"{path}: holds no steps")
    ends_mask = terminated | truncated
    ends_mask[-1] = True
    truncated[-1] = truncated[-1] or not terminated[-1]
    data = {
        "obs": raw["observations"].astype(np.float32),
        "action": raw["actions"].astype(np.float32),
        "reward": raw["rewards"].astype(np.float32).reshape(n),
        "terminated": terminated,
        "truncated": truncated,
        **extra,
    }
    meta: dict = {"source": f"d4rl:{path.name}", "d4rl_metadata": provenance}
    env = env_from_name(path.stem)
    if env is not None:
        ref = env_config(env).d4rl_ref
        meta.update(env=env, ref_returns={"random": float(ref.random), "expert": float(ref.expert)}, ref_source="D4RL published")
    return Imported(data, np.flatnonzero(ends_mask) + 1, meta)


def _scalar(node: object) -> str | float | int | bool | None:
    """A JSON-ready value for a scalar HDF5 dataset, None for groups and arrays."""
    import h5py

    if not isinstance(node, h5py.Dataset) or node.shape != ():
        return None
    value = node[()]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value.item() if isinstance(value, np.generic) else value
