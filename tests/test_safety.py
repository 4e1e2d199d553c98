"""Safe offline RL: costs through the stack (envs -> chunks -> recording -> store -> transitions -> evaluation),
FISOR's pieces on hand-made numbers, and on the toy task with an unsafe shortcut FISOR stays safe where
reward-only IQL takes the shortcut."""

import json

import numpy as np
import pytest
import torch

from conftest import record_safety_demos
from rlft.algos.critics import expectile_loss
from rlft.algos.fisor import actor_weights, feasibility_labels, feasibility_target
from rlft.cli import main
from rlft.datasets.record import record
from rlft.datasets.store import EpisodeStore
from rlft.datasets.transitions import TransitionSampler
from rlft.envs import make
from rlft.envs.safety import VELOCITY_LIMITS, normalized_cost
from rlft.envs.wrappers import ActionChunk, ObsHistory
from rlft.errors import ActionError
from rlft.runtime.evaluate import evaluate


# ---- costs through the stack ---------------------------------------------------------------------------
def test_velocity_cost_is_the_same_on_native_and_gymnasium_backends():
    rng = np.random.default_rng(0)
    envs = [make("hopper_vel", 3, backend=b, seed=1) for b in ("native", "gymnasium")]
    assert all(e.has_cost for e in envs) and not make("hopper", 1).has_cost
    for e in envs:
        e.reset()
    seen = []
    for _ in range(60):
        a = torch.from_numpy(rng.uniform(-1, 1, (3, envs[0].act_dim)).astype(np.float32))
        (_, r0, *_, i0), (_, r1, *_, i1) = (e.step(a) for e in envs)
        assert torch.equal(i0["cost"], i1["cost"]), (i0["cost"], i1["cost"])
        seen.append(i0["cost"])
    costs = torch.stack(seen)
    assert set(costs.unique().tolist()) <= {0.0, 1.0} and 0 < costs.mean() < 1  # random actions sometimes exceed 0.7402 m/s
    assert envs[0].velocity_limit == VELOCITY_LIMITS["Hopper-v5"] == 0.7402


def test_chunks_sum_costs_and_episodes_count_them():
    base = make("pointmass_safe", 2, seed=0)
    env = ActionChunk(ObsHistory(base, 1), 4)
    env.reset()
    toward_hazard = torch.tensor([[[1.0, 1.0]] * 4, [[1.0, -1.0]] * 4])  # env 0 runs into the disc, env 1 away from it
    total = torch.zeros(2)
    for _ in range(3):
        *_, info = env.step(toward_hazard)
        total += info["cost"]
    assert total[0] > 0 and total[1] == 0
    for _ in range(20):
        env.step(toward_hazard)
    episodes = base.pop_episodes()
    assert episodes and all(e["cost"] is not None for e in episodes)


def test_non_finite_actions_are_refused_with_a_clear_error():
    env = make("hopper", 2, seed=0)
    env.reset()
    with pytest.raises(ActionError, match="NaN or inf .*sub-env 1"):
        env.step(torch.tensor([[0.0, 0.0, 0.0], [0.0, float("nan"), 0.0]]))


class _Scripted:
    """The mixed demonstrator as an acting policy (even sub-envs take the shortcut)."""

    obs_horizon, act_steps, default_steps, default_stochastic, device = 1, 1, 1, False, torch.device("cpu")

    def __init__(self, n_envs: int):
        self.rng, self.detour = np.random.default_rng(0), np.arange(n_envs) % 2 == 1

    def sample(self, obs, noise=None, steps=None, stochastic=False, generator=None):
        from rlft.envs.toy import mixed_safety_demonstrator

        return torch.from_numpy(mixed_safety_demonstrator(obs[:, -1].numpy(), self.rng, self.detour[: len(obs)]))[:, None]

    def end_episodes(self, done):
        pass


def test_recording_stores_costs_that_transitions_and_evaluation_report(tmp_path):
    from rlft.datasets.store import write_episodes

    data, ends = record(_Scripted(4), "pointmass_safe", steps=400, n_envs=4, seed=0, stochastic=False)
    assert data["cost"].dtype == np.float32 and data["cost"].sum() > 0
    store = write_episodes(tmp_path / "safe.zarr", data, ends, {"env": "pointmass_safe"})
    batch = TransitionSampler(EpisodeStore(store.path)).sample(256, np.random.default_rng(0))
    assert batch["cost"].shape == (256,) and set(batch["cost"].unique().tolist()) <= {0.0, 1.0}

    result = evaluate(_Scripted(4), "pointmass_safe", episodes=8, seed=0, n_envs=4, cost_limit=1.0, refs=(-100.0, 0.0))
    # half the episodes take the shortcut through the disc (5-7 steps inside), half the detour (none)
    assert 1.5 < result["cost_mean"] < 4.0 and result["normalized_cost"] == pytest.approx(result["cost_mean"]) and not result["safe"]
    assert result["normalized_reward"] == pytest.approx((result["return_mean"] + 100.0) / 100.0)
    assert "cost_mean" not in evaluate(_Scripted(2), "pointmass", episodes=2, seed=0)


