"""Collection on a tiny budget: SB3 SAC trains under fit and resumes exactly, snapshots are evaluated, datasets are recorded."""

import contextlib
import io
import json
import tempfile

import numpy as np
import pytest
import torch

import rlft.algos.expert as expert_module
from rlft.algos.replay import Replay
from rlft.cli import main
from rlft.datasets.record import record
from rlft.datasets.store import EpisodeStore
from rlft.policies.acting import ActingPolicy
from rlft.policies.expert import ExpertPolicy
from rlft.runtime.checkpoint import latest_checkpoint, load_checkpoint, load_weights, read_weights, save_checkpoint
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
ALL_KINDS = "datasets.kinds=[expert,medium,medium-replay]"


def no_sb3_pickles(run) -> bool:
    return not [p for p in run.rglob("*") if p.suffix in (".pkl", ".zip") and not p.name.endswith(".zarr.zip")]


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """One uninterrupted tiny collect run with every dataset kind: (run dir, its stdout lines)."""
    root = tmp_path_factory.mktemp("collect")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(root))  # where SB3's default logger would make SB3-<time>
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(["collect", "env=hopper", f"run.dir={root}", "run.name=c", ALL_KINDS, *TINY]) == 0
    assert not list(root.glob("SB3-*"))  # SB3 wrote no stray log folders
    return root / "c", [json.loads(line) for line in stdout.getvalue().splitlines()]


def test_collect_tiny_budget(collected):
    run, lines = collected
    assert [line["dataset"] for line in lines] == ["expert", "medium", "medium-replay"]
    rows = read_metrics(run)
    # one fit step = a block of gcd(200, 400, 600) = 200 env steps; every block is logged, snapshots evaluated
    assert [m["step"] for m in rows] == [1, 2, 3] and [m["env_steps"] for m in rows] == [200, 400, 600]
    assert all("expert/eval_return" in m and m["expert/train_episodes"] > 0 for m in rows)
    # SAC learns: the critic's TD loss falls between the first updates (after learning_starts) and the end
    assert rows[-1]["loss/critic"] < rows[1]["loss/critic"]
    assert (run / "config.yaml").exists() and [p.name for p in run.glob("checkpoints/step_*")] and no_sb3_pickles(run)
    assert {p.stem for p in (run / "expert" / "snapshots").glob("*.safetensors")} == {"step_000000200", "step_000000400", "step_000000600"}
    refs = []
    for kind in ("expert", "medium"):
        store = EpisodeStore(run / "data" / f"hopper-v5-{kind}.zarr.zip")
        assert store.n_steps == 300 and store.keys == {"obs": (11,), "action": (3,), "reward": (), "terminated": (), "truncated": ()}
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


def test_medium_replay_comes_from_the_checkpointed_replay(collected):
    run, _ = collected
    replay = EpisodeStore(run / "data" / "hopper-v5-medium-replay.zarr.zip")
    medium_step = replay.meta["collection"]["policy_step"]
    assert replay.n_steps == medium_step and replay["action"].min() >= -1 and replay["action"].max() <= 1
    ends = replay.episode_ends - 1
    assert np.all(replay["terminated"][ends] | replay["truncated"][ends])
    # the rows are the safetensors replay's: SB3's own transitions, in order (next obs = following obs within an episode)
    held = Replay(600)
    load_weights(latest_checkpoint(run), {"replay": held})
    assert held.size == 600 and held.data["observations"].dtype == torch.float64
    np.testing.assert_array_equal(replay["obs"], held.data["observations"][:medium_step, 0].float().numpy())
    inside = np.setdiff1d(np.arange(medium_step - 1), ends)
    np.testing.assert_array_equal(held.data["next_observations"][inside, 0], held.data["observations"][inside + 1, 0])


