"""ResiP: a zero residual executes the base exactly (through the chunk queue), PPO on the residual learns the
toy task, `rlft eval` runs the combined policy, its export acts the same, and resume is exact."""

import json
import shutil

import pytest
import torch

from rlft.algos.onpolicy.residual import ResidualProvider, load_residual_policy
from rlft.cli import main
from rlft.envs import make
from rlft.envs.wrappers import ActionChunk, ObsHistory
from rlft.runtime.checkpoint import load_policy
from rlft.runtime.evaluate import evaluate
from rlft.runtime.run import read_metrics

STEPS = 4  # the base sampler's steps


class _BaseReplay:
    """The queue logic written out: which sub-envs replan at each step (chunk used up, or episode ended)."""

    def __init__(self, n: int, act_steps: int):
        self.pos, self.act_steps = torch.full((n,), act_steps), act_steps
        self.chunk = None

    def next(self, obs, plan):
        """``plan(obs_subset) -> normalized chunk [k, H, A]`` for the sub-envs that replan."""
        idx = (self.pos >= self.act_steps).nonzero().flatten()
        if len(idx):
            x = plan(obs[idx])[:, : self.act_steps]
            self.chunk = x.new_zeros(len(obs), *x.shape[1:]) if self.chunk is None else self.chunk
            self.chunk[idx], self.pos[idx] = x, 0
        out = self.chunk[torch.arange(len(obs)), self.pos]
        self.pos += 1
        return out

    def end_episodes(self, done):
        self.pos[done] = self.act_steps


def _toy_env(n):
    # 5-step episodes: with act_steps 2 every episode ends in the middle of a chunk
    env = ActionChunk(ObsHistory(make("pointmass", n, seed=0, max_episode_steps=5), 1), 1)
    obs, _ = env.reset(seed=0)
    return env, obs


@pytest.mark.parametrize("preset", ["flow_mlp", "diffusion_mlp"])
def test_a_zero_residual_executes_the_base_actions_exactly(toy, preset):
    base = load_policy(toy / f"pre-{preset}")
    provider = ResidualProvider(base, STEPS, hidden=32, depth=2, log_std=-1.0, scale=0.1)
    assert base.act_steps == 2 and not any(p.requires_grad for p in base.parameters())

    # the combined policy (residual mean 0) vs the base's own sampler with the same generator
    policy, n = provider.eval_policy(), 3
    env, obs = _toy_env(n)
    policy.end_episodes(torch.ones(n, dtype=torch.bool))
    replay, g, g_ref = _BaseReplay(n, base.act_steps), torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    ends = 0
    for _ in range(12):
        action = policy.sample(obs, generator=g)
        expected = base.to_actions(replay.next(obs, lambda o: base.sample_normalized(o, steps=STEPS, generator=g_ref)))
        assert torch.equal(action, expected[:, None])
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated | truncated
        policy.end_episodes(done)
        replay.end_episodes(done)
        ends += int(done.sum())
    assert ends >= n  # the queue went through episode ends

    # the training provider: base chunks from the global RNG, then the residual's Gaussian draw (mean 0)
    env, obs = _toy_env(n)
    provider.end_episodes(torch.ones(n, dtype=torch.bool))
    replay = _BaseReplay(n, base.act_steps)
    std = torch.exp(torch.tensor(-1.0))
    for step in range(12):
        torch.manual_seed(step)
        action, stored = provider.sample(obs)
        torch.manual_seed(step)
        base_action = replay.next(obs, lambda o: base.sample_normalized(o, base.initial_noise(len(o)), steps=STEPS)).clamp(-1, 1)
        residual = torch.randn(n, base.action_dim) * std
        assert torch.equal(stored["base_action"], base_action) and torch.equal(stored["residual"], residual)
        assert torch.equal(action, base.to_actions(base_action + 0.1 * residual)[:, None])
        expected_lp = torch.distributions.Normal(0.0, std).log_prob(residual).sum(-1)  # summed over action dims
        assert torch.allclose(stored["log_probs"][:, 0], expected_lp)
        assert torch.allclose(provider.chain_log_probs(obs, stored)[0], expected_lp)
        obs, _, terminated, truncated, _ = env.step(action)
        provider.end_episodes(terminated | truncated)
        replay.end_episodes(terminated | truncated)


# the toy demonstrator heads 70 degrees off course: more than a 0.1 correction can fix, so the toy runs use 0.5
TOY_RESIP = [
    "algo=resip",
    "env=pointmass",
    "train.n_envs=16",
    "train.n_steps=50",
    "train.checkpoint_every=5",
    "eval.episodes=0",
    "algo.batch_size=200",
    "algo.residual.scale=0.5",
]


