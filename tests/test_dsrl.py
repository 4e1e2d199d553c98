"""DSRL and DSRL-NA: the SB3 adapter executes the base policy exactly, the bound holds, both learn on the toy task and
act the same exported."""

import json

import numpy as np
import pytest
import torch

from rlft.algos.dsrl import LatentNoiseVecEnv, SteeredPolicy, load_steered_policy
from rlft.algos.dsrl_na import NoiseActor
from rlft.algos.replay import Replay
from rlft.cli import main
from rlft.envs import make
from rlft.envs.wrappers import ActionChunk, ObsHistory
from rlft.runtime.checkpoint import load_policy
from rlft.runtime.evaluate import evaluate
from rlft.runtime.run import read_metrics

TOY_DSRL = [
    "env=pointmass",
    "train.n_steps=50",
    "eval.episodes=0",
    "algo.warmup_steps=100",
    "algo.utd=8",
    "algo.hidden=64",
    "algo.lr=0.001",
]


def test_adapter_executes_the_base_policy_for_the_given_noise(toy):
    """Stepping the adapter with noise w = stepping the env with base.sample(obs, noise=w): same obs, same rewards."""
    base = load_policy(toy / "pre-flow_mlp")
    gamma = 0.9
    venv = LatentNoiseVecEnv("pointmass", 3, base, bound=1.5, gamma=gamma)
    venv.seed(7)
    venv.reset()
    history = ObsHistory(make("pointmass", 3, seed=7), base.obs_horizon)
    history.reset()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):  # long enough for episodes to end and reset inside chunks
        noise = torch.randn(3, base.horizon, base.action_dim, generator=g).clamp(-1.5, 1.5)
        venv_obs = venv.raw_obs
        chunk = base.sample(venv_obs, noise=noise)
        feats, reward, done, infos = venv.step(noise.flatten(1).numpy())
        assert torch.equal(venv.last["executed"], base.action_norm(chunk[:, : base.act_steps]))
        # the same chunk in a plain env, one step at a time, discounted by hand
        expected_reward = np.zeros(3)
        running = np.ones(3, bool)
        for k in range(base.act_steps):
            o, r, te, tr, info = history.step(chunk[:, k], None if k == 0 or running.all() else torch.from_numpy(running))
            expected_reward += running * gamma**k * r.numpy()
            running &= ~info["done"].numpy()
        np.testing.assert_allclose(reward, expected_reward, rtol=1e-6)
        assert torch.equal(venv.raw_obs, o)
    assert venv.pop_episodes(), "episodes should have ended"


def test_adapter_counts_env_steps_and_marks_time_limits():
    from rlft.policies.policy import Policy

    stats = {k: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)} for k, d in (("obs", 4), ("action", 2))}
    cfg = {
        "obs_keys": ["obs"], "obs_horizon": 1, "horizon": 3, "act_steps": 3, "normalizer": {"obs": "limits", "action": "limits"},
        "encoder": {"type": "state"}, "backbone": {"type": "mlp", "hidden": 16, "depth": 1}, "head": {"type": "flow", "steps": 2},
    }  # fmt: skip
    base = Policy(cfg, {"obs": (4,)}, 2, stats)
    venv = LatentNoiseVecEnv("pointmass", 2, base, bound=1.0, gamma=0.99)
    venv.batched.close()
    venv.batched = make("pointmass", 2, seed=0, max_episode_steps=4)  # time limit inside the second chunk
    venv.env = ActionChunk(ObsHistory(venv.batched, 1), 3, gamma=0.99)
    venv.reset()
    _, _, done, infos = venv.step(np.zeros((2, 6), np.float32))
    assert not done.any() and [i["env_steps"] for i in infos] == [3, 3]
    _, _, done, infos = venv.step(np.zeros((2, 6), np.float32))
    assert done.all() and [i["env_steps"] for i in infos] == [1, 1]  # the chunk stopped at the time limit
    assert all(i["TimeLimit.truncated"] and i["terminal_observation"].shape == (4,) for i in infos)
    assert venv.take_env_steps() == 8 and venv.take_env_steps() == 0


def test_steered_noise_respects_the_bound(toy):
    base = load_policy(toy / "pre-flow_mlp")
    actor = NoiseActor(4, base.horizon * base.action_dim, 16, 2, True, 0.0)
    with torch.no_grad():
        actor.trunk[-1].weight.mul_(100.0)  # push the mean far out
    steered = SteeredPolicy(base, actor, bound=1.5, steps=None)
    obs = torch.randn(64, 1, 4) * 3
    for stochastic in (False, True):
        noise = steered.noise(obs, stochastic)
        assert noise.abs().max() <= 1.5 and noise.abs().max() > 1.4
    _, log_prob = actor.sample_log_prob(torch.randn(8, 4))
    assert torch.isfinite(log_prob).all()


def test_tensor_replay_round_trips_through_its_state_dict():
    replay = Replay(5)
    for i in range(7):  # wraps around
        replay.add(x=torch.full((1, 2), float(i)), r=torch.tensor([float(i)]))
    state = replay.state_dict()
    assert state["x"].shape == (5, 2) and int(state["_pos"]) == 2
    copy = Replay(5)
    copy.load_state_dict(state)
    assert torch.equal(copy.data["x"], replay.data["x"]) and (copy.pos, copy.size) == (2, 5)


