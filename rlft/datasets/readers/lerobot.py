"""LeRobot datasets, read and written: codebase versions v3.0 (LeRobot's current one) and v2.0 / v2.1.

``meta/info.json`` describes a dataset: ``codebase_version``, ``fps``, ``features`` (dtype, shape, names
per key), the ``data_path`` / ``video_path`` templates and ``chunks_size``::

    v3.0  data/chunk-000/file-000.parquet           a row per frame, many episodes per file
          videos/<key>/chunk-000/file-000.mp4        many episodes per file, one after another
          meta/episodes/chunk-000/file-000.parquet   a row per episode: its data file, dataset_from_index /
                                                     dataset_to_index, per video its file and from_timestamp /
                                                     to_timestamp, tasks, stats/<key>/<stat>
          meta/tasks.parquet, meta/stats.json
    v2.1  data/chunk-000/episode_000000.parquet      one episode per file (v2.0 alike)
          videos/chunk-000/<key>/episode_000000.mp4
          meta/episodes.jsonl, meta/tasks.jsonl, meta/episodes_stats.jsonl (v2.0: meta/stats.json)

Keys: ``observation.state`` -> ``obs`` (``obs/state`` beside other observation keys), ``observation.images.<cam>``
-> ``obs/<cam>`` (uint8 [T, H, W, 3], decoded from the videos or the parquet's images), other ``observation.<x>``
-> ``obs/<x>``, ``action``, ``next.reward`` -> ``reward``, ``next.done`` -> ``terminated`` (an episode whose last
frame is not done ends ``truncated``), ``task_index`` kept, with the task strings in the metadata (``tasks``);
other keys keep their names. A dataset without rewards gets zeros (as robomimic's reader does). Export is the
inverse, with image keys encoded as H.264 mp4 (lossy: decoded frames differ from the originals by a few levels).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rlft.datasets.readers.base import Imported, concat_episodes
from rlft.datasets.store import EpisodeStore
from rlft.errors import ConfigError, DatasetError
from rlft.io import atomic_write_dir
from rlft.video import pixel_format, read_video, write_video

VERSIONS = ("v2.0", "v2.1", "v3.0")
WRITTEN = ("v3.0", "v2.1")
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")  # LeRobot's DEFAULT_FEATURES
RENAME = {"next.reward": "reward", "next.done": "terminated"}
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB, VIDEO_FILE_MB = 100, 200  # v3.0: LeRobot's default file sizes (rlft packs episodes into data files by the first)
VIDEO_CRF = 17  # H.264 quality of exported videos: visually lossless, about 2 levels off per pixel on smooth images
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
PATHS = {
    "v3.0": ("data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"),
    "v2.1": (
        "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
    ),
}


@dataclass
class _Episode:
    """Where one episode's frames are: its data file (rows from ``start`` for v3.0, the whole file for v2) and videos."""

    index: int
    length: int
    data: Path
    start: int | None
    videos: dict[str, tuple[Path, float]]  # video key -> (file, from_timestamp)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing; a LeRobot v2 dataset lists its episodes and tasks in meta/*.jsonl")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON lines ({e.msg})") from None