def test_collect_resumes_and_rerecords_without_retraining(collected, tmp_path):
    import shutil

    run = tmp_path / "c"
    shutil.copytree(collected[0], run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace(str(collected[0].parent), str(tmp_path)))  # the copy is a run of tmp_path
    args = ["collect", "env=hopper", f"run.dir={tmp_path}", "run.name=c", ALL_KINDS, *TINY]
    # a second start without --resume refuses to overwrite; with --resume it finishes from the checkpoint
    # and may re-record with other dataset settings, but not change the training
    assert main(args) == 2
    stamp = (run / "expert" / "snapshots" / "step_000000600.json").stat().st_mtime_ns
    assert main([*args, "datasets.steps=201", "--resume"]) == 0
    assert EpisodeStore(run / "data" / "hopper-v5-expert.zarr.zip").n_steps == 201
    assert (run / "expert" / "snapshots" / "step_000000600.json").stat().st_mtime_ns == stamp
    assert read_metrics(run) == read_metrics(collected[0])
    assert main([*args, "expert.tau=0.01", "--resume"]) == 2


def test_interrupted_expert_training_resumes_exactly(collected, tmp_path, monkeypatch):
    """Killed after the checkpoint at block 2, resumed: the same weights, optimizers, replay and metrics as without the kill."""
    real_evaluate = expert_module.evaluate
    calls = []

    def crash_at_third_snapshot(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the snapshot at env step 600 (block 3); the last checkpoint was at block 2
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    args = ["collect", f"run.dir={tmp_path}", "run.name=c", *TINY]
    monkeypatch.setattr(expert_module, "evaluate", crash_at_third_snapshot)
    assert main(args) == 130
    run = tmp_path / "c"
    assert [m["step"] for m in read_metrics(run)] == [1, 2]
    monkeypatch.setattr(expert_module, "evaluate", real_evaluate)
    early = run / "expert" / "snapshots" / "step_000000200.json"
    stamp = early.stat().st_mtime_ns
    assert main([*args, "--resume"]) == 0
    assert early.stat().st_mtime_ns == stamp  # training went on from block 2, not from scratch
    assert read_metrics(run) == read_metrics(collected[0])  # every number of every block, bit for bit
    resumed, uninterrupted = latest_checkpoint(run), latest_checkpoint(collected[0])
    a, b = read_weights(resumed), read_weights(uninterrupted)
    assert sorted(a) == sorted(b) and {k.split(".")[0] for k in a} == {"sac", "replay", "counters", "env"}
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    opt_a, opt_b = (torch.load(c / "trainer.pt", weights_only=True)["optimizers"] for c in (resumed, uninterrupted))
    for name in ("actor", "critic", "ent_coef"):
        for s, t in zip(opt_a[name]["state"].values(), opt_b[name]["state"].values()):
            assert all(torch.equal(s[k], t[k]) for k in s)
    assert int(a["counters.num_timesteps"]) == 600 and int(a["counters.n_updates"]) == 400 and int(a["replay._size"]) == 600
    assert EpisodeStore(run / "data" / "hopper-v5-medium.zarr.zip").n_steps == 300 and no_sb3_pickles(run)


def test_replay_round_trips_through_a_checkpoint(tmp_path):
    """The ring wraps around and comes back whole; backing an SB3 buffer, SB3's writes land in the module and reload into SB3."""
    import gymnasium as gym
    from stable_baselines3.common.buffers import ReplayBuffer

    ring = Replay(5)
    for i in range(7):
        ring.add(x=torch.full((1, 2), float(i)), done=torch.tensor([i % 2 == 0]))
    save_checkpoint(tmp_path / "ring", 1, {"replay": ring})
    again = Replay(5)
    load_checkpoint(tmp_path / "ring", {"replay": again})
    assert (again.pos, again.size) == (2, 5) and torch.equal(again.data["x"], ring.data["x"]) and again.data["done"].dtype == torch.bool

    spaces = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    buffer = ReplayBuffer(8, *spaces, device="cpu", n_envs=2)  # SB3 rows: 8 // 2 = 4, each holding both sub-envs
    backed = Replay.backing(buffer)
    rng = np.random.default_rng(0)
    for _ in range(3):
        buffer.add(rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), rng.uniform(-1, 1, (2, 2)), rng.normal(size=2), np.array([0.0, 1.0]), [{}, {}])
    assert (backed.pos, backed.size) == (3, 3)
    np.testing.assert_array_equal(backed.data["observations"][:3].numpy(), buffer.observations[:3])
    save_checkpoint(tmp_path / "sb3", 1, {"replay": backed})
    fresh = ReplayBuffer(8, *spaces, device="cpu", n_envs=2)
    load_checkpoint(tmp_path / "sb3", {"replay": Replay.backing(fresh)})
    assert (fresh.pos, fresh.full) == (3, False)
    for field in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(fresh, field), getattr(buffer, field))
    np.random.seed(0)
    batch = fresh.sample(4)
    np.random.seed(0)
    assert torch.equal(batch.observations, buffer.sample(4).observations)


