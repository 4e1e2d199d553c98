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


def test_image_observations_through_history_chunks_and_workers():
    """lift_img: state (9) + object (10) + agentview + wrist 84x84 uint8, the same on both backends, through ObsHistory and ActionChunk
    (final_obs included) and the rollout buffer's stacking."""
    from rlft.envs.obs import obs_stack
    from rlft.envs.wrappers import ActionChunk, ObsHistory

    shapes = {"state": (9,), "object": (10,), "agentview": (84, 84, 3), "robot0_eye_in_hand": (84, 84, 3)}
    results = {}
    for backend in ("gymnasium", "workers"):
        with make("lift_img", 2, backend=backend, threads=2, seed=5, max_episode_steps=6) as batched:
            assert batched.obs_shapes == shapes and batched.obs_dim is None
            env = ActionChunk(ObsHistory(batched, 2), 4)
            obs, _ = env.reset()
            steps = [obs]
            for _ in range(2):  # 8 > 6 steps: the time limit ends both episodes inside the second chunk
                obs, reward, terminated, truncated, info = env.step(torch.zeros(2, 4, 7))
                steps.append(obs)
            assert truncated.all() and torch.equal(info["steps"], torch.tensor([2, 2]))
            for key, shape in shapes.items():
                assert obs[key].shape == (2, 2, *shape) and info["final_obs"][key].shape == (2, 2, *shape)
                assert obs[key].dtype == (torch.float32 if key in ("state", "object") else torch.uint8)
            assert not torch.equal(info["final_obs"]["agentview"], obs["agentview"])  # the ended episode's frames, not the new one's
            assert obs["agentview"].float().std() > 10  # a rendered scene, not a blank frame
            stacked = obs_stack(steps)
            assert stacked["robot0_eye_in_hand"].shape == (3, 2, 2, 84, 84, 3)
            results[backend] = (obs, info["final_obs"])
    for key in shapes:
        assert torch.equal(results["gymnasium"][0][key], results["workers"][0][key])
        assert torch.equal(results["gymnasium"][1][key], results["workers"][1][key])


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


IMAGE_SHAPES = {"state": (9,), "agentview": (84, 84, 3), "robot0_eye_in_hand": (84, 84, 3)}


def image_flow_policy():
    """A fresh, small image flow policy with lift_img's observation keys (ResNet per camera, 16 features)."""
    from omegaconf import OmegaConf

    from rlft.config import CONFIG_DIR
    from rlft.policies.policy import Policy

    spec = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "policy" / "flow_mlp.yaml"))
    spec |= {"obs_keys": list(IMAGE_SHAPES), "encoder": {"type": "image", "net": "resnet", "features": 16, "shift": 4}}
    spec["backbone"] |= {"hidden": 64}
    box = {"min": -np.ones(9), "max": np.ones(9), "mean": np.zeros(9), "std": np.ones(9)}
    torch.manual_seed(0)
    return Policy(spec, IMAGE_SHAPES, 7, {"state": box, "action": {k: v[:7] for k, v in box.items()}})


def test_image_policy_ppo_update_trains_the_encoders(tmp_path):
    """ReinFlow on lift_img with a (fresh) image flow policy: one iteration's PPO update changes the actor's camera
    encoders and the critic's own."""
    from rlft.algos.onpolicy.finetune import ChainPPOLearner
    from rlft.config import compose

    overrides = ["algo=reinflow", f"base={tmp_path}", "env=lift_img", "train.n_envs=2", "train.n_steps=3", "train.backend=gymnasium"]
    overrides += ["algo.update_epochs=2", "algo.batch_size=3", "algo.critic_hidden=32", "algo.critic_layer_norm=true", "algo.actor_lr=1e-3"]
    learner = ChainPPOLearner(compose("finetune", overrides), image_flow_policy(), np.random.default_rng(0), torch.device("cpu"))
    try:
        actor_cnn = {k: v.clone() for k, v in learner.provider.actor.encoder.state_dict().items()}
        critic_cnn = {k: v.clone() for k, v in learner.critic.encoder.state_dict().items()}
        metrics, env_steps, _ = learner.iteration(1)
        assert env_steps == 2 * 3 * 4 and np.isfinite(metrics["loss/value"])
        changed = lambda before, module: [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]  # noqa: E731
        assert any("nets.agentview" in k for k in changed(actor_cnn, learner.provider.actor.encoder))
        assert any("nets.robot0_eye_in_hand" in k for k in changed(actor_cnn, learner.provider.actor.encoder))
        assert any("nets.agentview" in k for k in changed(critic_cnn, learner.critic.encoder))
    finally:
        learner.close()


def test_finetune_refuses_an_image_base_it_cannot_take(tmp_path, capsys):
    """An image base with a state-only algorithm, or on the state env, is one line before anything runs."""
    from rlft.runtime.checkpoint import write_spec

    write_spec(tmp_path / "img", image_flow_policy(), {"env": "lift_img"})
    for overrides, expected in (
        (["algo=resip", "env=lift_img"], "algo=resip fine-tunes state policies so far"),
        (["algo=reinflow", "env=lift"], "but env=lift observes {'obs': (19,)}"),
    ):
        assert main(["finetune", f"base={tmp_path / 'img'}", f"run.dir={tmp_path / 'runs'}", *overrides]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_collect_records_image_demonstrations(tmp_path, capsys):
    """rlft collect env=lift_img: the scripted demonstrator acts on the state and object keys; the store holds every
    observation key (cameras uint8 84x84, upright and varying), only successes, and statistics for the float keys."""
    args = ["collect", "env=lift_img", "env.max_episode_steps=40", "demos.n=1", "demos.quality=expert", "datasets.n_envs=1"]  # one short round
    assert main([*args, f"run.dir={tmp_path}", "run.name=d"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["episodes"] == 1 and line["return_mean"] == 1.0
    store = EpisodeStore(tmp_path / "d" / "data" / "liftimage-v0-expert.zarr.zip")
    data = {k: store[k][:] for k in ("state", "object", "agentview", "robot0_eye_in_hand", "action", "terminated")}
    assert data["agentview"].dtype == np.uint8 and data["agentview"].shape[1:] == (84, 84, 3)
    assert data["robot0_eye_in_hand"].shape == (len(data["action"]), 84, 84, 3)
    assert data["state"].shape[1:] == (9,) and data["object"].shape[1:] == (10,)
    assert data["agentview"][0].astype(float).std() > 10 and not np.array_equal(data["agentview"][0], data["agentview"][-1])
    assert data["terminated"].sum() == 1 and data["terminated"][-1] and "agentview" not in store.stats and "state" in store.stats
