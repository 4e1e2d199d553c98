"""Collection on a tiny budget: SB3 SAC trains, snapshots are evaluated, datasets are recorded."""

import json
import tempfile

import numpy as np
import pytest

from rlft.cli import main
from rlft.datasets.collect import ExpertPolicy, record
from rlft.datasets.store import EpisodeStore
from rlft.runtime.run import read_metrics

TINY = [
    "expert.steps=600",
    "expert.learning_starts=200",
    "expert.snapshot_every=200",
    "expert.checkpoint_every=400",
    "expert.eval_episodes=1",
    "expert.net_arch=[32,32]",
    "datasets.steps=300",
    "datasets.n_envs=4",
    "datasets.random_episodes=3",
    "datasets.medium_eval_episodes=1",
]


def test_collect_tiny_budget(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where SB3's default logger would make SB3-<time>
    args = ["collect", "env=hopper", f"run.dir={tmp_path}", "run.name=c", "datasets.kinds=[expert,medium,medium-replay]", *TINY]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["dataset"] for line in lines] == ["expert", "medium", "medium-replay"]
    run = tmp_path / "c"
    assert [m["step"] for m in read_metrics(run)] == [200, 400, 600]
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "sb3_model.zip").exists()
    refs = []
    for kind in ("expert", "medium"):
        store = EpisodeStore(run / "data" / f"hopper-v5-{kind}.zarr.zip")
        assert store.n_steps >= 300 and store.keys == {"obs": (11,), "action": (3,), "reward": (), "terminated": (), "truncated": ()}
        ends = store.episode_ends - 1
        assert np.all(store["terminated"][ends] | store["truncated"][ends])  # every episode ends with a flag
        assert not np.any((store["terminated"] | store["truncated"])[np.setdiff1d(np.arange(store.n_steps), ends)])
        refs.append(store.meta["ref_returns"])
        assert store.meta["collection"]["policy_step"] in (200, 400, 600)
    assert refs[0] == refs[1] and set(refs[0]) == {"random", "expert"}  # one reference for both datasets
    expert_data = EpisodeStore(run / "data" / "hopper-v5-expert.zarr.zip")
    complete = ~expert_data["truncated"][expert_data.episode_ends - 1]
    returns = expert_data.episode_returns()
    assert refs[0]["expert"] == pytest.approx(returns[complete].mean() if complete.any() else returns.mean())
    assert expert_data.meta["collection"]["command"].startswith("rlft collect env=hopper")
    replay = EpisodeStore(run / "data" / "hopper-v5-medium-replay.zarr.zip")
    medium_step = replay.meta["collection"]["policy_step"]
    assert replay.n_steps == medium_step and replay["action"].min() >= -1 and replay["action"].max() <= 1
    ends = replay.episode_ends - 1
    assert np.all(replay["terminated"][ends] | replay["truncated"][ends])
    # A second start without --resume refuses to overwrite; with --resume it finishes from the checkpoint
    # and may re-record with other dataset settings, but not change the training.
    assert main(args) == 2
    assert main([*args, "datasets.steps=200", "--resume"]) == 0
    assert EpisodeStore(run / "data" / "hopper-v5-expert.zarr.zip").n_steps == 200
    assert [m["step"] for m in read_metrics(run)] == [200, 400, 600]
    assert main([*args, "expert.tau=0.01", "--resume"]) == 2
    assert not list(tmp_path.glob("SB3-*"))  # SB3 wrote no stray log folders


def test_expert_round_trip_and_record(tmp_path):
    import gymnasium as gym
    from stable_baselines3 import SAC

    model = SAC("MlpPolicy", gym.make("Hopper-v5"), policy_kwargs={"net_arch": [16, 16]}, seed=0, device="cpu")
    expert = ExpertPolicy.from_sb3(model, {"step": 0})
    expert.save(tmp_path / "e")
    again = ExpertPolicy.load(tmp_path / "e")
    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    np.testing.assert_array_equal(expert.act(obs, True), again.act(obs, True))
    data, ends = record(lambda o: again.act(o, True), "hopper", steps=50, n_envs=2, seed=0)
    assert ends[-1] == len(data["obs"]) == 50
    # the stored observations are the ones the env produced: replaying the first episode's actions
    # in an env with the same seed reproduces them step by step
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=0)
    for t in range(ends[0]):
        np.testing.assert_allclose(data["obs"][t], obs, rtol=1e-6, atol=1e-6)
        obs, *_ = env.step(data["action"][t])


