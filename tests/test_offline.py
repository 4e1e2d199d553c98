"""Offline RL: transitions, critics, DQL's gradient through the chain, OFQL's JVP target, a two-mode
bandit where the critic must choose the good mode, and `rlft offline` end to end with exact resume."""

import json

import numpy as np
import pytest
import torch

from conftest import one_error_line
from rlft.algos import offline
from rlft.algos.critics import TwinQ, expectile_loss
from rlft.cli import main
from rlft.config import compose
from rlft.datasets.store import EpisodeStore, merge_stores, write_episodes
from rlft.datasets.transitions import TransitionSampler
from rlft.errors import DatasetError
from rlft.policies.policy import Policy
from rlft.runtime.checkpoint import load_policy
from rlft.runtime.run import read_metrics


def write_store(path, lengths, ends_by, obs_dim=2, act_dim=1):
    """Episodes whose obs[t, 0] is the global step; ``ends_by[i]`` in terminated / truncated / cut."""
    total = int(sum(lengths))
    obs = np.zeros((total, obs_dim), np.float32)
    obs[:, 0] = np.arange(total)
    ends = np.cumsum(lengths)
    terminated, truncated = np.zeros(total, bool), np.zeros(total, bool)
    for end, how in zip(ends, ends_by):
        terminated[end - 1] = how == "terminated"
        truncated[end - 1] = how == "truncated"
    data = {"obs": obs, "action": np.zeros((total, act_dim), np.float32), "reward": np.arange(total, dtype=np.float32)}
    return write_episodes(path, data | {"terminated": terminated, "truncated": truncated}, ends, {"env": "hopper"})


def test_transitions_next_obs_within_episodes_terminal_vs_truncation(tmp_path):
    store = write_store(tmp_path / "d.zarr", [3, 2, 2], ["terminated", "truncated", "cut"])
    sampler = TransitionSampler(store)
    # the truncated (step 4) and cut-off (step 6) last steps have no next observation: dropped, as D4RL does
    assert sampler.indices.tolist() == [0, 1, 2, 3, 5]
    batch = sampler.transitions(sampler.indices)
    assert batch["obs"][:, 0, 0].tolist() == [0, 1, 2, 3, 5]
    assert batch["next_obs"][:, 0, 0].tolist() == [1, 2, 2, 4, 6]  # step 2 is terminal: s' unused (filled with s)
    assert batch["terminal"].tolist() == [0, 0, 1, 0, 0]
    assert batch["reward"].tolist() == [0, 1, 2, 3, 5] and batch["action"].shape == (5, 1, 1)
    history = TransitionSampler(store, obs_horizon=2).transitions(np.array([3]))
    assert history["obs"][0, :, 0].tolist() == [3, 3] and history["next_obs"][0, :, 0].tolist() == [3, 4]
    assert len(sampler.sample(64, np.random.default_rng(0))["reward"]) == 64


def test_transitions_need_rewards_and_terminals(tmp_path):
    data = {"obs": np.zeros((4, 2), np.float32), "action": np.zeros((4, 1), np.float32)}
    with pytest.raises(DatasetError, match="offline RL needs 'reward'"):
        TransitionSampler(write_episodes(tmp_path / "d.zarr", data, np.array([4])))


def test_merge_stores_concatenates_episodes(tmp_path):
    a = write_store(tmp_path / "a.zarr", [3, 2], ["terminated", "truncated"])
    b = write_store(tmp_path / "b.zarr", [4], ["terminated"])
    merged = merge_stores([a.path, b.path], tmp_path / "ab.zarr.zip")
    assert merged.episode_ends.tolist() == [3, 5, 9] and merged["obs"][:, 0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert merged.meta["merged_from"] == [str(a.path), str(b.path)]


def test_twin_q_polyak_target_and_expectile_asymmetry():
    torch.manual_seed(0)
    critic = TwinQ(3, 2, hidden=8, depth=2)
    state, action = torch.randn(5, 3), torch.randn(5, 1, 2)
    assert torch.equal(critic(state, action), critic.target(state, action))
    before = [p.clone() for p in critic.q_target.parameters()]
    with torch.no_grad():
        for p in critic.q.parameters():
            p.add_(1.0)
    critic.update_target(0.1)
    for old, new, src in zip(before, critic.q_target.parameters(), critic.q.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * src) and not new.requires_grad
    assert len(critic.trained_parameters()) == len(before)
    diff = torch.tensor([2.0, -2.0])
    assert expectile_loss(diff, 0.9).tolist() == pytest.approx([3.6, 0.4])
    assert expectile_loss(diff, 0.5).tolist() == pytest.approx([2.0, 2.0])


def actor(algo, hidden=32, dtype=torch.float32):
    cfg = compose("offline", [f"algo={algo}"]).algo.policy
    stats = {k: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)} for k, d in {"obs": 4, "action": 2}.items()}
    policy = Policy({**cfg, "backbone": {**cfg.backbone, "hidden": hidden}}, {"obs": (4,)}, 2, stats)
    return policy.to(dtype)