def _parquet(path: Path, why: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DatasetError(f"{path}: missing ({why}); the dataset is incomplete")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: cannot be read as parquet ({str(e).splitlines()[0]}); the file is truncated or damaged") from None


def _info(root: Path) -> dict[str, Any]:
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DatasetError(f"{root}: no meta/info.json; not a LeRobot dataset folder (meta/info.json, data/, videos/)")
    info = _json(path)
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version not in VERSIONS:
        raise DatasetError(f"{path}: codebase_version {version!r} is not read by rlft (it reads {', '.join(VERSIONS)}); convert it with LeRobot first")
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise DatasetError(f"{path}: missing '{key}'; the file is not a complete LeRobot info.json")
    if "action" not in info["features"]:
        raise DatasetError(f"{path}: no 'action' feature; rlft's store needs actions")
    return info


def _episodes_v3(root: Path, info: dict[str, Any], videos: list[str]) -> list[_Episode]:
    import pyarrow as pa

    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not files:
        raise DatasetError(f"{root / 'meta' / 'episodes'}: no parquet files; a v3.0 dataset lists its episodes there")
    tables = []
    for f in files:
        table = _parquet(f, "episode metadata")
        tables.append(table.select([c for c in table.column_names if not c.startswith("stats/")]))
    rows = pa.concat_tables(tables, promote_options="permissive").to_pylist()
    need = ["episode_index", "dataset_from_index", "dataset_to_index", "data/chunk_index", "data/file_index"]
    need += [f"videos/{key}/{field}" for key in videos for field in ("chunk_index", "file_index", "from_timestamp")]
    out = []
    for row in sorted(rows, key=lambda r: r.get("episode_index", -1)):
        missing = [c for c in need if row.get(c) is None]
        if missing:
            raise DatasetError(f"{files[0].parent.parent}: episode {row.get('episode_index')} has no '{missing[0]}'; the episode metadata is incomplete")
        video_files = {
            key: (
                root / info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"]),
                float(row[f"videos/{key}/from_timestamp"]),
            )
            for key in videos
        }
        data = root / info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        start = int(row["dataset_from_index"])
        out.append(_Episode(int(row["episode_index"]), int(row["dataset_to_index"]) - start, data, start, video_files))
    return out


def _episodes_v2(root: Path, info: dict[str, Any], videos: list[str]) -> list[_Episode]:
    chunks = int(info.get("chunks_size", CHUNKS_SIZE))
    out = []
    for row in sorted(_jsonl(root / "meta" / "episodes.jsonl"), key=lambda r: r["episode_index"]):
        ep = int(row["episode_index"])
        where = {"episode_chunk": ep // chunks, "episode_index": ep}
        video_files = {key: (root / info["video_path"].format(video_key=key, **where), 0.0) for key in videos}
        out.append(_Episode(ep, int(row["length"]), root / info["data_path"].format(**where), None, video_files))
    return out


def _tasks(root: Path, version: str) -> list[str]:
    """Task strings, position = task_index."""
    if version == "v3.0":
        table = _parquet(root / "meta" / "tasks.parquet", "the task strings")
        text = [c for c, t in zip(table.column_names, table.schema.types) if str(t) in ("string", "large_string")]
        if "task_index" not in table.column_names or not text:
            raise DatasetError(f"{root / 'meta' / 'tasks.parquet'}: needs a task_index and a task column")
        pairs = zip(table.column("task_index").to_pylist(), table.column(text[0]).to_pylist())
    else:
        pairs = ((r["task_index"], r["task"]) for r in _jsonl(root / "meta" / "tasks.jsonl"))
    tasks = dict(pairs)
    if sorted(tasks) != list(range(len(tasks))):
        raise DatasetError(f"{root / 'meta'}: task indices {sorted(tasks)} are not 0..{len(tasks) - 1}")
    return [tasks[i] for i in range(len(tasks))]


def _to_numpy(column: Any, shape: tuple[int, ...], path: Path, name: str) -> np.ndarray:
    """A parquet column -> [rows, ...]: scalars, (nested) lists reshaped to the feature's shape, or images decoded."""
    import pyarrow as pa

    column = column.combine_chunks()
    kind = column.type
    if pa.types.is_struct(kind):  # LeRobot "image" features: {bytes, path}, PNG or JPEG
        from PIL import Image

        return np.stack([np.asarray(Image.open(io.BytesIO(v["bytes"])).convert("RGB")) for v in column.to_pylist()])
    n = len(column)
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        column = column.flatten()
        kind = column.type
    values = column.to_numpy(zero_copy_only=False)
    if n and values.size % n:
        raise DatasetError(f"{path}: column '{name}' holds rows of different lengths")
    per_row = values.size // n if n else 0
    return values.reshape(n, *shape) if per_row == int(np.prod(shape)) else values.reshape(n, -1)


def _native_key(key: str, observations: list[str]) -> str:
    """rlft's name for a LeRobot key; ``observations``: all the dataset's observation keys."""
    if key == "observation.state" and observations == [key]:
        return "obs"
    for prefix in ("observation.images.", "observation."):
        if key.startswith(prefix):
            return "obs/" + key[len(prefix) :]
    return RENAME.get(key, key)


def _lerobot_key(key: str, image: bool) -> str:
    """LeRobot's name for an rlft key (the inverse of :func:`_native_key`; LeRobot names hold no '/')."""
    if key == "obs":
        return "observation.state"
    if key.startswith("obs/"):
        return ("observation.images." if image else "observation.") + key[4:].replace("/", ".")
    return {v: k for k, v in RENAME.items()}.get(key, key.replace("/", "."))


def read_lerobot(root: Path) -> Imported:
    info = _info(root)
    version, fps, features = info["codebase_version"], float(info["fps"]), info["features"]
    videos = [k for k, f in features.items() if f.get("dtype") == "video"]
    columns = [k for k, f in features.items() if f.get("dtype") not in ("video", "string", "audio") and (k not in BOOKKEEPING or k == "task_index")]
    keys = [*columns, *videos]
    observations = [k for k in keys if k.startswith("observation.")]
    names = {k: _native_key(k, observations) for k in keys}
    clash = [k for k in keys if list(names.values()).count(names[k]) > 1]
    if clash:
        raise DatasetError(f"{root}: features {clash} both become '{names[clash[0]]}' in rlft's store")
    if videos and not info.get("video_path"):
        raise DatasetError(f"{root / 'meta' / 'info.json'}: video features {videos} but no video_path")
    episodes = _episodes_v3(root, info, videos) if version == "v3.0" else _episodes_v2(root, info, videos)
    if not episodes:
        raise DatasetError(f"{root}: holds no episodes")
    tables: dict[Path, dict[str, np.ndarray]] = {}
    frames: dict[Path, np.ndarray] = {}
    steps_of = []
    for ep in episodes:
        if ep.data not in tables:
            table = _parquet(ep.data, f"the frames of episode {ep.index}")
            missing = [c for c in (*columns, "episode_index") if c not in table.column_names]
            if missing:
                raise DatasetError(f"{ep.data}: no column '{missing[0]}' (meta/info.json lists it)")
            wanted = [*columns, "episode_index", *(c for c in ("index", "timestamp") if c in table.column_names)]
            tables[ep.data] = {c: _to_numpy(table.column(c), tuple(features.get(c, {}).get("shape", (1,))), ep.data, c) for c in wanted}
        table = tables[ep.data]
        first = int(table["index"].reshape(-1)[0]) if ep.start is not None and "index" in table else 0
        rows = slice(ep.start - first, ep.start - first + ep.length) if ep.start is not None else slice(None)
        picked = {c: v[rows] for c, v in table.items()}
        if len(picked["episode_index"]) != ep.length or np.any(picked["episode_index"].reshape(-1) != ep.index):
            raise DatasetError(f"{ep.data}: the rows of episode {ep.index} are not the {ep.length} that the episode metadata gives")
        steps = {names[c]: _step_shape(names[c], picked[c]) for c in columns}
        stamps = picked["timestamp"].reshape(-1).astype(np.float64) if "timestamp" in picked else np.arange(ep.length) / fps
        for key, (video, start) in ep.videos.items():
            if video not in frames:
                frames[video] = _decode(video, key, ep.index)
            at = np.rint((start + stamps) * fps).astype(np.int64)
            if at.max() >= len(frames[video]) or at.min() < 0:
                raise DatasetError(f"{video}: {len(frames[video])} frames, but episode {ep.index} needs frame {at.max()}; the video is cut short")
            steps[names[key]] = frames[video][at]
        steps_of.append(steps)
    data, ends = concat_episodes(root, [_with_flags(s, ep.length) for s, ep in zip(steps_of, episodes)])
    if info.get("total_frames") not in (None, int(ends[-1])) or info.get("total_episodes") not in (None, len(episodes)):
        raise DatasetError(
            f"{root}: {len(episodes)} episodes of {int(ends[-1])} frames, but info.json says {info.get('total_episodes')} of {info.get('total_frames')}"
        )
    meta = {
        "source": f"lerobot:{root.name}",
        "tasks": _tasks(root, version),
        "lerobot": {
            "codebase_version": version,
            "fps": info["fps"],
            "robot_type": info.get("robot_type"),
            "names": {names[k]: features[k].get("names") for k in keys},
        },
    }
    return Imported(data, ends, meta)


def _step_shape(key: str, values: np.ndarray) -> np.ndarray:
    """Per-step vectors for actions and observations ([T, 1] for a scalar), flat [T] for rewards and flags."""
    if key == "action" or key.startswith("obs"):
        values = values.reshape(len(values), -1) if values.ndim == 1 else values
        return values.astype(np.float32) if np.issubdtype(values.dtype, np.floating) else values
    return values.reshape(len(values)) if values.ndim == 2 and values.shape[1] == 1 else values


def _with_flags(steps: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Add the rewards (zeros when the dataset has none) and episode-end flags rlft's store keeps."""
    steps["reward"] = steps["reward"].astype(np.float32) if "reward" in steps else np.zeros(n, np.float32)
    steps["terminated"] = steps["terminated"].astype(bool) if "terminated" in steps else np.zeros(n, bool)
    steps["truncated"] = np.zeros(n, bool)
    steps["truncated"][-1] = not steps["terminated"][-1]
    return steps


def _decode(video: Path, key: str, episode: int) -> np.ndarray:
    if not video.is_file():
        raise DatasetError(f"{video}: missing (the '{key}' video of episode {episode}); the dataset is incomplete")
    try:
        return read_video(video)
    except (OSError, RuntimeError):
        raise DatasetError(f"{video}: cannot be decoded as a video; the file is truncated or damaged") from None


# ---- writing ----------------------------------------------------------------------------------------
def _stats(values: np.ndarray, image: bool) -> dict[str, list]:
    """LeRobot's per-feature statistics: min, max, mean, std, count and quantiles; images per channel in [0, 1] as [3, 1, 1]."""
    if image:
        sample = values[np.unique(np.linspace(0, len(values) - 1, min(len(values), 100)).round().astype(int))]
        flat, shape = sample.reshape(-1, values.shape[-1]).astype(np.float64) / 255.0, (values.shape[-1], 1, 1)
    else:
        flat, shape = values.reshape(len(values), -1).astype(np.float64), values.shape[1:] or (1,)
    out = {"min": flat.min(0), "max": flat.max(0), "mean": flat.mean(0), "std": flat.std(0)}
    out |= {f"q{round(q * 100):02d}": np.quantile(flat, q, axis=0) for q in QUANTILES}
    return {k: v.reshape(shape).tolist() for k, v in out.items()} | {"count": [len(values)]}


def _column(values: np.ndarray) -> Any:
    """A numpy [rows, ...] array -> a parquet column: scalars for [rows] and [rows, 1] (LeRobot's shape [1]), else fixed-size lists."""
    import pyarrow as pa

    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    column = pa.array(np.ascontiguousarray(values).reshape(-1))
    for size in reversed(values.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column


def _write_parquet(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")


def _frames_table(arrays: dict[str, np.ndarray], rows: slice) -> Any:
    import pyarrow as pa

    return pa.table({k: _column(v[rows]) for k, v in arrays.items()})


def _tasks_table(tasks: list[str]) -> Any:
    """meta/tasks.parquet as pandas writes LeRobot's DataFrame (a task_index column, indexed by the task string)."""
    import pyarrow as pa

    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _groups(sizes: list[int], limit: int) -> Iterator[tuple[int, int, list[int]]]:
    """(chunk_index, file_index, episodes) of consecutive episodes packed into files of up to ``limit`` bytes."""
    group: list[int] = []
    total = file = 0
    for i, size in enumerate(sizes):
        if group and total + size > limit:
            yield file // CHUNKS_SIZE, file % CHUNKS_SIZE, group
            group, total, file = [], 0, file + 1
        group.append(i)
        total += size
    yield file // CHUNKS_SIZE, file % CHUNKS_SIZE, group


def _is_image(values: np.ndarray) -> bool:
    """The store's image keys: uint8 [T, H, W, 3] (the layout rlft.policies.encoders reads)."""
    return values.dtype == np.uint8 and values.ndim == 4 and values.shape[-1] == 3


@dataclass
class _Export:
    """What both layouts write: per-frame columns, videos, episodes (index, tasks, length) and their bounds."""

    arrays: dict[str, np.ndarray]
    videos: dict[str, np.ndarray]
    episodes: list[dict[str, Any]]
    bounds: np.ndarray
    fps: int

    def stats(self, rows: slice = slice(None)) -> dict[str, dict[str, list]]:
        return {k: _stats(v[rows], image=False) for k, v in self.arrays.items()} | {k: _stats(v[rows], image=True) for k, v in self.videos.items()}

    def episode_rows(self, e: int) -> slice:
        return slice(int(self.bounds[e]), int(self.bounds[e + 1]))


def write_lerobot(store: EpisodeStore, out: str | Path, fps: int | None = None, version: str = "v3.0") -> dict[str, Any]:
    """Write ``store`` as a LeRobot dataset folder at ``out`` (atomically); returns what ``rlft data export`` prints.

    ``fps``: the frame rate (default: the one the store was imported with). Image keys become mp4 videos;
    ``truncated`` is not written (LeRobot keeps no such flag; reading derives it at episode ends).
    """
    if version not in WRITTEN:
        raise ConfigError(f"LeRobot version '{version}' is not written; choose one of: {', '.join(WRITTEN)}")
    recorded = store.meta.get("lerobot", {})
    fps = int(fps or recorded.get("fps") or 0)
    if fps <= 0:
        raise ConfigError(f"{store.path}: the store does not record its frame rate; give it with --fps N")
    tasks = list(store.meta.get("tasks") or [store.meta.get("env_id") or store.meta.get("source") or "rlft"])
    task_index = store["task_index"].astype(np.int64) if "task_index" in store and store.meta.get("tasks") else np.zeros(store.n_steps, np.int64)
    if task_index.min() < 0 or task_index.max() >= len(tasks):
        raise DatasetError(f"{store.path}: task_index goes up to {task_index.max()}, but the metadata lists {len(tasks)} tasks")
    n, starts, ends = store.n_steps, store.episode_starts, store.episode_ends
    episode_index = np.repeat(np.arange(store.n_episodes), ends - starts)
    frame_index = np.arange(n) - starts[episode_index]
    arrays: dict[str, np.ndarray] = {}
    videos: dict[str, np.ndarray] = {}
    features: dict[str, dict[str, Any]] = {}
    for key in (k for k in store.keys if k not in ("truncated", "task_index")):
        values = store[key]
        name = _lerobot_key(key, image=_is_image(values))
        if name in features:
            raise DatasetError(f"{store.path}: two keys become LeRobot's '{name}'; rename one")
        if _is_image(values):
            h, w, c = values.shape[1:]
            info = {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": pixel_format(h, w), "video.is_depth_map": False}
            features[name] = {
                "dtype": "video",
                "shape": [h, w, c],
                "names": ["height", "width", "channels"],
                "info": info | {"video.fps": fps, "video.channels": c, "has_audio": False},
            }
            videos[name] = values
        else:
            features[name] = {"dtype": values.dtype.name, "shape": list(values.shape[1:]) or [1], "names": recorded.get("names", {}).get(key)}
            arrays[name] = values
    bookkeeping = {
        "timestamp": (frame_index / fps).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": episode_index,
        "index": np.arange(n),
        "task_index": task_index,
    }
    arrays |= bookkeeping
    features |= {key: {"dtype": values.dtype.name, "shape": [1], "names": None} for key, values in bookkeeping.items()}
    episodes = [
        {"episode_index": e, "tasks": list(dict.fromkeys(tasks[t] for t in task_index[a:b])), "length": int(b - a)}
        for e, (a, b) in enumerate(zip(starts.tolist(), ends.tolist()))
    ]
    export = _Export(arrays, videos, episodes, np.concatenate([[0], ends]), fps)
    data_path, video_path = PATHS[version]
    info = {
        "codebase_version": version,
        "robot_type": recorded.get("robot_type"),
        "total_episodes": store.n_episodes,
        "total_frames": n,
        "total_tasks": len(tasks),
        **({"total_videos": len(videos) * store.n_episodes, "total_chunks": (store.n_episodes - 1) // CHUNKS_SIZE + 1} if version == "v2.1" else {}),
        "chunks_size": CHUNKS_SIZE,
        **({"data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB} if version == "v3.0" else {}),
        "fps": fps,
        "splits": {"train": f"0:{store.n_episodes}"},
        "data_path": data_path,
        "video_path": video_path if videos else None,
        "features": features,
    }

    def fill(root: Path) -> None:
        (root / "meta").mkdir()
        (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
        if version == "v3.0":
            _fill_v3(root, export, data_path, video_path)
            _write_parquet(root / "meta" / "tasks.parquet", _tasks_table(tasks))
            (root / "meta" / "stats.json").write_text(json.dumps(export.stats(), indent=4))
        else:
            _fill_v21(root, export, data_path, video_path)
            (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks)))

    atomic_write_dir(out, fill)
    return {"path": str(out), "format": "lerobot", "codebase_version": version, "episodes": store.n_episodes, "frames": n, "fps": fps, "videos": list(videos)}


def _fill_v3(root: Path, export: _Export, data_path: str, video_path: str) -> None:
    """v3.0: consecutive episodes packed into data files, with one video file per camera beside each data file."""
    import pyarrow as pa

    step_bytes = sum(v[:1].nbytes for v in export.arrays.values())
    rows = []
    for chunk, file, group in _groups([e["length"] * step_bytes for e in export.episodes], DATA_FILE_MB * 1024**2):
        where = {"chunk_index": chunk, "file_index": file}
        first = int(export.bounds[group[0]])
        span = slice(first, int(export.bounds[group[-1] + 1]))
        _write_parquet(root / data_path.format(**where), _frames_table(export.arrays, span))
        for key, frames in export.videos.items():
            write_video(root / video_path.format(video_key=key, **where), frames[span], export.fps, crf=VIDEO_CRF)
        for e in group:
            ep = export.episode_rows(e)
            row = export.episodes[e] | {"data/chunk_index": chunk, "data/file_index": file, "dataset_from_index": ep.start, "dataset_to_index": ep.stop}
            for key in export.videos:
                row |= {f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file}
                row |= {f"videos/{key}/from_timestamp": (ep.start - first) / export.fps, f"videos/{key}/to_timestamp": (ep.stop - first) / export.fps}
            row |= {f"stats/{k}/{s}": v for k, st in export.stats(ep).items() for s, v in st.items()}
            rows.append(row | {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
    _write_parquet(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet", pa.Table.from_pylist(rows))


def _fill_v21(root: Path, export: _Export, data_path: str, video_path: str) -> None:
    """v2.1: a data file and a video per camera for each episode; episodes and their stats as JSON lines."""
    stats = []
    for e in range(len(export.episodes)):
        where = {"episode_chunk": e // CHUNKS_SIZE, "episode_index": e}
        ep = export.episode_rows(e)
        _write_parquet(root / data_path.format(**where), _frames_table(export.arrays, ep))
        for key, frames in export.videos.items():
            write_video(root / video_path.format(video_key=key, **where), frames[ep], export.fps, crf=VIDEO_CRF)
        stats.append(json.dumps({"episode_index": e, "stats": export.stats(ep)}) + "\n")
    (root / "meta" / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in export.episodes))
    (root / "meta" / "episodes_stats.jsonl").write_text("".join(stats))