def test_shipped_datasets_hold_real_trajectories():
    """Consecutive observations differ and follow the env's dynamics: setting the simulator to the state
    of step t (x position is not observed; these tasks do not depend on it) and applying action t gives
    the observation of step t + 1."""
    import gymnasium as gym

    for name in ("hopper-v5-medium", "walker2d-v5-expert"):
        store = EpisodeStore(name)
        assert np.mean(np.all(np.diff(store["obs"], axis=0) == 0, axis=1)) < 0.001
        ep = store.episode(0)
        env = gym.make(store.meta["env_id"]).unwrapped
        env.reset(seed=0)
        nq = env.model.nq
        checked = 0
        for t in range(100):
            if np.abs(ep["obs"][t]).max() >= 10:  # a velocity clipped in the observation: state unknown
                continue
            qpos = np.concatenate([[0.0], ep["obs"][t, : nq - 1]])
            env.set_state(qpos, ep["obs"][t, nq - 1 :])
            obs, *_ = env.step(ep["action"][t])
            # positions closely; velocities loosely (float32 states and contacts make them drift a little)
            np.testing.assert_allclose(obs[: nq - 1], ep["obs"][t + 1, : nq - 1], atol=2e-3)
            np.testing.assert_allclose(obs[nq - 1 :], ep["obs"][t + 1, nq - 1 :], rtol=0.1, atol=0.2)
            checked += 1
        assert checked > 50


def test_collect_rejects_bad_kinds_before_training(tmp_path, capsys):
    assert main(["collect", f"run.dir={tmp_path}", "datasets.kinds=[expert,great]", *TINY]) == 2
    assert "unknown kind 'great'" in capsys.readouterr().err
    assert not (tmp_path / "collect-hopper").exists()  # nothing written for a config that cannot run
    assert main(["collect", f"run.dir={tmp_path}", "run.name=l", "expert.load=hopper-v5-expert"]) == 2


def test_medium_is_the_snapshot_closest_to_the_target(tmp_path):
    """pick_medium measures every snapshot with sampled actions and keeps the one nearest the target."""
    import gymnasium as gym
    from stable_baselines3 import SAC

    from rlft.datasets.collect import pick_medium

    env = gym.make("Hopper-v5")
    for step, seed in ((1, 0), (2, 1), (3, 2)):
        model = SAC("MlpPolicy", env, policy_kwargs={"net_arch": [8]}, seed=seed, device="cpu")
        ExpertPolicy.from_sb3(model, {"step": step}).save(tmp_path / "snapshots" / f"step_{step:09d}")
    expert = ExpertPolicy.load(tmp_path / "snapshots" / "step_000000003")
    medium = pick_medium(tmp_path / "snapshots", expert, "hopper", fraction=1.0, episodes=2, seed=0)
    selection = json.loads((tmp_path / "medium_selection.json").read_text())
    gaps = {s["step"]: abs(s["sampled_return_mean"] - selection["target_return"]) for s in selection["snapshots"]}
    assert medium.info["step"] == min(gaps, key=gaps.get) == 3  # the expert itself is exactly on target
    assert gaps[3] == 0.0


def test_interrupted_expert_training_resumes_from_checkpoint(tmp_path, monkeypatch):
    import rlft.datasets.collect as collect_module

    real_evaluate = collect_module.evaluate
    calls = []

    def crash_at_third_snapshot(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the snapshot at step 600; the last checkpoint was at 400
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    args = ["collect", f"run.dir={tmp_path}", "run.name=c", *TINY]
    monkeypatch.setattr(collect_module, "evaluate", crash_at_third_snapshot)
    assert main(args) == 130
    assert [m["step"] for m in read_metrics(tmp_path / "c")] == [200, 400]
    monkeypatch.setattr(collect_module, "evaluate", real_evaluate)
    early = tmp_path / "c" / "expert" / "snapshots" / "step_000000200.json"
    stamp = early.stat().st_mtime_ns
    assert main([*args, "--resume"]) == 0
    assert early.stat().st_mtime_ns == stamp  # training went on from step 400, not from scratch
    assert [m["step"] for m in read_metrics(tmp_path / "c")] == [200, 400, 600]
    assert EpisodeStore(tmp_path / "c" / "data" / "hopper-v5-medium.zarr.zip").n_steps == 300