def test_dql_gradient_reaches_every_denoising_step():
    torch.manual_seed(0)
    policy, critic = actor("dql"), TwinQ(4, 2, hidden=16)
    outputs = []

    def keep(module, args, out):
        out.retain_grad()
        outputs.append(out)

    policy.head.net.register_forward_hook(keep)
    obs = torch.randn(8, 4)
    loss = offline.q_objective(critic(policy.encode(obs).detach(), offline.actor_action(policy, obs)))
    loss.backward()
    assert policy.head.train_steps == policy.head.steps == len(outputs) == 5
    assert all(out.grad is not None and out.grad.abs().sum() > 0 for out in outputs)  # every one of the T = 5 steps
    assert all(p.grad is not None for p in policy.head.net.parameters())


def test_ofql_loss_path_jvp_target_matches_finite_differences():
    """OFQL's actor BC term (the policy's loss on a batch) against a finite-difference mean-flow target."""
    torch.manual_seed(0)
    policy = actor("ofql", hidden=16, dtype=torch.float64)
    batch = {"obs": torch.randn(6, 1, 4, dtype=torch.float64), "action": torch.rand(6, 1, 2, dtype=torch.float64) * 2 - 1}
    torch.manual_seed(1)
    loss = policy.loss(batch, reduce=False)
    torch.manual_seed(1)  # replay the loss's draws: (t, r), then eps
    head, x0, cond = policy.head, policy.action_norm(batch["action"]), policy.encode(batch["obs"])
    t, r = head.sample_time_pairs(6, x0.device)
    eps = torch.randn_like(x0)
    assert (t == r).any() and (t > r).any()
    tv = t.view(-1, 1, 1)
    z, v, h = (1 - tv) * x0 + tv * eps, eps - x0, 1e-6
    with torch.no_grad():
        u = head.average_velocity(z, t, r, cond)
        du = (head.average_velocity(z + h * v, t + h, r, cond) - head.average_velocity(z - h * v, t - h, r, cond)) / (2 * h)
    error = ((u - (v - (t - r).view(-1, 1, 1) * du)) ** 2).mean((1, 2))
    assert torch.allclose(loss, error / (error + 1e-3), atol=1e-8)
    # the Q term's action is one network evaluation: a = eps - u(eps, 0, 1), no chain
    calls = []
    head.net.register_forward_hook(lambda *_: calls.append(1) and None)
    offline.actor_action(policy, batch["obs"]).sum().backward()
    assert len(calls) == 1 and all(p.grad is not None for p in head.net.parameters())


@pytest.fixture(scope="module")
def bandit(tmp_path_factory):
    """One-step episodes (terminal): the same observation, action +0.6 (reward 1) or -0.6 (reward 0), 50/50."""
    rng = np.random.default_rng(0)
    n = 512
    good = rng.random(n) < 0.5
    action = (np.where(good, 0.6, -0.6) + 0.05 * rng.standard_normal(n)).astype(np.float32)[:, None]
    data = {
        "obs": np.zeros((n, 2), np.float32),
        "action": np.clip(action, -1, 1),
        "reward": good.astype(np.float32),
        "terminated": np.ones(n, bool),
        "truncated": np.zeros(n, bool),
    }
    path = tmp_path_factory.mktemp("bandit") / "bandit.zarr"
    write_episodes(path, data, np.arange(1, n + 1), {})  # no env has this space: runs set data.env=null
    return path


