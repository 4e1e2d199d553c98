"""Minari datasets on disk: ``<root>/<dataset_id>/data/{metadata.json, main_data.hdf5}``.

One HDF5 group per episode (``episode_<id>``) with ``observations`` (N+1 steps, or a group of them for
dict spaces), ``actions``, ``rewards``, ``terminations``, ``truncations``. The extra final observation
of each episode is dropped (the store keeps one observation per action). Only the HDF5 data format is
read; an Arrow-format dataset gives an error saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rlft.datasets.readers.base import Imported, check_lengths, concat_episodes, env_from_name, open_hdf5, read_array
from rlft.errors import DatasetError


def _locate(path: Path) -> tuple[Path, Path]:
    """(metadata.json, main_data.hdf5) from a dataset folder, its data/ folder or the HDF5 file itself."""
    for folder in (path, path / "data", path.parent):
        if (folder / "metadata.json").is_file():
            meta, h5 = folder / "metadata.json", folder / "main_data.hdf5"
            if not h5.is_file():
                raise DatasetError(f"{folder}: metadata.json found but main_data.hdf5 is missing (only Minari's HDF5 format is read)")
            return meta, h5
    raise DatasetError(f"{path}: not a Minari dataset (expected <dataset>/data/metadata.json and main_data.hdf5)")


def _observations(path: Path, group: Any, key: str) -> dict[str, np.ndarray]:
    """Flatten a (possibly nested dict) observation node into ``obs`` or ``obs/<name>`` arrays."""
    import h5py

    node = group[key]
    if isinstance(node, h5py.Dataset):
        return {"obs": read_array(path, group, key)}
    out: dict[str, np.ndarray] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            out[f"obs/{name}"] = read_array(path, node, name)

    node.visititems(visit)
    return out


def read_minari(path: Path) -> Imported:
    meta_path, h5_path = _locate(path)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{meta_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if meta.get("data_format", "hdf5") != "hdf5":
        raise DatasetError(f"{meta_path}: data_format '{meta['data_format']}' is not read by rlft; recreate the dataset with Minari's hdf5 format")
    episodes = []
    with open_hdf5(h5_path) as f:
        names = sorted((k for k in f if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
        if not names:
            raise DatasetError(f"{h5_path}: holds no episode_<id> groups")
        for name in names:
            g = f[name]
            actions = read_array(h5_path, g, "actions")
            n = len(actions)
            obs = _observations(h5_path, g, "observations")
            check_lengths(h5_path, obs, n + 1, where=f"{name}/observations ")
            steps = {
                "action": actions.astype(np.float32),
                "reward": read_array(h5_path, g, "rewards").astype(np.float32),
                "terminated": read_array(h5_path, g, "terminations").astype(bool),
                "truncated": read_array(h5_path, g, "truncations").astype(bool),
            }
            check_lengths(h5_path, steps, n, where=f"{name}/")
            steps.update({k: (v[:-1].astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v[:-1]) for k, v in obs.items()})
            episodes.append(steps)
    if meta.get("total_episodes") not in (None, len(episodes)):
        raise DatasetError(f"{h5_path}: {len(episodes)} episodes but metadata.json says {meta['total_episodes']}; the dataset is incomplete")
    data, ends = concat_episodes(h5_path, episodes)
    env_spec = meta.get("env_spec")
    spec = json.loads(env_spec) if isinstance(env_spec, str) else (env_spec or {})
    out_meta: dict[str, Any] = {"source": f"minari:{meta.get('dataset_id', path.name)}"}
    if spec.get("id"):
        out_meta["env_id"] = spec["id"]
        env = env_from_name(spec["id"])
        if env:
            out_meta["env"] = env
    for key in ("ref_min_score", "ref_max_score"):
        if key in meta:
            out_meta.setdefault("ref_returns", {})["random" if key == "ref_min_score" else "expert"] = float(meta[key])
    return Imported(data, ends, out_meta)
