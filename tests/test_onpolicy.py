"""On-policy fine-tuning: GAE, rollout bootstrapping, exact PPO ratios, and DPPO / ReinFlow learning on a toy task."""

import json

import numpy as np
import pytest
import torch

from rlft.algos.onpolicy.ppo import Critic, clip_schedule
from rlft.algos.onpolicy.rollout import RewardScaler, collect_rollout, compute_gae
from rlft.cli import main
from rlft.envs import make
from rlft.envs.wrappers import ActionChunk, ObsHistory
from rlft.runtime.checkpoint import load_policy
from rlft.runtime.evaluate import evaluate
from rlft.runtime.run import read_metrics


def test_gae_by_hand_with_a_truncation_and_a_termination():
    # one env, 4 steps: step 1 is truncated (time limit), step 3 terminates
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    v = torch.tensor([[0.5], [0.6], [0.7], [0.8]])
    next_v = torch.tensor([[0.6], [9.0], [0.8], [5.0]])  # 9.0 = V(true final obs) of the truncated episode
    term = torch.tensor([[False], [False], [False], [True]])
    trunc = torch.tensor([[False], [True], [False], [False]])
    g, lam = 0.9, 0.8
    adv, ret = compute_gae(r, v, next_v, term, trunc, g, lam)
    d3 = 4.0 - 0.8  # terminated: no bootstrap
    d2 = 3.0 + g * 0.8 - 0.7
    a3, a2 = d3, d2 + g * lam * d3
    d1 = 2.0 + g * 9.0 - 0.6  # truncated: bootstrap from the final obs, and the recursion stops here
    a1 = d1
    a0 = (1.0 + g * 0.6 - 0.5) + g * lam * a1
    assert torch.allclose(adv.flatten(), torch.tensor([a0, a1, a2, a3]))
    assert torch.allclose(ret, adv + v)


def test_layer_norm_critic_bounds_its_values_whatever_the_input():
    """With layer norms, |V| <= |w_out| * sqrt(width) + |b| however large the input (the TD fix for lift); without, it grows with the input."""
    torch.manual_seed(0)
    obs = torch.randn(64, 19)
    normed, plain = Critic(19, 64, 3, layer_norm=True), Critic(19, 64, 3)
    with torch.no_grad():
        last = normed.out[-1]
        bound = float(last.weight.norm() * 64**0.5 + last.bias.abs())
        assert normed(obs * 1e6).abs().max() <= bound
        assert plain(obs * 1e6).abs().max() > 1e3 * plain(obs).abs().max()
    assert any(isinstance(m, torch.nn.LayerNorm) for m in normed.modules()) and not any(isinstance(m, torch.nn.LayerNorm) for m in plain.modules())


def test_clip_schedule_has_no_nan_with_one_fine_tuned_step():
    assert clip_schedule(0, 1, 0.001, 0.01) == 0.01
    assert [round(clip_schedule(k, 3, 0.001, 0.01), 4) for k in range(3)] == [0.001, 0.0055, 0.01]


def test_reward_scaler_divides_by_return_std_and_resets_at_episode_end():
    scaler = RewardScaler(2, gamma=0.5)
    out = scaler(torch.tensor([1.0, 3.0]), torch.tensor([False, True]))
    assert scaler.ret.tolist() == [1.0, 0.0]
    assert torch.allclose(out, torch.tensor([1.0, 3.0]) / torch.sqrt(scaler.var).float())


class _Agent:
    """Constant actions; stores nothing."""

    def sample(self, obs):
        return torch.full((obs.shape[0], 1, 2), 1.0), {"latents": torch.zeros(obs.shape[0], 2, 1, 2), "log_probs": torch.zeros(obs.shape[0], 1)}

    def end_episodes(self, done):
        pass


def test_truncation_bootstraps_from_the_final_observation():
    env = ActionChunk(ObsHistory(make("pointmass", 3, seed=0, max_episode_steps=5), 1), 1)
    obs, _ = env.reset()

    def value(o):  # a value that depends on the observation, to tell final from reset obs
        return o[:, 0, 0] * 10 + o[:, 0, 1]

    rollout, _ = collect_rollout(env, _Agent(), value, obs, 7)
    assert rollout.truncated[4].all() and not rollout.truncated[:4].any()
    # step 4 ended by the time limit: next value is V(last obs of the episode), not V(reset obs) = values[5]
    assert not torch.allclose(rollout.next_values[4], rollout.values[5])
    assert torch.allclose(rollout.next_values[3], rollout.values[4])
    assert rollout.env_steps == 21 and rollout.obs.shape == (7, 3, 1, 4)


