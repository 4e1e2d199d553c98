"""Each reader on small files written in that format's own layout (Minari's by the minari package)."""

import json
import warnings

import h5py
import numpy as np
import pytest

from rlft.cli import main
from rlft.datasets.readers import import_dataset
from rlft.datasets.store import EpisodeStore
from rlft.errors import DatasetError


def write_d4rl(path, n=25, cut=None):
    """The exact D4RL layout: flat arrays + infos/* + metadata/*; episodes end at 7 (terminal), 17 (timeout)."""
    g = np.random.default_rng(0)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[6], timeouts[16] = True, True
    with h5py.File(path, "w") as f:
        f["observations"] = g.normal(size=(n, 11)).astype(np.float32)
        f["actions"] = g.uniform(-1, 1, size=(n, 3)).astype(np.float32)
        f["rewards"] = np.ones(n, np.float32)
        f["terminals"] = terminals
        f["timeouts"] = timeouts
        f["infos/qpos"] = g.normal(size=(n, 6))
        f["infos/qvel"] = g.normal(size=(n, 6))
        f["metadata/algorithm"] = np.bytes_("SAC")
        f["metadata/iteration"] = np.int64(1000)
        f["metadata/policy/fc0/weight"] = np.zeros((4, 11), np.float32)
        if cut == "rewards":
            del f["rewards"]
        if cut == "length":
            del f["actions"]
            f["actions"] = np.zeros((n - 1, 3), np.float32)


def test_d4rl_episode_split(tmp_path):
    write_d4rl(tmp_path / "hopper_medium-v2.hdf5")
    store = import_dataset(tmp_path / "hopper_medium-v2.hdf5", "d4rl", tmp_path / "out.zarr")
    np.testing.assert_array_equal(store.episode_ends, [7, 17, 25])
    assert store["terminated"].nonzero()[0].tolist() == [6]
    assert store["truncated"].nonzero()[0].tolist() == [16, 24]  # timeout, and the cut-off last episode
    assert store.keys["infos/qpos"] == (6,)
    assert store.meta["ref_returns"] == {"random": -20.272305, "expert": 3234.3}
    assert store.meta["d4rl_metadata"] == {"algorithm": "SAC", "iteration": 1000}


@pytest.mark.parametrize("cut, message", [("rewards", "missing key 'rewards'"), ("length", "'actions' has 24 steps, expected 25")])
def test_d4rl_bad_files(tmp_path, cut, message):
    write_d4rl(tmp_path / "x.hdf5", cut=cut)
    with pytest.raises(DatasetError, match=message):
        import_dataset(tmp_path / "x.hdf5", "d4rl", tmp_path / "out.zarr")


def test_truncated_hdf5_names_the_file(tmp_path, capsys):
    path = tmp_path / "x.hdf5"
    write_d4rl(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    assert main(["data", "import", str(path), "--format", "d4rl", "--out", str(tmp_path / "o.zarr")]) == 1
    err = capsys.readouterr().err.strip()
    assert str(path) in err and "\n" not in err and not (tmp_path / "o.zarr").exists()


def test_minari_written_by_minari(tmp_path, monkeypatch):
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env = gym.make("Pendulum-v1", max_episode_steps=12)
    buffers, lengths = [], [12, 12, 12]
    for ep, n in enumerate(lengths):
        obs, _ = env.reset(seed=ep)
        o, a, r, te, tr = [obs], [], [], [], []
        for t in range(n):
            act = env.action_space.sample()
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs), a.append(act), r.append(rew), te.append(term), tr.append(trunc)
        buffers.append(EpisodeBuffer(id=ep, seed=ep, observations=o, actions=a, rewards=r, terminations=te, truncations=tr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari's advice about descriptions and eval envs
        minari.create_dataset_from_buffers("test/pendulum-random-v0", buffers, env=env, algorithm_name="random", author="rlft", description="test")
    root = tmp_path / "minari" / "test" / "pendulum-random-v0"
    store = import_dataset(root, "minari", tmp_path / "out.zarr.zip")
    assert store.n_episodes == 3 and store.n_steps == 36
    assert store.keys["obs"] == (3,) and store.keys["action"] == (1,)
    assert store.meta["env_id"] == "Pendulum-v1"
    assert store["truncated"].nonzero()[0].tolist() == [11, 23, 35]
    first = minari.load_dataset("test/pendulum-random-v0")[0]
    np.testing.assert_allclose(store.episode(0)["obs"], first.observations[:-1], rtol=1e-6)
    np.testing.assert_allclose(store.episode(0)["reward"], first.rewards, rtol=1e-6)


def test_minari_missing_episode_is_reported(tmp_path):
    folder = tmp_path / "ds" / "data"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"total_episodes": 2, "data_format": "hdf5"}))
    with h5py.File(folder / "main_data.hdf5", "w") as f:
        g = f.create_group("episode_0")
        g["observations"] = np.zeros((4, 2))
        g["actions"] = np.zeros((3, 1))
        g["rewards"] = np.zeros(3)
        g["terminations"] = np.zeros(3, bool)
        g["truncations"] = np.array([0, 0, 1], bool)
    with pytest.raises(DatasetError, match="1 episodes but metadata.json says 2"):
        import_dataset(tmp_path / "ds", "minari", tmp_path / "o.zarr")


