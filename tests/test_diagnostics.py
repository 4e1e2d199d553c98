"""Reward-hacking diagnostics and proxy-reward tasks: known jerk, drift that shows, a data loss that is fixed
and untouched by training draws, the DDRL anchor's gradient, and a proxy run that logs the true return."""

import numpy as np
import pytest
import torch

import rlft.algos.onpolicy.ppo as ppo_module
from rlft.algos.expert import ScriptedPolicy
from rlft.algos.onpolicy.finetune import ChainPPOLearner
from rlft.algos.onpolicy.rollout import collect_rollout
from rlft.cli import main
from rlft.config import compose
from rlft.datasets.store import EpisodeStore
from rlft.envs import make
from rlft.envs.proxy import true_task
from rlft.runtime.checkpoint import load_policy
from rlft.runtime.diagnostics import Demonstrations, mean_jerk, second_difference_norm
from rlft.runtime.evaluate import evaluate
from rlft.runtime.run import read_metrics


class _Constant:
    """An acting policy on PointMass: a fixed action, or one that flips sign every step (``alternate``)."""

    obs_horizon, act_steps, default_steps, default_stochastic, device = 1, 1, None, False, torch.device("cpu")
    training = False

    def __init__(self, action, alternate=False):
        self.action, self.alternate, self.calls = torch.tensor(action, dtype=torch.float32), alternate, 0

    def sample(self, obs, steps=None, stochastic=False, generator=None):
        sign = -1.0 if self.alternate and self.calls % 2 else 1.0
        self.calls += 1
        return (sign * self.action).expand(len(obs), 1, -1).clone()

    def end_episodes(self, done):
        """No memory."""


def test_second_difference_of_known_actions():
    flips = np.array([[1.0, 1.0], [-1.0, -1.0]] * 5)
    assert second_difference_norm(flips) == pytest.approx(np.full(8, 4 * np.sqrt(2)))
    ramp = np.linspace(0, 1, 7)[:, None] * np.array([[1.0, -2.0]])
    assert second_difference_norm(ramp) == pytest.approx(np.zeros(5), abs=1e-12)  # constant velocity: no jerk
    assert mean_jerk([flips, ramp, flips[:2]]) == pytest.approx(4 * np.sqrt(2) * 8 / 13)  # step-weighted; <3 steps skipped
    assert mean_jerk([flips[:2]]) is None


def test_evaluate_traces_the_counted_episodes():
    """Flipping full-speed actions never reach the goal: 4 episodes of 50 steps, jerk 4 sqrt(2) exactly."""
    result = evaluate(_Constant([1.0, 1.0], alternate=True), "pointmass", 4, seed=0, n_envs=2, trace=True)
    assert result["length_mean"] == 50 and result["jerk"] == pytest.approx(4 * np.sqrt(2))
    assert result["states"].shape == (4 * 50, 4)  # one state per chunk start, chunks of one step


def test_state_distance_grows_with_drift_from_the_demonstrations(tmp_path):
    from conftest import record_demos

    record_demos(tmp_path / "demos.zarr", steps=3000)
    demos = Demonstrations(EpisodeStore(tmp_path / "demos.zarr"), "obs", 1, 1)
    like_data = evaluate(ScriptedPolicy("pointmass", "curling", seed=1), "pointmass", 10, seed=3, trace=True)
    corner = evaluate(_Constant([-1.0, -1.0]), "pointmass", 10, seed=3, trace=True)  # pinned at (-1.5, -1.5)
    near, far = demos.state_distance(like_data["states"]), demos.state_distance(corner["states"])
    assert near < 2 * demos.state_distance_data and far > 5 * near, (near, far, demos.state_distance_data)
    # the anchor never draws a held-out episode's step (every 10th episode)
    held = set(demos.held_steps.tolist())
    drawn = demos.anchor_batch(4096, np.random.default_rng(0))["obs"][:, 0]
    held_obs = torch.from_numpy(np.asarray(demos.store["obs"])[sorted(held)])
    assert not (torch.cdist(drawn, held_obs).min(dim=1).values == 0).any()


def test_data_loss_is_fixed_leaves_training_draws_alone_and_grows_with_drift(toy):
    policy = load_policy(toy / "pre-flow_mlp")
    demos = Demonstrations(EpisodeStore(toy / "demos.zarr"), "obs", policy.obs_horizon, policy.horizon)
    torch.manual_seed(1)
    expected_next = torch.rand(3)
    torch.manual_seed(1)
    first = demos.data_loss(policy.loss, policy)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG is where it was
    assert demos.data_loss(policy.loss, policy) == first
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    assert demos.data_loss(policy.loss, policy) > 1.5 * first


