"""LeRobot datasets: a v3.0 dataset written by the lerobot package itself (tests/data/lerobot_v30, made by
tests/data/make_lerobot_v30.py), a v2.0 dataset in the exact layout, and write -> read round trips of both layouts
rlft writes (v3.0, v2.1). Videos are lossy: image keys compare within a tolerance, everything else exactly."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlft.cli import main
from rlft.datasets.readers import import_dataset
from rlft.datasets.readers.lerobot import write_lerobot
from rlft.datasets.store import EpisodeStore, write_episodes
from rlft.errors import ConfigError, DatasetError

FIXTURE = Path(__file__).parent / "data" / "lerobot_v30"


def lerobot_frames(e: int, t: int) -> dict[str, np.ndarray]:
    """The values make_lerobot_v30.py wrote (its ``frame``), in rlft's key names."""
    yy, xx = np.mgrid[0:48, 0:64]
    front = np.stack([xx * 3 + 10 * t, yy * 4 + 20 * e, np.full_like(xx, 60 + 5 * t)], -1).clip(0, 255)
    wrist = np.stack([yy * 5 + t, xx * 2 + e, np.full_like(xx, 200)], -1)[:16, :16].clip(0, 255)
    return {"obs/state": np.array([e, t, e * t], np.float32) / 10, "action": np.array([t, -e], np.float32) / 4, "obs/front": front, "obs/wrist": wrist}


def test_reads_the_dataset_lerobot_wrote(tmp_path):
    store = import_dataset(FIXTURE, "lerobot", tmp_path / "o.zarr")
    np.testing.assert_array_equal(store.episode_ends, [6, 15, 20])
    assert store.keys == {
        "action": (2,),
        "obs/front": (48, 64, 3),
        "obs/state": (3,),
        "obs/wrist": (16, 16, 3),
        "reward": (),
        "task_index": (),
        "terminated": (),
        "truncated": (),
    }
    expected = [lerobot_frames(e, t) for e, n in enumerate((6, 9, 5)) for t in range(n)]
    for key in ("obs/state", "action", "obs/wrist"):  # the wrist camera is PNG in the parquet: lossless
        np.testing.assert_array_equal(store[key], np.stack([f[key] for f in expected]).astype(store[key].dtype))
    front = np.stack([f["obs/front"] for f in expected])
    assert store["obs/front"].dtype == np.uint8 and np.abs(store["obs/front"].astype(int) - front).mean() < 3  # AV1, LeRobot's crf 30
    assert store["reward"].nonzero()[0].tolist() == [5, 14, 19]
    assert store["terminated"].nonzero()[0].tolist() == [5, 19]
    assert store["truncated"].nonzero()[0].tolist() == [14]  # episode 1 never says done
    assert store.meta["tasks"] == ["pick the cube", "push the cube"]
    np.testing.assert_array_equal(store["task_index"], [0] * 6 + [1] * 9 + [0] * 5)
    assert store.meta["lerobot"]["fps"] == 10 and store.meta["lerobot"]["robot_type"] == "point"
    assert store.meta["lerobot"]["names"]["obs/state"] == ["x", "y", "z"]


