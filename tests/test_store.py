import json

import numpy as np
import pytest

from conftest import make_episodes
from rlft.cli import main
from rlft.datasets.store import EpisodeStore, write_episodes
from rlft.errors import DatasetError


@pytest.mark.parametrize("name", ["s.zarr", "s.zarr.zip"])
def test_round_trip(tmp_path, name):
    data, ends = make_episodes([5, 7, 3])
    store = write_episodes(tmp_path / name, data, ends, {"source": "test", "env_id": "Hopper-v5"})
    again = EpisodeStore(tmp_path / name)
    assert again.n_episodes == 3 and again.n_steps == 15
    assert again.keys == {"obs": (3,), "action": (2,), "reward": (), "terminated": (), "truncated": ()}
    np.testing.assert_array_equal(again["obs"], data["obs"])
    np.testing.assert_array_equal(again.episode(1)["action"], data["action"][5:12])
    np.testing.assert_allclose(again.episode_returns(), [5, 7, 3])
    assert again.meta["env_id"] == "Hopper-v5" and store.meta["source"] == "test"


def test_normalizer_statistics_are_exact(tmp_path):
    data, ends = make_episodes([50, 30])
    store = write_episodes(tmp_path / "s.zarr", data, ends)
    for key in ("obs", "action"):
        st = store.stats[key]
        np.testing.assert_allclose(st["mean"], data[key].mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(st["std"], data[key].std(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(st["min"], data[key].min(0))
        np.testing.assert_array_equal(st["max"], data[key].max(0))
    assert "terminated" not in store.stats  # only floating keys


def test_write_refuses_mismatched_lengths(tmp_path):
    data, ends = make_episodes([5, 5])
    data["reward"] = data["reward"][:-1]
    with pytest.raises(DatasetError, match="'reward' has 9 steps but episode_ends says 10"):
        write_episodes(tmp_path / "s.zarr", data, ends)
    assert not (tmp_path / "s.zarr").exists()


def test_truncated_zip_gives_one_line_error(tmp_path):
    data, ends = make_episodes([5, 5])
    path = tmp_path / "s.zarr.zip"
    write_episodes(path, data, ends)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError) as e:
        EpisodeStore(path)["obs"]
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_store_with_inconsistent_lengths_is_rejected(tmp_path):
    import zarr

    data, ends = make_episodes([5, 5])
    path = tmp_path / "s.zarr"
    write_episodes(path, data, ends)
    root = zarr.open_group(str(path), mode="a")
    root.attrs.put({k: v for k, v in root.attrs.items() if k != "checksums"})  # a store without checksums: only the lengths tell
    del root["data/reward"]
    root.create_array("data/reward", data=np.zeros(9, np.float32))
    with pytest.raises(DatasetError, match="data/reward has 9 steps but meta/episode_ends says 10"):
        EpisodeStore(path)


def test_missing_dataset_names_shipped_ones(tmp_path):
    with pytest.raises(DatasetError, match="absent.zarr: no such file or folder .*shipped dataset is named without a folder: can-v0-mixed, hopper-v5-expert"):
        EpisodeStore(tmp_path / "absent.zarr")


def test_data_info_cli_json(tmp_path, capsys):
    data, ends = make_episodes([4, 6])
    write_episodes(tmp_path / "s.zarr.zip", data, ends)
    assert main(["data", "info", str(tmp_path / "s.zarr.zip"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 2 and info["steps"] == 10
    assert info["keys"]["obs"] == [3] and info["keys"]["reward"] == []


def test_data_info_cli_bad_path_exit_1(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nope.zarr")]) == 1
    assert capsys.readouterr().err.startswith("rlft: error:")


def test_normalized_score_uses_stored_references(tmp_path):
    data, ends = make_episodes([4, 6])
    store = write_episodes(tmp_path / "s.zarr", data, ends, {"ref_returns": {"random": 10.0, "expert": 110.0}})
    assert store.normalized_score(60.0) == pytest.approx(50.0)
    bare = write_episodes(tmp_path / "b.zarr", data, ends)
    with pytest.raises(DatasetError, match="no ref_returns"):
        bare.normalized_score(1.0)


def test_opens_diffusion_policy_zarr_v2_layout(tmp_path):
    """Diffusion Policy's replay buffers (zarr v2: data/<key>, meta/episode_ends) open as they are."""
    import zarr

    root = zarr.open_group(str(tmp_path / "pusht.zarr"), mode="w", zarr_format=2)
    root.create_array("data/state", data=np.arange(14, dtype=np.float32).reshape(7, 2))
    root.create_array("data/action", data=np.zeros((7, 2), np.float32))
    root.create_array("meta/episode_ends", data=np.array([3, 7]))
    store = EpisodeStore(tmp_path / "pusht.zarr")
    assert store.n_episodes == 2 and store.keys["state"] == (2,)
    np.testing.assert_array_equal(store.episode(1)["state"][:, 0], [6, 8, 10, 12])


def test_atomic_writes_use_normal_permissions(tmp_path):
    import os

    from rlft.io import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    data, ends = make_episodes([3])
    write_episodes(tmp_path / "s.zarr", data, ends)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "s.zarr").stat().st_mode & 0o777 == 0o777 & ~mask
    # files a library creates 0600 inside an atomic folder (safetensors does) get normal permissions too
    from safetensors.torch import save_file

    from rlft.io import atomic_write_dir

    atomic_write_dir(tmp_path / "ckpt", lambda d: save_file({"w": __import__("torch").zeros(1)}, str(d / "w.safetensors")))
    assert (tmp_path / "ckpt" / "w.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("key", ["obs", "action", "reward"])
def test_non_finite_data_is_refused_with_its_key_and_first_step(tmp_path, key):
    data = {"obs": np.zeros((6, 3), np.float32), "action": np.zeros((6, 2), np.float32), "reward": np.zeros(6, np.float32)}
    data[key][4] = np.nan if key != "action" else np.inf
    with pytest.raises(DatasetError, match=rf"'{key}' holds NaN or inf \(first at step 4\)"):
        write_episodes(tmp_path / "d.zarr", data, np.array([3, 6]))
    assert not (tmp_path / "d.zarr").exists()
