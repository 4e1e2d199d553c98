"""robomimic / LIBERO HDF5: ``data/demo_N/{obs/<key>, actions, rewards, dones, states}``.

Demos are read in numeric order (demo_2 before demo_10). ``dones`` becomes ``terminated``; a demo whose
last step is not done ends ``truncated``. ``env_args`` (JSON attribute of ``data``) is kept in the
metadata; ``states`` (simulator states, for replay) is kept when present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rlft.datasets.readers.base import Imported, check_lengths, concat_episodes, open_hdf5, read_array
from rlft.errors import DatasetError


def read_robomimic(path: Path) -> Imported:
    episodes = []
    with open_hdf5(path) as f:
        if "data" not in f:
            raise DatasetError(f"{path}: missing group 'data'; a robomimic file holds data/demo_N")
        data = f["data"]
        names = sorted((k for k in data if k.startswith("demo_")), key=lambda k: int(k.split("_")[1]))
        if not names:
            raise DatasetError(f"{path}: data/ holds no demo_N groups")
        env_args: dict[str, Any] = {}
        if "env_args" in data.attrs:
            raw = data.attrs["env_args"]
            try:
                env_args = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            except json.JSONDecodeError:
                raise DatasetError(f"{path}: data.attrs['env_args'] is not valid JSON") from None
        for name in names:
            g = data[name]
            actions = read_array(path, g, "actions")
            n = len(actions)
            if "obs" not in g:
                raise DatasetError(f"{path}: missing group 'obs' in data/{name}")
            steps: dict[str, np.ndarray] = {f"obs/{k}": read_array(path, g["obs"], k) for k in sorted(g["obs"])}
            steps["action"] = actions.astype(np.float32)
            steps["reward"] = read_array(path, g, "rewards").astype(np.float32) if "rewards" in g else np.zeros(n, np.float32)
            dones = read_array(path, g, "dones").astype(bool) if "dones" in g else np.zeros(n, bool)
            steps["terminated"] = dones
            steps["truncated"] = np.zeros(n, bool)
            steps["truncated"][-1] = not dones[-1]
            if "states" in g:
                steps["states"] = read_array(path, g, "states")
            check_lengths(path, steps, n, where=f"data/{name}/")
            episodes.append(steps)
    data_arrays, ends = concat_episodes(path, episodes)
    for k, v in list(data_arrays.items()):
        if k.startswith("obs/") and np.issubdtype(v.dtype, np.floating):
            data_arrays[k] = v.astype(np.float32)
    meta: dict[str, Any] = {"source": f"robomimic:{path.name}", "env_args": env_args}
    if env_args.get("env_name"):
        meta["env_id"] = env_args["env_name"]
    return Imported(data_arrays, ends, meta)