def test_the_data_anchor_adds_exactly_coef_times_the_pretraining_gradient(toy, monkeypatch):
    """With zero advantages and no entropy bonus, the actor's whole gradient in a PPO step is data_coef x the
    gradient of the pretraining loss (the loss rlft pretrain minimises) on the anchor's batch."""
    overrides = ["algo=reinflow", f"base={toy / 'pre-flow_mlp'}", "env=pointmass", "train.n_envs=4", "train.n_steps=5"]
    overrides += ["algo.ent_coef=0", "algo.max_grad_norm=1e9", "algo.update_epochs=1", "algo.batch_size=1000", "algo.data_coef=0.7"]
    overrides += [f"data.path={toy / 'demos.zarr'}", "data.env=pointmass"]
    cfg = compose("finetune", overrides)
    base = load_policy(cfg.base)
    learner = ChainPPOLearner(cfg, base, np.random.default_rng(0), torch.device("cpu"))
    obs, _ = learner.env.reset(seed=0)
    learner.provider.end_episodes(torch.ones(4, dtype=torch.bool))
    rollout, _ = collect_rollout(learner.env, learner.provider, learner.ppo.value, obs, 5)
    batch = learner.demo_batch()
    monkeypatch.setattr(ppo_module, "compute_gae", lambda rewards, *a: (torch.zeros_like(rewards), torch.zeros_like(rewards)))
    actor = learner.provider.actor
    pretrain_loss = actor.loss

    def seeded_loss(b):
        torch.manual_seed(5)
        return pretrain_loss(b)

    monkeypatch.setattr(actor, "loss", seeded_loss)
    params = [p for p in actor.parameters() if p.requires_grad]
    grads = []
    monkeypatch.setattr(learner.ppo.actor_opt, "step", lambda: grads.append([p.grad.clone() for p in params]))
    learner.ppo.update(rollout, lambda: batch)
    assert len(grads) == 1
    for p in params:
        p.grad = None
    (0.7 * seeded_loss(batch)).backward()
    for got, p in zip(grads[0], params):
        torch.testing.assert_close(got, p.grad, rtol=1e-5, atol=1e-7)


def test_proxy_task_rewards_the_forward_velocity_alone():
    """hopper_fwd steps like hopper; its reward lacks the healthy bonus (1 while alive) and the control cost (1e-3 |a|^2)."""
    assert true_task("hopper_fwd") == "hopper" and true_task("hopper") is None
    proxy, real = make("hopper_fwd", 3, seed=0), make("hopper", 3, seed=0)
    proxy.reset(), real.reset()
    g = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(40):
        a = torch.rand(3, 3, generator=g) * 2 - 1
        o1, r1, te, _, _ = proxy.step(a)
        o2, r2, _, _, _ = real.step(a)
        assert torch.equal(o1, o2)
        alive = ~te
        torch.testing.assert_close((r2 - r1)[alive], (1.0 - 1e-3 * (a**2).sum(1))[alive], rtol=0, atol=1e-5)
        checked += int(alive.sum())
    assert checked > 60


def test_a_proxy_finetune_run_logs_the_true_return_and_the_diagnostics(tmp_path):
    args = ["finetune", "algo=reinflow", "env=hopper_fwd", "train.n_envs=2", "train.n_steps=10", "train.iterations=2", "eval.episodes=2"]
    assert main([*args, "eval.every=1", "train.checkpoint_every=2", f"run.dir={tmp_path}", "run.name=fwd"]) == 0
    rows = [r for r in read_metrics(tmp_path / "fwd") if "eval/return_mean" in r]
    assert len(rows) == 2
    for r in rows:
        assert r["eval/true_return_mean"] > r["eval/return_mean"]  # the healthy bonus outweighs the control cost here
        assert r["eval/true_normalized_score"] > 20 and "eval/normalized_score" not in r  # scores belong to the true task
        assert r["diag/data_loss_base"] > 0 and r["diag/state_distance"] > 0 and r["diag/jerk"] > 0
        assert r["diag/state_distance_data"] > 0 and r["diag/jerk_data"] > 0
    assert rows[0]["diag/data_loss"] == pytest.approx(rows[0]["diag/data_loss_base"], rel=0.05)  # one small update


def test_the_resip_anchor_pulls_base_plus_residual_toward_the_demonstrated_actions(toy):
    from rlft.algos.onpolicy.residual import ResidualProvider

    base = load_policy(toy / "pre-flow_mlp")
    provider = ResidualProvider(base, steps=4, hidden=64, depth=2, log_std=-1.0, scale=0.1)
    demos = Demonstrations(EpisodeStore(toy / "demos.zarr"), "obs", base.obs_horizon, base.horizon)
    batch = demos.anchor_batch(512, np.random.default_rng(0))

    def executed_error() -> float:
        with torch.no_grad():
            noise = base.initial_noise(512, torch.Generator().manual_seed(0))
            base_action = provider.queue.plan({"obs": batch["obs"]}, noise)[:, 0]
            mean = provider.residual(base.normalized_state(batch["obs"]), base_action)
            return float((base.action_norm(batch["action"][:, 0]) - (base_action + 0.1 * mean)).norm(dim=-1).mean())

    before_loss, before_error = float(provider.data_loss(batch)), executed_error()
    opt = torch.optim.Adam(provider.residual.parameters(), lr=1e-3)
    for _ in range(200):
        opt.zero_grad()
        provider.data_loss(batch).backward()
        opt.step()
    assert float(provider.data_loss(batch)) < 0.75 * before_loss  # the demonstrator's own noise (0.3) stays
    assert executed_error() < 0.8 * before_error, (before_error, executed_error())