@pytest.mark.parametrize("algo", ["dsrl", "dsrl_na"])
def test_dsrl_raises_the_return_on_the_toy_task(toy, algo, capsys):
    args = ["finetune", f"algo={algo}", f"base={toy / 'pre-flow_mlp'}", *TOY_DSRL, "train.iterations=8", "train.checkpoint_every=4", f"run.dir={toy}"]
    args += ["algo.distill_steps=4"] if algo == "dsrl_na" else []
    assert main([*args, f"run.name={algo}"]) == 0
    run = toy / algo
    before = evaluate(load_policy(toy / "pre-flow_mlp"), "pointmass", 32, seed=5)["return_mean"]
    steered = load_steered_policy(run)
    after = evaluate(steered, "pointmass", 32, seed=5)["return_mean"]
    assert after > before + 5, f"{algo}: {before:.1f} -> {after:.1f}"
    rows = read_metrics(run)
    assert rows[-1]["env_steps"] > rows[0]["env_steps"] > 0 and rows[0]["warmup_env_steps"] > 0
    # the base's weights never change
    tuned_base = steered.base
    for (name, p), q in zip(load_policy(toy / "pre-flow_mlp").state_dict().items(), tuned_base.state_dict().values()):
        assert torch.equal(p, q), name
    # rlft eval of the run evaluates the steered policy
    capsys.readouterr()
    common = ["n_episodes=32", "n_envs=32", "seed=5", "--json"]
    assert main(["eval", f"run={run}", *common]) == 0
    torch_result = json.loads(capsys.readouterr().out)
    assert torch_result["return_mean"] == pytest.approx(after)
    # and its export (noise actor + frozen base in one graph) acts the same
    fmt = "onnx" if algo == "dsrl" else "torchscript"
    assert main(["export", f"run={run}", f"format={fmt}", f"out={run / 'exported'}"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["kind"] == "steered" and line["steps"] == steered.default_steps and line["parity_max_abs_diff"] <= 1e-4
    assert main(["eval", f"run={run / 'exported'}", *common]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["length_mean"] == torch_result["length_mean"] and exported["return_mean"] == pytest.approx(after, rel=1e-4)
    if algo == "dsrl":  # bench latency times the same graph
        assert main(["bench", "latency", f"run={run}", "repeats=5", "warmup=1", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["steps"] == steered.default_steps


def test_dsrl_resumes_from_its_checkpoint(toy, monkeypatch):
    """An interrupted + resumed run against an uninterrupted one, metric by metric.

    Exact, and compared exactly: every iteration up to the interruption (train and eval returns, SAC's
    losses, env steps: two runs of one seed are identical), and what the checkpoint restores (SB3's
    counters, the replay's fill, no second warm-up). Not bit-exact: the iterations after the resume. The
    checkpoint restores SAC's weights, optimizers, replay and every RNG, but not the state of the batched
    envs inside LatentNoiseVecEnv, which have no state capture; SB3 resets them when a fresh process starts
    learning, so the resumed run starts new episodes where the uninterrupted one was mid-episode, and the
    numbers after that differ (fresh episodes may not even end within the iteration, so the training returns
    of the resumed iteration may be missing). For it the test compares the evaluation's scale and the env steps.
    """
    from rlft.algos.dsrl import SB3SAC
    from rlft.runtime.checkpoint import latest_checkpoint, read_weights

    args = ["finetune", "algo=dsrl", f"base={toy / 'pre-flow_mlp'}", *TOY_DSRL, "train.n_steps=10", "train.iterations=3", "train.checkpoint_every=1"]
    args += ["eval.episodes=4", "eval.every=1", f"run.dir={toy}"]
    assert main([*args, "run.name=dsrl-full"]) == 0
    real_run, calls = SB3SAC.run, []

    def crash_in_third_iteration(self: SB3SAC, n_steps: int) -> dict[str, float]:
        calls.append(n_steps)
        if len(calls) == 3:  # after the checkpoint of iteration 2
            raise KeyboardInterrupt
        return real_run(self, n_steps)

    with monkeypatch.context() as patch:
        patch.setattr(SB3SAC, "run", crash_in_third_iteration)
        assert main([*args, "run.name=dsrl-cut"]) == 130
    assert [r["step"] for r in read_metrics(toy / "dsrl-cut")] == [1, 2]
    assert main([*args, "run.name=dsrl-cut", "--resume"]) == 0
    full, cut = read_metrics(toy / "dsrl-full"), read_metrics(toy / "dsrl-cut")
    assert [r["step"] for r in cut] == [1, 2, 3] and "warmup_env_steps" not in cut[2]  # no second warm-up
    exact = [{k: v for k, v in row.items() if not k.endswith(("time_s", "_per_s"))} for row in (*full[:2], *cut[:2])]  # all but wall-clock rates
    assert exact[:2] == exact[2:] and {"train/return_mean", "eval/return_mean", "loss/critic"} <= set(exact[0])
    evals = [{k for k in row if k.startswith("eval/")} for row in (full[2], cut[2])]
    assert evals[0] == evals[1] and abs(cut[2]["eval/return_mean"] - full[2]["eval/return_mean"]) < 0.5 * abs(full[2]["eval/return_mean"]) + 5
    assert cut[2]["env_steps"] == pytest.approx(full[2]["env_steps"], abs=12)  # chunks cut short where episodes end
    a, b = read_weights(latest_checkpoint(toy / "dsrl-cut")), read_weights(latest_checkpoint(toy / "dsrl-full"))
    for key in ("counters.num_timesteps", "counters.n_updates", "replay._pos", "replay._size"):
        assert torch.equal(a[key], b[key]), key