def test_resip_raises_the_return(toy):
    base = toy / "pre-flow_mlp"
    assert main(["finetune", f"base={base}", *TOY_RESIP, "train.iterations=20", f"run.dir={toy}", "run.name=ft-resip"]) == 0
    run = toy / "ft-resip"
    rows = read_metrics(run)
    assert all(r["ppo/first_ratio_dev"] == 0.0 for r in rows)  # the PPO ratio is exactly 1 at the start
    assert all(r["ppo/sampling_logprob_dev"] < 1e-5 for r in rows)
    ret_before = evaluate(load_policy(base), "pointmass", 32, seed=5)["return_mean"]
    ret_after = evaluate(load_residual_policy(run), "pointmass", 32, seed=5)["return_mean"]
    assert ret_after > ret_before + 6, f"{ret_before:.1f} -> {ret_after:.1f}"  # measured: -20.7 -> -8.2


def test_eval_runs_the_combined_policy_and_its_export_acts_the_same(toy, capsys):
    run = toy / "ft-resip"
    assert main(["eval", f"run={run}", "n_episodes=8", "n_envs=8", "seed=5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == STEPS
    combined = evaluate(load_residual_policy(run), "pointmass", 8, seed=5, n_envs=8)["return_mean"]
    assert result["return_mean"] == pytest.approx(combined, abs=1e-9)
    assert result["return_mean"] != pytest.approx(evaluate(load_policy(toy / "pre-flow_mlp"), "pointmass", 8, seed=5, n_envs=8)["return_mean"])
    # the run folder carries everything: the base's weights are the run's `policy`, the residual the provider's
    saved, pretrained = load_policy(run).state_dict(), load_policy(toy / "pre-flow_mlp").state_dict()
    assert saved.keys() == pretrained.keys() and all(torch.equal(saved[k], pretrained[k]) for k in saved)
    # exported (the base's plan + the residual, the queue in the controller), `rlft eval` of the folder gives the same episodes
    common = ["n_episodes=12", "n_envs=5", "seed=5", "--json"]  # 5 sub-envs: episodes end at different steps, mid-queue
    assert main(["eval", f"run={run}", *common]) == 0
    torch_result = json.loads(capsys.readouterr().out)
    for fmt, ext in (("onnx", "onnx"), ("torchscript", "ts")):
        assert main(["export", f"run={run}", f"format={fmt}", f"out={run / fmt}"]) == 0
        line = json.loads(capsys.readouterr().out)
        assert line["kind"] == "residual" and line["steps"] == STEPS and line["parity_max_abs_diff"] <= 1e-4
        assert sorted(p.name for p in (run / fmt).iterdir()) == ["controller.json", f"policy.{ext}", f"residual.{ext}"]
        assert main(["eval", f"run={run / fmt}", *common]) == 0
        exported = json.loads(capsys.readouterr().out)
        assert exported["steps"] == STEPS and exported["length_mean"] == torch_result["length_mean"]
        assert exported["return_mean"] == pytest.approx(torch_result["return_mean"], rel=1e-4)
    assert main(["bench", "latency", f"run={run}"]) == 2  # one chunk per call does not describe a per-step controller
    assert "is a resip run" in capsys.readouterr().err


def test_resip_resume_reproduces_the_uninterrupted_run(toy):
    args = ["finetune", f"base={toy / 'pre-flow_mlp'}", *TOY_RESIP, "train.n_steps=20", "train.iterations=4", f"run.dir={toy}"]
    assert main([*args, "run.name=resip-straight"]) == 0
    assert main([*args, "run.name=resip-broken", "train.checkpoint_every=2"]) == 0
    shutil.rmtree(sorted((toy / "resip-broken" / "checkpoints").iterdir())[-1])  # back to iteration 2
    assert main([*args, "run.name=resip-broken", "train.checkpoint_every=2", "--resume"]) == 0
    timing = ("time_s", "env_steps_per_s", "rollout_s")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(toy / "resip-broken")]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(toy / "resip-straight")]


def test_resip_trains_with_the_data_anchor(toy):
    """ResiP's anchor (the demonstrated actions' NLL under base + residual) joins its PPO loss and falls."""
    data = [f"data.path={toy / 'demos.zarr'}", "data.env=pointmass", "algo.data_coef=0.5", "train.iterations=4"]
    assert main(["finetune", f"base={toy / 'pre-flow_mlp'}", *TOY_RESIP, *data, f"run.dir={toy}", "run.name=resip-anchor"]) == 0
    losses = [r["loss/data"] for r in read_metrics(toy / "resip-anchor")]
    assert len(losses) == 4 and losses[-1] < losses[0]