# ---- learning on the toy task (the `toy` fixture is in conftest.py) -------------------------------------
TOY_FINETUNE = [
    "env=pointmass",
    "train.n_envs=16",
    "train.n_steps=25",
    "train.checkpoint_every=5",
    "eval.episodes=0",
    "algo.actor_lr=0.001",
    "algo.actor_min_lr=0.001",
    "algo.critic_lr=0.003",
    "algo.critic_min_lr=0.003",
    "algo.clip=0.2",
]
ALGOS = {
    "reinflow": ("flow_mlp", ["algo.batch_size=100"]),
    "dppo": (
        "diffusion_mlp",
        ["algo.steps=10", "algo.ft_steps=5", "algo.batch_size=500", "algo.update_epochs=5", "algo.clip_base=0.2"],
    ),
}


@pytest.mark.parametrize("algo", ALGOS)
def test_finetuning_raises_the_return(toy, algo, capsys):
    preset, algo_args = ALGOS[algo]
    base = toy / f"pre-{preset}"
    args = ["finetune", f"algo={algo}", f"base={base}", *TOY_FINETUNE, *algo_args, "train.iterations=25", f"run.dir={toy}", f"run.name=ft-{algo}"]
    assert main(args) == 0
    run = toy / f"ft-{algo}"
    rows = read_metrics(run)
    assert all(r["ppo/first_ratio_dev"] == 0.0 for r in rows)  # the PPO ratio is exactly 1 at the start
    assert all(r["ppo/sampling_logprob_dev"] < 1e-4 for r in rows)  # sampling and scoring share one grid
    before, after = load_policy(base), load_policy(run)
    ret_before = evaluate(before, "pointmass", 32, seed=5)["return_mean"]
    ret_after = evaluate(after, "pointmass", 32, seed=5)["return_mean"]
    assert ret_after > ret_before + 6, f"{algo}: {ret_before:.1f} -> {ret_after:.1f}"
    train = [r["train/return_mean"] for r in rows if "train/return_mean" in r]
    assert np.mean(train[-5:]) > np.mean(train[:3]) + 6
    assert (run / "learning_curve.png").stat().st_size > 1000


def test_dppo_keeps_its_early_denoising_steps_frozen(toy):
    base = load_policy(toy / "pre-diffusion_mlp")
    tuned = load_policy(toy / "ft-dppo")
    assert tuned.frozen_steps == 5
    for (name, p_base), p_frozen in zip(base.head.named_parameters(), tuned.frozen_head.parameters()):
        assert torch.equal(p_base, p_frozen), name
    assert any(not torch.equal(a, b) for a, b in zip(base.head.parameters(), tuned.head.parameters()))


def test_reinflow_noise_bound_schedule():
    from rlft.algos.onpolicy.providers import ReinFlowChain
    from rlft.policies.policy import Policy

    stats = {k: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)} for k, d in (("obs", 4), ("action", 2))}
    cfg = {
        "obs_keys": ["obs"], "obs_horizon": 1, "horizon": 2, "act_steps": 2, "normalizer": {"obs": "limits", "action": "limits"},
        "encoder": {"type": "state"}, "backbone": {"type": "mlp", "hidden": 16, "depth": 1}, "head": {"type": "flow", "steps": 4},
    }  # fmt: skip
    provider = ReinFlowChain(Policy(cfg, {"obs": (4,)}, 2, stats), 4, 0.1, 0.3, hold=0.35, decay_end=0.7, noise_hidden=(8,), logprob_clamp=None)
    bounds = []
    for frac in (0.0, 0.3, 0.5, 0.7, 0.9):
        provider.set_progress(frac)
        bounds.append(round(provider.noise.max_std.item(), 4))
    assert bounds[:2] == [0.3, 0.3] and 0.1 < bounds[2] < 0.3 and bounds[3:] == [0.1, 0.1]
    chain = provider.actor.chain(torch.zeros(3, 4), 4, noise=provider.noise)
    assert chain.stds.min() >= 0.1 - 1e-6 and chain.stds.max() <= 0.1 + 1e-6