def small_store(path: Path, image: bool = True) -> EpisodeStore:
    """Three episodes (5, 7, 8 steps): the first and last end terminated, the middle one truncated."""
    g = np.random.default_rng(0)
    n, ends = 20, [5, 12, 20]
    terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
    terminated[[4, 19]], truncated[11] = True, True
    data = {
        "obs/state" if image else "obs": g.normal(size=(n, 4)).astype(np.float32),
        "action": g.uniform(-1, 1, size=(n, 1 if not image else 2)).astype(np.float32),
        "reward": g.normal(size=n).astype(np.float32),
        "terminated": terminated,
        "truncated": truncated,
    }
    if image:
        yy, xx = np.mgrid[0:16, 0:24]
        data["obs/cam"] = np.stack([np.stack([xx * 8 + t, yy * 10 + 2 * t, np.full_like(xx, 100 + 3 * t)], -1) for t in range(n)]).astype(np.uint8)
    return write_episodes(path, data, ends, {"source": "test", "env_id": "Point-v0"})


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_round_trip(tmp_path, version):
    store = small_store(tmp_path / "s.zarr")
    out = write_lerobot(store, tmp_path / "lr", fps=10, version=version)
    assert out["episodes"] == 3 and out["frames"] == 20 and out["videos"] == ["observation.images.cam"]
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == version and info["total_frames"] == 20 and info["features"]["observation.images.cam"]["dtype"] == "video"
    if version == "v3.0":  # all episodes in one data file and one video, each episode found by its bounds
        assert len(list((tmp_path / "lr").rglob("*.mp4"))) == 1
        assert sorted(p.name for p in (tmp_path / "lr").rglob("*.parquet")) == ["file-000.parquet"] * 2 + ["tasks.parquet"]
        episodes = pq.read_table(tmp_path / "lr" / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
        assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 5), (5, 12), (12, 20)]
        assert [e["videos/observation.images.cam/from_timestamp"] for e in episodes] == [0.0, 0.5, 1.2]
        assert episodes[0]["tasks"] == ["Point-v0"] and episodes[0]["stats/action/count"] == [5]
        frames = pq.read_table(tmp_path / "lr" / "data" / "chunk-000" / "file-000.parquet")
        assert frames.schema.field("observation.state").type == pa.list_(pa.float32(), 4) and frames.schema.field("next.reward").type == pa.float32()
    else:  # a data file and a video per episode
        assert len(list((tmp_path / "lr" / "data" / "chunk-000").glob("episode_*.parquet"))) == 3
        assert len(list((tmp_path / "lr" / "videos" / "chunk-000" / "observation.images.cam").glob("episode_*.mp4"))) == 3
        assert len((tmp_path / "lr" / "meta" / "episodes_stats.jsonl").read_text().splitlines()) == 3
    back = import_dataset(tmp_path / "lr", "lerobot", tmp_path / "back.zarr")
    np.testing.assert_array_equal(back.episode_ends, store.episode_ends)
    assert back.keys == store.keys | {"task_index": ()}
    for key in ("obs/state", "action", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(back[key], store[key], err_msg=key)
    error = np.abs(back["obs/cam"].astype(int) - store["obs/cam"])
    assert error.mean() < 5, error.mean()
    assert back.meta["tasks"] == ["Point-v0"] and back.meta["lerobot"]["fps"] == 10


def test_cli_round_trip_of_a_state_store(tmp_path, capsys):
    """``obs`` alone stays ``obs``; a 1-d action stays [T, 1]; the frame rate travels with the import."""
    small_store(tmp_path / "s.zarr", image=False)
    assert main(["data", "export", str(tmp_path / "s.zarr"), "--format", "lerobot", "--out", str(tmp_path / "lr"), "--fps", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["videos"] == []
    assert main(["data", "import", str(tmp_path / "lr"), "--format", "lerobot", "--out", str(tmp_path / "b.zarr")]) == 0
    assert json.loads(capsys.readouterr().out)["keys"]["obs"] == [4]
    back, store = EpisodeStore(tmp_path / "b.zarr"), EpisodeStore(tmp_path / "s.zarr")
    for key in ("obs", "action", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(back[key], store[key], err_msg=key)
    assert main(["data", "export", str(tmp_path / "b.zarr"), "--format", "lerobot", "--out", str(tmp_path / "lr2"), "--version", "v2.1"]) == 0
    assert json.loads(capsys.readouterr().out)["fps"] == 20
    assert main(["data", "export", str(tmp_path / "b.zarr"), "--format", "lerobot", "--out", str(tmp_path / "lr2")]) == 2
    assert "--force" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="give it with --fps"):
        write_lerobot(store, tmp_path / "lr3")


def test_reads_v20_with_variable_length_lists(tmp_path):
    """The v2.0 layout by hand: per-episode parquet with list<float> columns (what older LeRobot wrote), jsonl metadata."""
    root = tmp_path / "v20"
    (root / "meta").mkdir(parents=True)
    features = {
        "observation.state": {"dtype": "float32", "shape": [2], "names": None},
        "action": {"dtype": "float32", "shape": [2], "names": None},
        **{k: {"dtype": "int64", "shape": [1], "names": None} for k in ("frame_index", "episode_index", "index", "task_index")},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    }
    info = {"codebase_version": "v2.0", "fps": 5, "chunks_size": 1000, "total_episodes": 2, "total_frames": 7, "features": features}
    info |= {"data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet", "video_path": None}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "episodes.jsonl").write_text('{"episode_index": 0, "tasks": ["a"], "length": 3}\n{"episode_index": 1, "tasks": ["a"], "length": 4}\n')
    (root / "meta" / "tasks.jsonl").write_text('{"task_index": 0, "task": "a"}\n')
    for e, (start, n) in enumerate([(0, 3), (3, 4)]):
        rows = np.arange(start, start + n)
        table = {
            "observation.state": pa.array([[float(i), -float(i)] for i in rows], pa.list_(pa.float32())),
            "action": pa.array([[float(i) / 2, 1.0] for i in rows], pa.list_(pa.float32())),
            "timestamp": pa.array(np.arange(n) / 5, pa.float32()),
            "frame_index": pa.array(np.arange(n)),
            "episode_index": pa.array(np.full(n, e)),
            "index": pa.array(rows),
            "task_index": pa.array(np.zeros(n, np.int64)),
        }
        (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(table), root / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
    store = import_dataset(root, "lerobot", tmp_path / "o.zarr")
    np.testing.assert_array_equal(store.episode_ends, [3, 7])
    np.testing.assert_array_equal(store["obs"][:, 0], np.arange(7))
    np.testing.assert_array_equal(store["action"][:, 0], np.arange(7) / 2)
    assert store["truncated"].nonzero()[0].tolist() == [2, 6] and not store["reward"].any()  # no next.done, no next.reward


def _break(root: Path, how: str) -> str:
    """Damage a copy of the lerobot-written dataset; returns what the one-line error must say."""
    if how == "no info.json":
        (root / "meta" / "info.json").unlink()
        return "no meta/info.json; not a LeRobot dataset"
    if how == "unknown version":
        info = json.loads((root / "meta" / "info.json").read_text())
        (root / "meta" / "info.json").write_text(json.dumps(info | {"codebase_version": "v1.6"}))
        return "codebase_version 'v1.6' is not read by rlft"
    if how == "no parquet":
        (root / "data" / "chunk-000" / "file-000.parquet").unlink()
        return "file-000.parquet: missing (the frames of episode 0); the dataset is incomplete"
    if how == "no video":
        (root / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4").unlink()
        return "missing (the 'observation.images.front' video of episode 0)"
    if how == "damaged video":
        video = root / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4"
        video.write_bytes(video.read_bytes()[:200])
        return "cannot be decoded as a video"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["no info.json", "unknown version", "no parquet", "no video", "damaged video"])
def test_bad_datasets_give_one_line(tmp_path, capsys, how):
    root = tmp_path / "ds"
    shutil.copytree(FIXTURE, root)
    message = _break(root, how)
    assert main(["data", "import", str(root), "--format", "lerobot", "--out", str(tmp_path / "o.zarr")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "o.zarr").exists()
    with pytest.raises(DatasetError):
        import_dataset(root, "lerobot", tmp_path / "o.zarr")
