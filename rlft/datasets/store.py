"""The native episode store: one zarr group per dataset.

Layout (the diffusion_policy convention, so its zarr files open too)::

    data/<key>          arrays concatenated over all episodes, first axis = step
    meta/episode_ends   int64 [n_episodes], cumulative end index of each episode

Group attributes hold ``rlft_format``, the ``source``, the ``env_id``, per-key ``stats`` (mean, std,
min, max over steps; what normalizers need), ``checksums`` and any metadata the writer adds (for example
reference returns for normalized scores). A store is a directory ``*.zarr`` or a single uncompressed zip
``*.zarr.zip`` (what the project ships); both are written atomically.

``checksums`` holds, for every array, the sha256 of its values and the size of each chunk file written.
Opening a store checks that every chunk is there with its size (a missing chunk would read as zeros);
reading an array compares it with its sha256, so damaged data is an error, never different numbers.
Stores without checksums (written by another tool or an older rlft) open as they are, unchecked.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import zarr

from rlft.errors import DatasetError
from rlft.io import atomic_write, atomic_write_dir
from rlft.paths import DATASETS_DIR, is_bare_name

FORMAT_VERSION = 1
CHECKSUMS = "checksums"
CHUNK_BYTES = 16 * 2**20  # at most this many bytes per chunk of a data key (image keys; state keys chunk by steps)
_METADATA_FILES = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}  # zarr v3 and v2: not chunks


def _compressor() -> Any:
    return zarr.codecs.BloscCodec(cname="zstd", clevel=7, shuffle="bitshuffle")


def key_stats(x: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension statistics over the step axis: mean, std, min, max (as lists, JSON-ready)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    return {
        "mean": flat.mean(0).tolist(),
        "std": flat.std(0).tolist(),
        "min": flat.min(0).tolist(),
        "max": flat.max(0).tolist(),
    }


def write_episodes(
    path: str | Path,
    data: Mapping[str, np.ndarray],
    episode_ends: np.ndarray,
    meta: Mapping[str, Any] | None = None,
    chunk_steps: int = 65536,
) -> "EpisodeStore":
    """Write concatenated episode arrays to a new store at ``path`` (``.zarr`` dir or ``.zarr.zip``).

    ``data[key]`` has shape [total_steps, ...]; ``episode_ends`` is cumulative ([n_episodes]).
    Statistics for normalizers are computed here for every floating-point key.
    """
    path = Path(path)
    ends = np.asarray(episode_ends, dtype=np.int64)
    if ends.ndim != 1 or len(ends) == 0 or np.any(np.diff(ends) <= 0) or ends[0] <= 0:
        raise DatasetError(f"{path}: episode_ends must be a non-empty, strictly increasing list of positive ends")
    total = int(ends[-1])
    for key, arr in data.items():
        if len(arr) != total:
            raise DatasetError(f"{path}: '{key}' has {len(arr)} steps but episode_ends says {total}")
        values = np.asarray(arr)
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            step = int(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(1))[0])
            raise DatasetError(f"{path}: '{key}' holds NaN or inf (first at step {step}); clean the source data, nothing was written")
    attrs = {
        "rlft_format": FORMAT_VERSION,
        "stats": {k: key_stats(np.asarray(v)) for k, v in data.items() if np.issubdtype(np.asarray(v).dtype, np.floating)},
        **dict(meta or {}),
    }
    attrs.pop(CHECKSUMS, None)  # the new store's own are added below
    json.dumps(attrs)  # metadata must be plain JSON

    def fill(folder: Path) -> None:
        root = zarr.open_group(zarr.storage.LocalStore(folder), mode="w", zarr_format=3, attributes=attrs)
        arrays = {f"data/{key}": np.ascontiguousarray(arr) for key, arr in data.items()} | {"meta/episode_ends": ends}
        for name, arr in arrays.items():
            rows = max(1, min(chunk_steps, CHUNK_BYTES // max(1, arr[:1].nbytes)))  # image keys: a few MB per chunk
            chunks = (min(rows, len(arr)), *arr.shape[1:]) if name.startswith("data/") else (len(arr),)
            root.create_array(name, data=arr, chunks=chunks, compressors=_compressor())
        root.attrs.update({CHECKSUMS: checksums(stored_files(folder), arrays)})

    if path.name.endswith(".zip"):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "store"
            folder.mkdir()
            fill(folder)

            def zip_it(target: Path) -> None:
                with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
                    for f in sorted(folder.rglob("*")):
                        if f.is_file():
                            zf.write(f, f.relative_to(folder).as_posix())

            atomic_write(path, zip_it)
    else:
        atomic_write_dir(path, fill)
    return EpisodeStore(path)


def array_digest(values: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and values (little-endian), as ``checksums`` records it."""
    values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    digest = hashlib.sha256(f"{values.dtype.str}{values.shape}".encode())
    digest.update(values.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def stored_files(path: Path) -> dict[str, int]:
    """Every file of a store (a ``.zarr`` folder or a ``.zarr.zip``) and its size, by its key (``data/obs/c/0/0``)."""
    if path.is_file():
        with zipfile.ZipFile(path) as zf:
            return {info.filename: info.file_size for info in zf.infolist() if not info.is_dir()}
    return {f.relative_to(path).as_posix(): f.stat().st_size for f in path.rglob("*") if f.is_file()}


def checksums(files: Mapping[str, int], arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """The ``checksums`` attribute: per array (``data/obs``), its :func:`array_digest` and its chunk files' sizes."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in arrays.items():
        prefix = f"{name}/"
        chunks = {k[len(prefix) :]: size for k, size in sorted(files.items()) if k.startswith(prefix) and k.rsplit("/", 1)[-1] not in _METADATA_FILES}
        out[name] = {"sha256": array_digest(values), "chunks": chunks}
    return out


def resolve_path(path: str | Path) -> Path:
    """A dataset path as given, or else (a name without a folder) the name of a dataset shipped with rlft (``hopper-v5-medium``)."""
    p = Path(path)
    if p.exists():
        return p
    shipped = sorted(f.name.removesuffix(".zarr.zip") for f in DATASETS_DIR.glob("*.zarr.zip")) if DATASETS_DIR.is_dir() else []
    if not is_bare_name(path):
        raise DatasetError(f"{path}: no such file or folder (a shipped dataset is named without a folder: {', '.join(shipped) or 'none'})")
    for candidate in (DATASETS_DIR / p.name, DATASETS_DIR / f"{p.name}.zarr.zip"):
        if candidate.exists():
            return candidate
    raise DatasetError(f"{path}: no such dataset; give a path or one of the shipped datasets: {', '.join(shipped) or 'none'}")


class EpisodeStore:
    """Read access to a native store; arrays are loaded into memory on first use."""

    def __init__(self, path: str | Path):
        self.path = resolve_path(path)
        try:
            store = zarr.storage.ZipStore(self.path, mode="r") if self.path.is_file() else zarr.storage.LocalStore(self.path, read_only=True)
            self._root = zarr.open_group(store, mode="r")
        except Exception as e:
            raise DatasetError(
                f"{self.path}: not a readable zarr store ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); re-import or re-collect it"
            ) from None
        if "meta" not in self._root or "episode_ends" not in self._root["meta"]:
            raise DatasetError(f"{self.path}: missing meta/episode_ends; not an episode store")
        if "data" not in self._root:
            raise DatasetError(f"{self.path}: missing the data group; not an episode store")
        self.meta: dict[str, Any] = dict(self._root.attrs)
        self._checksums: dict[str, Any] | None = self.meta.pop(CHECKSUMS, None)
        self._arrays = {name: arr for name, arr in _walk_arrays(self._root["data"])}
        if self._checksums is not None:
            self._check_chunks(self._checksums)
        try:
            self.episode_ends = np.asarray(self._root["meta/episode_ends"][:], dtype=np.int64)
        except Exception as e:
            raise DatasetError(f"{self.path}: meta/episode_ends cannot be read ({type(e).__name__}); the file is damaged") from None
        self._verify("meta/episode_ends", self.episode_ends)
        if len(self.episode_ends) == 0 or np.any(np.diff(self.episode_ends) <= 0) or self.episode_ends[0] <= 0:
            raise DatasetError(f"{self.path}: meta/episode_ends is not strictly increasing; the store is damaged")
        for name, arr in self._arrays.items():
            if arr.shape[0] != self.n_steps:
                raise DatasetError(f"{self.path}: data/{name} has {arr.shape[0]} steps but meta/episode_ends says {self.n_steps}")
        self._cache: dict[str, np.ndarray] = {}

    def _check_chunks(self, records: Mapping[str, Any]) -> None:
        """The fast check on open: every array and chunk file that was written is there, with its size."""
        try:
            files = stored_files(self.path)
        except (OSError, zipfile.BadZipFile) as e:
            raise DatasetError(f"{self.path}: cannot list the store's files ({type(e).__name__}); the file is damaged") from None
        well_formed = isinstance(records, dict) and all(
            isinstance(r, dict) and isinstance(r.get("sha256"), str) and isinstance(r.get("chunks"), dict) for r in records.values()
        )
        if not well_formed:
            raise DatasetError(f"{self.path}: the '{CHECKSUMS}' attribute is malformed; re-import or re-collect the store")
        arrays = {f"data/{name}" for name in self._arrays} | {"meta/episode_ends"}
        unrecorded, missing = sorted(arrays - set(records)), sorted(set(records) - arrays)
        if unrecorded:
            raise DatasetError(f"{self.path}: {unrecorded[0]} has no checksum (added after the store was written); re-import or re-collect it")
        if missing:
            raise DatasetError(f"{self.path}: {missing[0]} is missing; the store is damaged (re-import or re-collect it)")
        for name, record in sorted(records.items()):
            present = {k[len(name) + 1 :]: size for k, size in files.items() if k.startswith(f"{name}/") and k.rsplit("/", 1)[-1] not in _METADATA_FILES}
            for chunk, size in sorted(record["chunks"].items()):
                if chunk not in present:
                    raise DatasetError(f"{self.path}: chunk {name}/{chunk} is missing; the store is damaged (re-import or re-collect it)")
                if present[chunk] != size:
                    raise DatasetError(f"{self.path}: chunk {name}/{chunk} has {present[chunk]} bytes, {size} when written; the store is damaged")
            extra = sorted(set(present) - set(record["chunks"]))
            if extra:
                raise DatasetError(f"{self.path}: chunk {name}/{extra[0]} was not written with the store; the store is damaged")

    def _verify(self, name: str, values: np.ndarray) -> None:
        """``values`` (array ``name`` as read) against its recorded sha256; nothing to compare without checksums."""
        if self._checksums is not None and array_digest(values) != self._checksums[name]["sha256"]:
            raise DatasetError(f"{self.path}: {name} differs from its checksum (changed since it was written); the store is damaged")

    def verify(self) -> None:
        """Read every array and compare it with its checksum (``rlft data info --verify``, and before training)."""
        if self._checksums is None:
            raise DatasetError(f"{self.path}: no checksums to verify against (written by another tool or an older rlft); re-import it to add them")
        for key in self._arrays:
            self[key]

    @property
    def has_checksums(self) -> bool:
        return self._checksums is not None

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1])

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]])

    @property
    def keys(self) -> dict[str, tuple[int, ...]]:
        """Each data key and its per-step shape."""
        return {name: tuple(arr.shape[1:]) for name, arr in self._arrays.items()}

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        """Each data key's dtype (read from the metadata, no array loaded)."""
        return {name: np.dtype(arr.dtype) for name, arr in self._arrays.items()}

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        return {k: {s: np.asarray(v, dtype=np.float32) for s, v in d.items()} for k, d in self.meta.get("stats", {}).items()}

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            raise DatasetError(f"{self.path}: no key '{key}'; keys: {', '.join(sorted(self._arrays))}")
        if key not in self._cache:
            try:
                values = np.asarray(self._arrays[key][:])
            except Exception as e:
                raise DatasetError(f"{self.path}: data/{key} cannot be read ({type(e).__name__}); the file is truncated or damaged") from None
            self._verify(f"data/{key}", values)
            self._cache[key] = values
        return self._cache[key]

    def episode(self, i: int) -> dict[str, np.ndarray]:
        start, end = int(self.episode_starts[i]), int(self.episode_ends[i])
        return {k: self[k][start:end] for k in self._arrays}

    def episode_returns(self) -> np.ndarray:
        """Sum of rewards per episode, [n_episodes]."""
        return np.add.reduceat(self["reward"].astype(np.float64), self.episode_starts)

    def episode_costs(self) -> np.ndarray:
        """Sum of safety costs per episode, [n_episodes] (stores of safety tasks)."""
        return np.add.reduceat(self["cost"].astype(np.float64), self.episode_starts)

    def normalized_score(self, returns: np.ndarray | float) -> np.ndarray | float:
        """D4RL normalized score of ``returns`` against this dataset's reference returns (``ref_returns``)."""
        from rlft.envs.registry import normalized_score

        ref = self.meta.get("ref_returns")
        if not ref:
            raise DatasetError(
                f"{self.path}: no ref_returns in the metadata, so no normalized score; import D4RL files under their D4RL name or collect with rlft"
            )
        return normalized_score(returns, ref["random"], ref["expert"])

    def summary(self) -> dict[str, Any]:
        """What ``rlft data info`` prints."""
        out: dict[str, Any] = {
            "path": str(self.path),
            "episodes": self.n_episodes,
            "steps": self.n_steps,
            "keys": {k: list(v) for k, v in self.keys.items()},
            "dtypes": {k: str(d) for k, d in self.dtypes.items()},
            "checksums": self.has_checksums,
        }
        lengths = np.diff(np.concatenate([[0], self.episode_ends]))
        out["episode_length"] = {"mean": float(lengths.mean()), "min": int(lengths.min()), "max": int(lengths.max())}
        if "reward" in self:
            r = self.episode_returns()
            out["return"] = {"mean": float(r.mean()), "std": float(r.std()), "min": float(r.min()), "max": float(r.max())}
        if "cost" in self:
            c = self.episode_costs()
            out["cost"] = {"mean": float(c.mean()), "std": float(c.std()), "min": float(c.min()), "max": float(c.max())}
        for k in ("source", "env_id", "ref_returns", "collection"):
            if k in self.meta:
                out[k] = self.meta[k]
        for k in ("corruption", "repair"):  # rlft data corrupt / repair records, their row lists as counts
            if isinstance(self.meta.get(k), dict):
                rows = self.meta[k].get("rows")
                counts = {e: len(r) for e, r in rows.items()} if isinstance(rows, dict) else len(rows or [])
                out[k] = {name: v for name, v in self.meta[k].items() if name != "rows"} | {"rows": counts}
        return out


def _walk_arrays(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, arr in sorted(group.arrays()):
        yield f"{prefix}{name}", arr
    for name, sub in sorted(group.groups()):
        yield from _walk_arrays(sub, f"{prefix}{name}/")


def merge_stores(paths: list[str | Path], out: str | Path) -> EpisodeStore:
    """Concatenate the episodes of several stores into a new store at ``out`` (D4RL's medium-expert mix).

    The stores must have the same keys with the same per-step shapes; metadata (reference returns,
    env id) comes from the first, and the merged store records its sources. Reference returns that
    differ between the stores are refused: scores against either would be wrong for the other's part.
    """
    stores = [EpisodeStore(p) for p in paths]
    if len(stores) < 2:
        raise DatasetError("merge needs at least two stores")
    first = stores[0]
    safety = "cost" in first  # safety data: scores against the merged data's own return range (DSRL's)
    for s in stores[1:]:
        if s.keys != first.keys:
            raise DatasetError(f"{s.path}: keys {s.keys} differ from {first.path}'s {first.keys}; cannot merge")
        if not safety and s.meta.get("ref_returns") != first.meta.get("ref_returns"):
            raise DatasetError(f"{s.path}: reference returns differ from {first.path}'s; scores would not be comparable")
        if s.meta.get("env") != first.meta.get("env"):
            raise DatasetError(f"{s.path}: recorded in env '{s.meta.get('env')}', {first.path} in '{first.meta.get('env')}'; cannot merge")
    data = {k: np.concatenate([s[k] for s in stores]) for k in first.keys}
    ends = np.concatenate([s.episode_ends + offset for s, offset in zip(stores, np.cumsum([0] + [s.n_steps for s in stores[:-1]]))])
    keep = ("env_id", "env", "ref_returns")
    meta = {k: first.meta[k] for k in keep if k in first.meta} | {"source": "merge", "merged_from": [str(s.path) for s in stores]}
    if safety:
        meta["ref_returns"] = return_range(data["reward"], ends)
    return write_episodes(out, data, ends, meta)


def return_range(reward: np.ndarray, episode_ends: np.ndarray) -> dict[str, Any]:
    """Reference returns of safety data: the min and max episode return (DSRL's normalized reward (R - min) / (max - min))."""
    returns = np.add.reduceat(reward.astype(np.float64), np.concatenate([[0], episode_ends[:-1]]))
    return {"random": float(returns.min()), "expert": float(returns.max()), "kind": "dataset min / max episode return"}


def filter_store(path: str | Path, out: str | Path, max_cost: float) -> EpisodeStore:
    """A new store at ``out`` with the episodes of ``path`` whose summed cost is at most ``max_cost`` (BC-safe's data).

    Metadata (env, reference returns) is the source's, so scores stay comparable with runs on the full data.
    """
    store = EpisodeStore(path)
    if "cost" not in store:
        raise DatasetError(f"{store.path}: no 'cost' key, so no episode is safer than another; keys: {', '.join(sorted(store.keys))}")
    keep = np.flatnonzero(store.episode_costs() <= max_cost)
    if len(keep) == 0:
        raise DatasetError(f"{store.path}: no episode has a cost <= {max_cost} (least: {store.episode_costs().min():g}); nothing to write")
    starts, ends = store.episode_starts[keep], store.episode_ends[keep]
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)])
    data = {k: store[k][rows] for k in store.keys}
    meta = {k: v for k, v in store.meta.items() if k != "stats"} | {"source": "filter", "filtered_from": str(store.path), "max_episode_cost": float(max_cost)}
    return write_episodes(out, data, np.cumsum(ends - starts), meta)