def test_expert_is_an_acting_policy_and_records_through_batched_envs(tmp_path):
    import gymnasium as gym
    from stable_baselines3 import SAC

    model = SAC("MlpPolicy", gym.make("Hopper-v5"), policy_kwargs={"net_arch": [16, 16]}, seed=0, device="cpu")
    expert = ExpertPolicy.from_sb3(model, {"step": 0})
    expert.save(tmp_path / "e")
    again = ExpertPolicy.load(tmp_path / "e")
    assert isinstance(again, ActingPolicy) and (again.obs_horizon, again.act_steps, again.horizon, again.default_stochastic) == (1, 1, 1, False)
    obs = torch.as_tensor(np.random.default_rng(0).normal(size=(5, 1, 11)), dtype=torch.float32)
    mean = again.sample(obs)
    assert mean.shape == (5, 1, 3) and torch.equal(mean, expert.sample(obs))
    np.testing.assert_allclose(mean[:, 0].numpy(), model.predict(obs[:, 0].numpy(), deterministic=True)[0], rtol=1e-6, atol=1e-6)
    draws = [again.sample(obs, stochastic=True, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(*draws) and not torch.equal(draws[0], mean) and draws[0].abs().max() <= 1

    data, ends = record(again, "hopper", steps=51, n_envs=4, seed=0, stochastic=True)  # 51: the last round steps 3 of 4 sub-envs
    assert ends[-1] == len(data["obs"]) == 51 and {k: v.dtype for k, v in data.items()} == {
        "obs": np.float32, "action": np.float32, "reward": np.float32, "terminated": np.bool_, "truncated": np.bool_
    }  # fmt: skip
    flags = data["terminated"] | data["truncated"]
    assert np.array_equal(np.flatnonzero(flags) + 1, ends) and not (data["terminated"] & data["truncated"]).any()
    # the stored observations are the ones the env produced: replaying the first episode's actions
    # in a gymnasium env with the same seed (sub-env 0 gets the seed itself) reproduces them step by step
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=0)
    for t in range(ends[0]):
        np.testing.assert_allclose(data["obs"][t], obs, rtol=1e-5, atol=1e-5)
        obs, reward, *_ = env.step(data["action"][t])
        assert data["reward"][t] == pytest.approx(reward, rel=1e-5)


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


def test_collect_rejects_bad_configs_before_training(tmp_path, capsys):
    assert main(["collect", f"run.dir={tmp_path}", "datasets.kinds=[expert,great]", *TINY]) == 2
    assert "unknown kind 'great'" in capsys.readouterr().err
    assert not (tmp_path / "collect-hopper").exists()  # nothing written for a config that cannot run
    assert main(["collect", f"run.dir={tmp_path}", "run.name=l", "expert.load=hopper-v5-expert"]) == 2
    assert main(["collect", f"run.dir={tmp_path}", "run.name=p", "env=pointmass", *TINY]) == 2
    assert "MuJoCo tasks" in capsys.readouterr().err and not (tmp_path / "p").exists()
    shared = tmp_path / "shared"  # out= a folder that already holds a dataset of this name
    shared.mkdir()
    (shared / "hopper-v5-expert.zarr.zip").write_text("the user's")
    load = ["expert.load=hopper-v5-expert", "datasets.kinds=[expert]", "datasets.steps=50", f"out={shared}"]
    assert main(["collect", f"run.dir={tmp_path}", "run.name=o", *load]) == 2
    assert "already exists" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert (shared / "hopper-v5-expert.zarr.zip").read_text() == "the user's"
    assert main(["collect", f"run.dir={tmp_path}", "run.name=o", *load, "force=true"]) == 0


def test_medium_is_the_snapshot_closest_to_the_target(tmp_path):
    """pick_medium measures every snapshot with sampled actions (batched, seeded) and keeps the one nearest the target."""
    import gymnasium as gym
    from stable_baselines3 import SAC

    env = gym.make("Hopper-v5")
    for step, seed in ((1, 0), (2, 1), (3, 2)):
        model = SAC("MlpPolicy", env, policy_kwargs={"net_arch": [8]}, seed=seed, device="cpu")
        ExpertPolicy.from_sb3(model, {"step": step}).save(tmp_path / "snapshots" / f"step_{step:09d}")
    expert = ExpertPolicy.load(tmp_path / "snapshots" / "step_000000003")
    medium = expert_module.pick_medium(tmp_path / "snapshots", expert, "hopper", fraction=1.0, episodes=2, seed=0)
    selection = json.loads((tmp_path / "medium_selection.json").read_text())
    gaps = {s["step"]: abs(s["sampled_return_mean"] - selection["target_return"]) for s in selection["snapshots"]}
    assert medium.info["step"] == min(gaps, key=gaps.get) == 3  # the expert itself is exactly on target
    assert gaps[3] == 0.0


def test_collect_records_a_scripted_demonstrator(tmp_path, capsys):
    """expert.scripted: the toy's demonstrator is recorded as it acts (70 degrees off the goal), the data's return is the
    "expert" reference; the safe toy's mixed demonstrator records costs, half its episodes entering the hazard."""
    from rlft.envs.toy import HAZARD, HAZARD_RADIUS

    args = ["collect", "expert.scripted=curling", "datasets.kinds=[scripted]", "datasets.steps=600", "datasets.random_episodes=5"]
    assert main([*args, "env=pointmass", f"run.dir={tmp_path}", "run.name=pm"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    store = EpisodeStore(tmp_path / "pm" / "data" / "pointmass-v0-curling.zarr.zip")
    assert line["dataset"] == "scripted" and store.n_steps == 600 and "scripted demonstrator 'curling'" in store.meta["collection"]["policy"]
    obs, action = store["obs"], store["action"]
    to_goal = obs[:, 2:] / np.linalg.norm(obs[:, 2:], axis=1, keepdims=True)
    unclipped = np.abs(action).max(1) < 0.99
    cross = to_goal[:, 0] * action[:, 1] - to_goal[:, 1] * action[:, 0]
    angle = np.degrees(np.arctan2(cross, (to_goal * action).sum(1)))[unclipped]
    assert 55 < np.median(angle) < 85  # it curls counter-clockwise around the goal
    ends = store.episode_starts[1:].tolist() + [store.n_steps]
    complete = ~store["truncated"][np.array(ends) - 1] | (np.diff([0, *ends]) >= 50)
    assert store.meta["ref_returns"]["expert"] == pytest.approx(store.episode_returns()[complete].mean(), rel=1e-5)
    assert store.meta["ref_returns"]["random"] < store.meta["ref_returns"]["expert"]

    safe = ["collect", "env=pointmass_safe", "expert.scripted=mixed", "datasets.kinds=[scripted]", "datasets.steps=2000", "datasets.n_envs=8"]
    assert main([*safe, "datasets.random_episodes=5", f"run.dir={tmp_path}", "run.name=safe"]) == 0
    store = EpisodeStore(tmp_path / "safe" / "data" / "safepointmass-v0-mixed.zarr.zip")
    inside = np.linalg.norm(store["obs"][:, :2] - HAZARD, axis=1) < HAZARD_RADIUS
    assert 0.3 < (store.episode_costs() > 0).mean() < 0.7 and inside.any()


@pytest.mark.parametrize(
    "args, message",
    [
        (["env=pointmass", "expert.scripted=curling", "datasets.kinds=[expert]"], "datasets.kinds=[scripted]"),
        (["env=pointmass", "datasets.kinds=[scripted]"], "expert.scripted is not set"),
        (["env=pointmass", "expert.scripted=straight", "datasets.kinds=[scripted]"], "env=pointmass expert.scripted=curling"),
        (["env=hopper", "expert.scripted=curling", "datasets.kinds=[scripted]"], "env=hopper has no such scripted demonstrator"),
        (["env=pointmass", "expert.scripted=curling", "datasets.kinds=[scripted]", "expert.load=hopper-v5-expert"], "expert.load=null"),
    ],
)
def test_scripted_collect_refuses_bad_configs(tmp_path, capsys, args, message):
    assert main(["collect", *args, f"run.dir={tmp_path}", "run.name=x"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