@pytest.mark.parametrize("algo, eta, expect", [("dql", 1.0, "good"), ("ofql", 1.0, "good"), ("dql", 0.0, "both"), ("ofql", 0.0, "both")])
def test_bandit_critic_picks_the_good_mode_bc_averages(bandit, tmp_path, algo, eta, expect):
    args = [f"algo={algo}", f"data.path={bandit}", "data.env=null", f"algo.eta={eta}", "algo.select.candidates=1"]
    args += ["algo.policy.backbone.hidden=64", "algo.critic.hidden=32"]
    args += ["algo.lr=0.002", "algo.ema.start=100000", "train.steps=300", "train.batch_size=128", "train.log_every=50", "train.checkpoint_every=300"]
    assert main(["offline", *args, "eval.episodes=0", f"run.dir={tmp_path}", "run.name=b"]) == 0
    policy = load_policy(tmp_path / "b")
    torch.manual_seed(0)
    actions = policy.sample(torch.zeros(1000, 2), stochastic=policy.head.default_stochastic)[:, 0, 0]
    good = (actions > 0.3).float().mean().item()
    bad = (actions < -0.3).float().mean().item()
    if expect == "good":
        assert good > 0.8 and bad < 0.1, (good, bad)
    else:  # plain BC imitates both modes (and, this early, also the space between them)
        assert 0.2 < bad < 0.6 and good < 0.6, (good, bad)


TINY = [
    "algo.policy.backbone.hidden=32",
    "algo.critic.hidden=32",
    "algo.select.candidates=4",
    "train.steps=40",
    "train.batch_size=32",
    "train.log_every=10",
    "train.checkpoint_every=20",
]


