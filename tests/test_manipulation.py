"""The robosuite tasks (lift, can): env contract, success detection, the worker backend, scripted demonstrations."""

import json

import numpy as np
import pytest
import torch

from rlft.algos.expert import ScriptedPolicy
from rlft.cli import main
from rlft.datasets.store import EpisodeStore
from rlft.envs import make
from rlft.envs.backends.workers import split


def run_demonstrator(env, policy, episodes):
    """Finished episodes of ``policy`` (a ScriptedPolicy) in the batched ``env`` until ``episodes`` have ended."""
    obs, _ = env.reset()
    policy.end_episodes(torch.ones(env.n_envs, dtype=torch.bool))
    finished = []
    while len(finished) < episodes:
        obs, reward, terminated, truncated, info = env.step(policy.sample(obs[:, None])[:, 0])
        policy.end_episodes(info["done"])
        finished += env.pop_episodes()
    return finished


def test_lift_env_contract_on_a_short_episode():
    with make("lift", 2, backend="gymnasium", seed=3, max_episode_steps=5) as env:
        assert (env.obs_dim, env.act_dim) == (19, 7)  # robomimic's low-dim keys, as DPPO's lift
        assert torch.equal(env.action_low, -torch.ones(7)) and torch.equal(env.action_high, torch.ones(7))
        obs, _ = env.reset()
        assert obs.shape == (2, 19) and obs.dtype == torch.float32
        assert not torch.equal(obs[0], obs[1])  # sub-env 1 is seeded 4: another cube placement
        assert obs[:, 9:12].sub(obs[:, 0:3]).abs().sum() > 0 and obs[:, 16:19].abs().sum() > 0  # object-to-gripper is set at reset
        for t in range(5):
            obs, reward, terminated, truncated, info = env.step(torch.zeros(2, 7))
            assert torch.equal(reward, torch.zeros(2)) and not terminated.any()
        assert truncated.all() and info["done"].all()  # the time limit
        episodes = env.pop_episodes()
        assert [(e["length"], e["success"], e["return"]) for e in episodes] == [(5, False, 0.0)] * 2
        frame = env.render(1)
        assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8 and frame.std() > 10


def test_reset_seed_fixes_the_episode():
    with make("can", 1, backend="gymnasium") as env:
        first = env.reset(seed=11)[0]
        other = env.reset(seed=12)[0]
        again = env.reset(seed=11)[0]
    assert first.shape == (1, 23) and torch.equal(first, again) and not torch.equal(first, other)


def test_scripted_success_ends_the_episode_with_reward_one():
    with make("lift", 2, backend="gymnasium", seed=0) as env:
        episodes = run_demonstrator(env, ScriptedPolicy("lift", "pick", seed=0, quality="expert"), 2)
    assert all(e["success"] and e["return"] == 1.0 and 10 < e["length"] < 100 for e in episodes)


@pytest.mark.parametrize("task, quality", [("lift", "mixed"), ("can", "expert")])
def test_scripted_demonstrator_succeeds(task, quality):
    with make(task, 2, backend="workers", seed=0, threads=2) as env:
        episodes = run_demonstrator(env, ScriptedPolicy(task, "pick", seed=1, quality=quality), 4)
    assert np.mean([e["success"] for e in episodes]) >= 0.75
    if task == "can":  # carried to the bin: a long way
        assert min(e["length"] for e in episodes if e["success"]) > 60


def test_worker_backend_equals_gymnasium_for_the_same_seed():
    assert split(5, 2) == [(0, 3), (3, 2)] and split(1, 4) == [(0, 1)]
    actions = torch.rand(12, 3, 7, generator=torch.Generator().manual_seed(0)) * 2 - 1
    runs = []
    for backend in ("gymnasium", "workers"):
        with make("lift", 3, backend=backend, seed=7, threads=2, max_episode_steps=6) as env:
            assert env.backend == backend
            obs, _ = env.reset()
            rows = [obs]
            for t, a in enumerate(actions):
                active = None if t % 4 else torch.tensor([True, False, True])  # masked steps too
                obs, reward, terminated, truncated, info = env.step(a, active)
                rows += [obs, info["final_obs"], truncated.float()[:, None]]
            runs.append((torch.cat(rows, 1), [(e["env"], e["length"]) for e in env.pop_episodes()]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert len(runs[0][1]) >= 4  # episodes ended (the time limit) and reset in the workers


def test_auto_backend_uses_workers_for_robosuite():
    with make("lift", 2, seed=0, threads=2) as env:
        assert env.backend == "workers"
        env.reset()
        assert env.step(torch.zeros(2, 7))[0].shape == (2, 19)


def test_collect_records_successful_mixed_demonstrations(tmp_path, capsys):
    assert main(["collect", "env=lift", "demos.n=3", "datasets.n_envs=2", f"run.dir={tmp_path}", "run.name=d"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["dataset"] == "scripted" and line["episodes"] == 3 and line["return_mean"] == 1.0
    store = EpisodeStore(tmp_path / "d" / "data" / "lift-v0-mixed.zarr.zip")
    assert store.meta["ref_returns"] == {"random": 0.0, "expert": 1.0}
    assert "quality mixed" in store.meta["collection"]["policy"]
    ends = store.episode_ends
    assert store["terminated"][ends - 1].all() and store["reward"][:].sum() == 3  # one success step per episode


def test_collect_refuses_bad_demo_settings(tmp_path, capsys):
    assert main(["collect", "env=lift", "demos.quality=great", f"run.dir={tmp_path}"]) == 2
    assert "demos.quality='great': must be one of expert, mixed, worse" in capsys.readouterr().err
    assert main(["collect", "env=lift", "expert.scripted=null", f"run.dir={tmp_path}"]) == 2
    assert "set expert.scripted=pick" in capsys.readouterr().err
    assert main(["collect", "env=square", f"run.dir={tmp_path}"]) == 2  # no demonstrator for square yet
    assert not list(tmp_path.iterdir())


def test_eval_video_of_a_scripted_success(tmp_path):
    from rlft.runtime.evaluate import evaluate
    from rlft.video import read_video

    policy = ScriptedPolicy("lift", "pick", seed=0, quality="expert")
    result = evaluate(policy, "lift", 1, seed=5, backend="gymnasium", n_envs=1, video=tmp_path / "lift.mp4")
    assert result["success_rate"] == 1.0
    frames = read_video(tmp_path / "lift.mp4")
    assert frames.shape[1:] == (256, 256, 3)
    assert len(frames) == result["length_mean"] - 1  # every step but the last: after it the env shows the next episode
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 2  # the arm moved in view