def write_robomimic(path, lengths=(4, 6, 5)):
    g = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {}})
        for i, n in enumerate(lengths):
            d = data.create_group(f"demo_{[0, 10, 2][i]}")  # numeric order: 0, 2, 10
            d["obs/robot0_eef_pos"] = np.full((n, 3), i, np.float64)
            d["obs/agentview_image"] = np.zeros((n, 8, 8, 3), np.uint8)
            d["actions"] = g.uniform(-1, 1, size=(n, 7))
            d["rewards"] = np.zeros(n)
            d["dones"] = np.eye(n)[-1] if i != 1 else np.zeros(n)
            d["states"] = np.zeros((n, 9))
            d.attrs["num_samples"] = n


def test_robomimic(tmp_path):
    write_robomimic(tmp_path / "lift.hdf5")
    store = import_dataset(tmp_path / "lift.hdf5", "robomimic", tmp_path / "o.zarr")
    assert store.n_episodes == 3 and store.n_steps == 15
    np.testing.assert_array_equal(store.episode_ends, [4, 9, 15])  # demo_0 (4), demo_2 (5), demo_10 (6)
    assert store.episode(1)["obs/robot0_eef_pos"][0, 0] == 2
    assert store.keys["obs/agentview_image"] == (8, 8, 3) and store["obs/agentview_image"].dtype == np.uint8
    assert store.meta["env_args"]["env_name"] == "Lift"
    assert store["truncated"].nonzero()[0].tolist() == [14]  # demo_10 never says done


def test_robomimic_missing_actions(tmp_path):
    write_robomimic(tmp_path / "lift.hdf5")
    with h5py.File(tmp_path / "lift.hdf5", "a") as f:
        del f["data/demo_2/actions"]
    with pytest.raises(DatasetError, match="missing key 'actions' in /data/demo_2"):
        import_dataset(tmp_path / "lift.hdf5", "robomimic", tmp_path / "o.zarr")


def test_dppo_npz(tmp_path):
    np.savez(tmp_path / "train.npz", states=np.arange(20, dtype=np.float32).reshape(10, 2), actions=np.zeros((10, 3)), traj_lengths=np.array([4, 6]))
    np.savez(tmp_path / "normalization.npz", obs_min=np.zeros(2), obs_max=np.ones(2))
    store = import_dataset(tmp_path / "train.npz", "npz", tmp_path / "o.zarr")
    np.testing.assert_array_equal(store.episode_ends, [4, 10])
    assert store.meta["dppo_normalization"]["obs_max"] == [1.0, 1.0]
    assert store["truncated"].nonzero()[0].tolist() == [3, 9]


def test_dppo_npz_length_mismatch(tmp_path):
    np.savez(tmp_path / "train.npz", states=np.zeros((10, 2)), actions=np.zeros((10, 3)), traj_lengths=np.array([4, 5]))
    with pytest.raises(DatasetError, match="'states' has 10 steps but traj_lengths sums to 9"):
        import_dataset(tmp_path / "train.npz", "npz", tmp_path / "o.zarr")


def test_import_cli_prints_summary(tmp_path, capsys):
    write_d4rl(tmp_path / "walker2d_expert-v2.hdf5")
    assert main(["data", "import", str(tmp_path / "walker2d_expert-v2.hdf5"), "--format", "d4rl", "--out", str(tmp_path / "w.zarr.zip")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 3 and out["steps"] == 25 and out["keys"]["obs"] == [11]
    assert EpisodeStore(tmp_path / "w.zarr.zip").meta["ref_returns"]["expert"] == 4592.3


def test_import_and_merge_never_replace_what_exists_without_force(tmp_path, capsys):
    write_d4rl(tmp_path / "walker2d_expert-v2.hdf5")
    src = str(tmp_path / "walker2d_expert-v2.hdf5")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    assert main(["data", "import", src, "--format", "d4rl", "--out", str(user)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--force" in err
    assert (user / "notes.txt").read_text() == "keep me"  # untouched
    store = tmp_path / "w.zarr.zip"
    assert main(["data", "import", src, "--format", "d4rl", "--out", str(store)]) == 0
    before = store.read_bytes()
    assert main(["data", "merge", str(store), str(store), "--out", str(store)]) == 2
    assert store.read_bytes() == before
    assert main(["data", "merge", str(store), str(store), "--out", str(tmp_path / "ww.zarr.zip")]) == 0
    assert main(["data", "import", src, "--format", "d4rl", "--out", str(user), "--force"]) == 0  # said so: replaced
    assert EpisodeStore(user).n_steps == 25 and not (user / "notes.txt").exists()