def test_offline_cli_writes_a_complete_run(tmp_path, capsys):
    assert main(["offline", "algo=dql", *TINY, "eval.episodes=2", f"run.dir={tmp_path}", "run.name=r"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"run": str(tmp_path / "r"), "steps": 40}
    run = tmp_path / "r"
    assert (run / "learning_curve.png").read_bytes()[:4] == b"\x89PNG" and (run / "config.yaml").is_file()
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert all({"critic_loss", "bc_loss", "q_loss", "q_mean", "lr"} <= set(r) for r in rows)
    assert rows[-1]["eval/episodes"] == 2 and "eval/normalized_score" in rows[-1]
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step_000000020", "step_000000040"]
    # rlft eval runs what the run acts with: the EMA actor with its Q selection among 4 candidates
    from rlft.algos.registry import LoadOptions, load_acting_policy
    from rlft.runtime.evaluate import evaluate

    acting = load_acting_policy(run)
    assert isinstance(acting, offline.QSelect) and acting.candidates == 4
    assert main(["eval", f"run={run}", "n_episodes=2", "seed=3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 5 and result["return_mean"] == evaluate(acting, "hopper", 2, seed=3)["return_mean"]
    assert not isinstance(load_acting_policy(run, options=LoadOptions(weights="policy")), offline.QSelect)  # the raw actor


def test_eval_changes_q_selection_of_offline_runs_only(tmp_path, capsys):
    assert main(["offline", "algo=ofql", *TINY, "train.steps=20", "eval.episodes=0", f"run.dir={tmp_path}", "run.name=q"]) == 0
    capsys.readouterr()
    run = tmp_path / "q"
    assert main(["eval", f"run={run}", "n_episodes=1", "select.candidates=8", "select.rule=max", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["select"] == {"candidates": 8, "rule": "max"}
    assert main(["eval", f"run={run}", "n_episodes=1", "select.candidates=1", "--json"]) == 0
    assert "select" not in json.loads(capsys.readouterr().out)  # the one-step actor alone
    assert main(["eval", f"run={run}", "n_episodes=1", "select.candidates=3"]) == 0
    assert "episodes (Q selection among 3, softmax)" in capsys.readouterr().out  # the run's own rule
    for bad, message in [
        (["select.candidates=0"], "select.candidates=0: must be > 0"),
        (["select.rule=best"], "rule must be one of"),
        (["weights=policy", "select.candidates=8"], "EMA actor; weights=policy is the raw actor"),
    ]:
        assert main(["eval", f"run={run}", "n_episodes=1", *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    # rlft export: the candidates and the argmax pick in one graph; the run's softmax pick is random, so refused
    assert main(["export", f"run={run}", f"out={tmp_path / 'x'}"]) == 2
    assert one_error_line(capsys).startswith("rlft: error: select.rule=softmax draws the pick at random") and not (tmp_path / "x").exists()
    assert main(["export", f"run={run}", "select.rule=max", f"out={tmp_path / 'x'}"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "q_select"
    common = ["n_episodes=2", "seed=3", "--json"]
    assert main(["eval", f"run={tmp_path / 'x'}", *common]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert main(["eval", f"run={run}", "select.rule=max", *common]) == 0
    selected = json.loads(capsys.readouterr().out)
    assert exported["length_mean"] == selected["length_mean"] and exported["return_mean"] == pytest.approx(selected["return_mean"], rel=1e-4)
    bc = ["algo=ofql", *TINY, "algo.eta=0", "algo.select.candidates=1", "train.steps=20", "eval.episodes=0"]
    assert main(["offline", *bc, f"run.dir={tmp_path}", "run.name=bc"]) == 0
    assert main(["eval", f"run={tmp_path / 'bc'}", "n_episodes=1", "select.candidates=8"]) == 2
    assert "trained no critic" in capsys.readouterr().err


class Interrupt(Exception):
    pass


def test_offline_resume_is_exact(tmp_path, monkeypatch):
    args = ["algo=ofql", *TINY, "algo.lr_decay=true", "eval.episodes=0", f"run.dir={tmp_path}"]  # the lr schedule resumes too
    assert main(["offline", *args, "run.name=straight"]) == 0
    calls = {"n": 0}
    objective = offline.q_objective

    def interrupted(q):
        calls["n"] += 1
        if calls["n"] == 27:
            raise Interrupt
        return objective(q)

    monkeypatch.setattr(offline, "q_objective", interrupted)
    with pytest.raises(Interrupt):
        main(["offline", *args, "run.name=broken"])
    monkeypatch.setattr(offline, "q_objective", objective)
    assert main(["offline", *args, "run.name=broken", "--resume"]) == 0

    def without_timing(folder):
        return [{k: v for k, v in row.items() if k != "steps_per_s"} for row in read_metrics(folder)]

    assert without_timing(tmp_path / "broken") == without_timing(tmp_path / "straight")


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["offline", "algo=dppo", f"run.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "not an offline algorithm" in err and "algo=dql or algo=fisor or algo=iql or algo=ofql" in err and err.count("\n") == 1
    assert main(["offline", "algo.policy.horizon=4", f"run.dir={tmp_path}"]) == 2
    assert "horizon=1" in capsys.readouterr().err
    assert main(["offline", "algo.select.rule=best", f"run.dir={tmp_path}"]) == 2
    assert main(["offline", "data.path=nowhere.zarr", f"run.dir={tmp_path}"]) == 1
    assert "nowhere.zarr: no such dataset" in capsys.readouterr().err
    data = {"obs": np.zeros((4, 11), np.float32), "action": np.zeros((4, 3), np.float32)}
    write_episodes(tmp_path / "norew.zarr", data, np.array([4]), {"env": "hopper"})
    assert main(["offline", f"data.path={tmp_path / 'norew.zarr'}", f"run.dir={tmp_path}"]) == 1
    assert "needs 'reward'" in capsys.readouterr().err
    assert not list(tmp_path.glob("offline-*"))  # nothing written
    assert EpisodeStore(tmp_path / "norew.zarr").n_steps == 4


def test_max_q_backup_and_max_selection_run(tmp_path):
    args = ["algo=ofql", *TINY, "algo.max_q_backup=true", "algo.select.rule=max", "train.steps=20", "eval.episodes=1"]
    assert main(["offline", *args, f"run.dir={tmp_path}", "run.name=m"]) == 0
    assert read_metrics(tmp_path / "m")[-1]["eval/episodes"] == 1