def test_normalized_cost_uses_eps_only_for_a_zero_limit():
    assert normalized_cost(5.0, 10.0) == 0.5
    assert normalized_cost(0.0, 0.0) == 1.0 and normalized_cost(2.0, 0.0) == 3.0


# ---- FISOR's pieces --------------------------------------------------------------------------------------
def test_feasibility_target_on_hand_made_transitions():
    cost = torch.tensor([0.0, 1.0, 0.0, 0.5, 0.0])
    h = feasibility_labels(cost, 25.0)
    assert h.tolist() == [-1.0, 25.0, -1.0, 25.0, -1.0]
    next_vh = torch.tensor([-1.0, -1.0, 10.0, 30.0, 10.0])
    terminal = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    target = feasibility_target(h, next_vh, terminal, gamma=0.9)
    # safe -> safe: stays -1; a violation now: 25 whatever follows; safe now, unsafe later: discounted toward V_h(s');
    # max(h, V_h(s')) takes the later, larger violation; a terminal step is its own label
    assert target.tolist() == pytest.approx([-1.0, 25.0, 0.1 * -1 + 0.9 * 10.0, 0.1 * 25 + 0.9 * 30.0, -1.0])


def test_reversed_expectile_tends_to_the_lower_values():
    samples = torch.tensor([-1.0] * 50 + [20.0] * 50)
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([v], lr=0.1)
    for _ in range(2000):
        opt.zero_grad()
        expectile_loss(samples - v, 1.0 - 0.9).mean().backward()  # FISOR's V_h: weight 0.9 on negative differences
        opt.step()
    # the 0.1-expectile of the two-point mix solves 0.1 * 0.5 (20 - v) = 0.9 * 0.5 (v + 1): v = 1.1
    assert v.item() == pytest.approx(1.1, abs=0.02)


def test_actor_weights_follow_the_feasibility_cases():
    class algo:
        reward_temperature, cost_temperature, max_reward_weight, max_cost_weight = 3.0, 5.0, 100.0, 150.0

    q, v = torch.tensor([1.0, 1.0, 1.0, 2.0, 0.0]), torch.tensor([0.5, 0.5, 0.5, 0.0, 0.0])
    qh = torch.tensor([2.0, 0.5, -1.0, -1.0, 10.0])
    vh = torch.tensor([2.5, 1.0, -1.0, -1.0, -1.0])
    w = actor_weights(q, v, qh, vh, algo)
    # infeasible state: clip(exp(5 (V_h - Q_h)), 1, 150); feasible state and action: clip(exp(3 (Q - V)), 0, 100);
    # a feasible state's infeasible action: 0
    assert w.tolist() == pytest.approx([np.exp(2.5), np.exp(2.5), np.exp(1.5), 100.0, 0.0])
    assert actor_weights(q, v, torch.tensor([3.0] * 5), torch.tensor([1.0] * 5), algo).tolist() == [1.0] * 5  # clipped at 1 from below


# ---- the toy with an unsafe shortcut -----------------------------------------------------------------------
SMALL = ["algo.policy.backbone.hidden=64", "train.batch_size=128", "train.log_every=100", "eval.episodes=20"]


def test_fisor_stays_safe_where_reward_only_iql_takes_the_shortcut(tmp_path):
    demos = tmp_path / "demos.zarr"
    record_safety_demos(demos)
    common = ["env=pointmass_safe", f"data.path={demos}", "data.env=pointmass_safe", *SMALL, f"run.dir={tmp_path}"]
    fisor = ["algo=fisor", "algo.policy.backbone.depth=3", "algo.policy.backbone.dropout=0.0", "algo.actor_batch_size=128", "algo.ema.decay=0.99"]
    assert main(["offline", *fisor, *common, "train.steps=1500", "train.checkpoint_every=1500", "run.name=fisor"]) == 0
    assert main(["offline", "algo=iql", *common, "train.steps=1500", "train.checkpoint_every=1500", "run.name=iql"]) == 0
    last = {name: json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1]) for name in ("fisor", "iql")}
    assert last["iql"]["eval/cost_mean"] > 3.0 and last["iql"]["eval/safe"] == 0.0  # the shortcut: 5-7 steps in the disc
    assert last["fisor"]["eval/cost_mean"] == 0.0 and last["fisor"]["eval/safe"] == 1.0
    # not safe by standing still (return about -99): it travels the detour toward the goal
    assert last["fisor"]["eval/return_mean"] > -85.0, last["fisor"]