def test_resume_reproduces_the_uninterrupted_run(toy):
    """... with evaluations, the hacking diagnostics and the data anchor on (their draws must resume too)."""
    args = ["finetune", "algo=reinflow", f"base={toy / 'pre-flow_mlp'}", *TOY_FINETUNE, "algo.batch_size=100", f"run.dir={toy}"]
    args += ["eval.episodes=4", "eval.every=2", f"data.path={toy / 'demos.zarr'}", "data.env=pointmass", "algo.data_coef=0.1"]
    assert main([*args, "train.iterations=6", "run.name=straight"]) == 0
    assert main([*args, "train.iterations=6", "run.name=broken", "train.checkpoint_every=3"]) == 0
    # cut the second run back to its checkpoint at iteration 3 and resume it
    import shutil

    ckpts = sorted((toy / "broken" / "checkpoints").iterdir())
    shutil.rmtree(ckpts[-1])
    assert main([*args, "train.iterations=6", "run.name=broken", "train.checkpoint_every=3", "--resume"]) == 0
    timing = ("time_s", "env_steps_per_s", "rollout_s", "eval/env_steps_per_s")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(toy / "broken")]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(toy / "straight")]
    assert "diag/data_loss" in strip[-1] and "loss/data" in strip[-1]


def test_finetune_bad_input(toy, capsys):
    assert main(["finetune", "algo=dppo", f"base={toy / 'pre-flow_mlp'}", "env=pointmass"]) == 2
    assert "fine-tunes diffusion policies" in capsys.readouterr().err
    assert main(["finetune", "base=nowhere"]) == 2
    assert "no such run or policy folder" in capsys.readouterr().err
    assert main(["finetune", "algo=reinflow", "--print-config"]) == 0
    assert "base: hopper-v5-medium-flow_mlp" in capsys.readouterr().out


@pytest.mark.parametrize("algo", ALGOS)
def test_regularisers_run_and_are_logged(toy, algo):
    """The provider's own regulariser and the DDRL data anchor (pretraining loss on the demonstrations)."""
    preset, algo_args = ALGOS[algo]
    args = ["finetune", f"algo={algo}", f"base={toy / f'pre-{preset}'}", *TOY_FINETUNE, *algo_args, "train.iterations=1", "train.n_steps=5"]
    args += ["algo.reg_coef=0.5", "algo.data_coef=0.5", "data=hopper_medium", f"data.path={toy / 'demos.zarr'}", "data.env=pointmass"]
    assert main([*args, f"run.dir={toy}", f"run.name=reg-{algo}"]) == 0
    row = read_metrics(toy / f"reg-{algo}")[-1]
    assert row["loss/regularizer"] != 0 and row["loss/data"] > 0  # DPPO's is a negative log-likelihood: any sign


@pytest.mark.parametrize("algo", ALGOS)
def test_bench_finetune_times_every_phase_and_the_floor(toy, algo, capsys):
    """rlft bench finetune: the phases add up to the iteration, every sample-gradient is counted, the floor is
    below the measured update (it only counts matmuls at the best matmul rate)."""
    preset, algo_args = ALGOS[algo]
    args = ["bench", "finetune", f"algo={algo}", f"base={toy / f'pre-{preset}'}", *TOY_FINETUNE, *algo_args, "train.n_envs=4", "train.n_steps=5"]
    assert main([*args, "algo.target_kl=100", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    rollout, update = r["phases_s"]["rollout"], r["phases_s"]["update"]
    assert sum(rollout.values()) == pytest.approx(r["rollout_s"]) and sum(update.values()) == pytest.approx(r["update_s"])
    assert r["iteration_s"] == pytest.approx(r["rollout_s"] + r["update_s"])
    assert min(rollout["physics"], rollout["policy"], update["forward"], update["logprob_recompute"]) > 0
    items = 4 * 5 * (5 if algo == "dppo" else 1)  # (env step, fine-tuned denoising step) pairs or chains
    epochs = 5  # both toy settings: 5 epochs (no KL stop at target_kl 100)
    assert r["epochs"] == epochs and r["sample_gradients"] == items * epochs
    assert r["env_steps"] == 4 * 5 * 2  # act_steps 2
    assert r["flops_per_sample_gradient"] > 0 and 0 < r["update_floor_s"] < r["update_s"]
    assert main(["bench", "finetune", "algo=dsrl", f"base={toy / 'pre-flow_mlp'}", "env=pointmass"]) == 2
    assert "times chain PPO" in capsys.readouterr().err