def test_fisor_refuses_a_dataset_without_costs(tmp_path, capsys):
    from conftest import record_demos

    record_demos(tmp_path / "plain.zarr", steps=1000)
    capsys.readouterr()  # the recording's progress lines
    args = ["offline", "algo=fisor", "env=pointmass", f"data.path={tmp_path / 'plain.zarr'}", "data.env=pointmass", f"run.dir={tmp_path}"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a per-step 'cost' key" in err[0]
    assert not (tmp_path / "offline-fisor-pointmass").exists()


# ---- safety data: collect with a Lagrangian weight, merge runs, filter the safe episodes ----------------------
def test_collect_merge_and_filter_safety_datasets(tmp_path, capsys):
    from test_collect import TINY

    for penalty in (0.0, 5.0):
        run = ["collect", "env=hopper_vel", f"expert.cost_penalty={penalty}", "datasets.kinds=[expert,medium]", *TINY, f"run.dir={tmp_path}"]
        assert main([*run, f"run.name=lag{penalty:g}"]) == 0
    stores = [EpisodeStore(tmp_path / f"lag{p}" / "data" / f"hopper-vel-v5-{k}.zarr.zip") for p in ("0", "5") for k in ("expert", "medium")]
    assert all("cost" in s and s.meta["collection"]["cost_penalty"] in (0.0, 5.0) for s in stores)
    assert all(s.meta["ref_returns"]["kind"].startswith("dataset min / max") for s in stores)
    capsys.readouterr()

    merged = tmp_path / "mixed.zarr"
    assert main(["data", "merge", *[str(s.path) for s in stores], "--out", str(merged)]) == 0
    mixed = EpisodeStore(merged)
    returns = mixed.episode_returns()
    assert mixed.n_episodes == sum(s.n_episodes for s in stores) and mixed.meta["ref_returns"]["random"] == pytest.approx(returns.min())
    capsys.readouterr()

    limit = float(np.median(mixed.episode_costs()))
    assert main(["data", "filter", str(merged), "--max-cost", str(limit), "--out", str(tmp_path / "safe.zarr")]) == 0
    line = json.loads(capsys.readouterr().out)
    safe = EpisodeStore(tmp_path / "safe.zarr")
    assert line["episodes"] == int((mixed.episode_costs() <= limit).sum()) == safe.n_episodes and safe.episode_costs().max() <= limit
    assert safe.meta["ref_returns"] == mixed.meta["ref_returns"]  # scores stay comparable with runs on all the data

    assert main(["data", "filter", str(merged), "--max-cost", "-1", "--out", str(tmp_path / "none.zarr")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no episode has a cost <= -1" in err[0] and not (tmp_path / "none.zarr").exists()


def test_bullet_tasks_without_the_safety_extra_are_one_line(monkeypatch):
    import sys

    from rlft.errors import ConfigError

    monkeypatch.setitem(sys.modules, "bullet_safety_gym", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ConfigError, match="make install-safety"):
        make("ball_run", 1)


def test_envs_that_declare_rgb_frames_but_refuse_render_mode_are_built_without_it():
    import gymnasium as gym

    class NoRenderMode(gym.Env):  # bullet-safety-gym's shape: the mode in metadata, no render_mode keyword
        metadata = {"render_modes": ["rgb_array"]}
        observation_space = gym.spaces.Box(-1, 1, (2,))
        action_space = gym.spaces.Box(-1, 1, (1,))

        def __init__(self):
            super().__init__()

        def reset(self, *, seed=None, options=None):
            return np.zeros(2, np.float32), {}

        def step(self, action):
            return np.zeros(2, np.float32), 0.0, False, False, {"cost": 1.0}

    if "test/NoRenderMode-v0" not in gym.registry:
        gym.register("test/NoRenderMode-v0", entry_point=NoRenderMode, max_episode_steps=5)
    env = make("test/NoRenderMode-v0", 2, backend="gymnasium")
    env.reset()
    assert not env.has_cost  # costs are read only from the tasks rlft knows report them
    env.step(torch.zeros(2, 1))
