"""Policies: every head x backbone, learning a 2-D multimodal toy, determinism, the chain view, persistence."""

import json

import numpy as np
import pytest
import torch

from rlft.errors import CheckpointError
from rlft.policies.backbones import Mish, ResidualMLP
from rlft.policies.chain import StdFloor
from rlft.policies.encoders import random_shift
from rlft.policies.heads import MeanFlow
from rlft.policies.policy import Policy
from rlft.runtime.checkpoint import load_policy, save_policy, write_spec

HEADS = {
    "diffusion": {"type": "diffusion", "train_steps": 10, "steps": 10, "schedule": "cosine", "eta": 1.0},
    "flow": {"type": "flow", "steps": 4},
    "shortcut": {"type": "shortcut", "steps": 4, "max_steps": 16},
    "meanflow": {"type": "meanflow", "steps": 1},
}
BACKBONES = {
    "mlp": {"type": "mlp", "hidden": 64, "depth": 3, "time_dim": 16},
    "unet": {"type": "unet", "channels": [16, 32], "time_dim": 16},
    "transformer": {"type": "transformer", "dim": 32, "layers": 2, "heads": 4, "time_dim": 16},
}


def stats_for(dims):
    return {k: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)} for k, d in dims.items()}


def make_policy(head="diffusion", backbone="mlp", obs_dim=3, action_dim=2, horizon=4, act_steps=2, obs_horizon=2, stats=None, backbone_opts=None, **head_opts):
    cfg = {
        "obs_keys": ["obs"],
        "obs_horizon": obs_horizon,
        "horizon": horizon,
        "act_steps": act_steps,
        "normalizer": {"obs": "limits", "action": "limits"},
        "noise_clip": 3.0,
        "encoder": {"type": "state"},
        "backbone": BACKBONES[backbone] | (backbone_opts or {}),
        "head": HEADS[head] | head_opts,
    }
    return Policy(cfg, {"obs": (obs_dim,)}, action_dim, stats or stats_for({"obs": obs_dim, "action": action_dim}))


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("head", HEADS)
def test_shapes_every_head_and_backbone(head, backbone):
    torch.manual_seed(0)
    policy = make_policy(head, backbone)
    obs = torch.randn(5, 2, 3)
    batch = {"obs": obs, "action": torch.rand(5, 4, 2) * 2 - 1}
    loss = policy.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in policy.head.net.parameters())
    assert policy.loss(batch, reduce=False).shape == (5,)
    assert policy.act(obs).shape == (5, 2, 2)
    assert policy.sample(obs, steps=3 if head != "diffusion" else 5).shape == (5, 4, 2)
    chain = policy.chain(obs)
    k = policy.head.steps
    assert chain.latents.shape == (5, k + 1, 4, 2) and chain.means.shape == (5, k, 4, 2) and chain.stds.shape == (5, k, 4, 2)
    assert chain.log_probs.shape == (5, k) and chain.init_log_prob.shape == (5,) and chain.actions.shape == (5, 4, 2)


def two_modes(n, rng):
    """Actions at (0.6, 0.6) or (-0.6, -0.6) with equal probability, small noise; a constant observation."""
    sign = rng.choice([-1.0, 1.0], size=(n, 1, 1))
    return torch.tensor(0.6 * sign + 0.04 * rng.standard_normal((n, 1, 2)), dtype=torch.float32)


def fixed_target_loss(policy, batch, seed=123):
    """The head's loss with targets that do not move with the network (for shortcut: only its flow-matching
    part; for mean flow: r = t, unweighted), on fixed noise: a fair before/after comparison."""
    head = policy.head
    saved = {k: getattr(head, k) for k in ("bootstrap_fraction", "p_equal", "adaptive_p") if hasattr(head, k)}
    for k, v in {"bootstrap_fraction": 0.0, "p_equal": 1.0, "adaptive_p": 0.0}.items():
        if k in saved:
            setattr(head, k, v)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        loss = policy.loss(batch).item()
    for k, v in saved.items():
        setattr(head, k, v)
    return loss


@pytest.mark.parametrize("head", HEADS)
def test_each_head_learns_two_modes(head):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = make_policy(head, "mlp", obs_dim=1, horizon=1, act_steps=1, obs_horizon=1)
    opt = torch.optim.Adam(policy.parameters(), lr=2e-3)
    obs = torch.zeros(256, 1, 1)
    held_out = {"obs": torch.zeros(2048, 1, 1), "action": two_modes(2048, np.random.default_rng(1))}
    before = fixed_target_loss(policy, held_out)
    for _ in range(3000 if head == "shortcut" else 1500):  # self-consistency propagates level by level: slower
        loss = policy.loss({"obs": obs, "action": two_modes(256, rng)})
        opt.zero_grad()
        loss.backward()
        opt.step()
    # mean flow fits the r = t velocity measured here on half its batches only (P(t = r) = 0.5): ~0.6 at 1500 steps
    assert fixed_target_loss(policy, held_out) < (0.7 if head == "meanflow" else 0.5) * before
    with torch.no_grad():
        # rectified flow needs many Euler steps on sharp modes; shortcut and mean flow are built for few
        steps = {"diffusion": 10, "flow": 20, "shortcut": 4, "meanflow": 1}[head]
        samples = policy.sample(torch.zeros(1000, 1, 1), steps=steps, generator=torch.Generator().manual_seed(1))[:, 0]
    to_upper = (samples - 0.6).norm(dim=-1)
    to_lower = (samples + 0.6).norm(dim=-1)
    near = torch.minimum(to_upper, to_lower)
    assert (near < 0.2).float().mean() > 0.9, f"{head}: samples are not at the modes (median distance {near.median():.3f})"
    upper = (to_upper < to_lower).float().mean()
    assert 0.3 < upper < 0.7, f"{head}: one mode dropped ({upper:.2f} of samples in the upper mode)"


@pytest.mark.parametrize("head", HEADS)
def test_sample_is_deterministic_given_noise(head):
    policy = make_policy(head)
    obs = torch.randn(6, 2, 3)
    noise = torch.randn(6, 4, 2)
    a, b = policy.sample(obs, noise=noise), policy.sample(obs, noise=noise)
    assert torch.equal(a, b)
    assert not torch.equal(a, policy.sample(obs, noise=torch.randn(6, 4, 2)))
    s1 = policy.sample(obs, noise=noise, stochastic=True, generator=torch.Generator().manual_seed(3))
    s2 = policy.sample(obs, noise=noise, stochastic=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2)


@pytest.mark.parametrize("head", HEADS)
def test_log_prob_chain_reproduces_sampling_log_probs(head):
    """The PPO ratio of a fresh chain is exactly 1: same grid, same parameters, same numbers."""
    torch.manual_seed(0)
    policy = make_policy(head, steps=3) if head != "diffusion" else make_policy(head, steps=5)
    obs = torch.randn(7, 2, 3)
    noise = StdFloor(0.1)
    chain = policy.chain(obs, noise=noise, generator=torch.Generator().manual_seed(0))
    again = policy.log_prob_chain(obs, chain, noise=noise)
    assert torch.equal(torch.exp(again - chain.log_probs), torch.ones_like(again))
    assert torch.equal(policy.log_prob_chain(obs, chain, noise=noise, steps=[1, 2]), chain.log_probs[:, 1:3])
    # the chain's own grid is used, not the policy's current default
    policy.head.steps = 2
    assert torch.equal(policy.log_prob_chain(obs, chain, noise=noise), chain.log_probs)
    # a parameter change moves the log-probs (they depend on the parameters)
    with torch.no_grad():
        next(policy.head.net.parameters()).add_(0.1)
    assert not torch.equal(policy.log_prob_chain(obs, chain, noise=noise), chain.log_probs)


def test_chain_log_prob_gradient_reaches_the_network():
    policy = make_policy("flow")
    obs = torch.randn(4, 2, 3)
    chain = policy.chain(obs)
    policy.log_prob_chain(obs, chain).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.head.net.parameters() if p.dim() > 1)


def test_diffusion_chain_std_floor_and_ddpm_std():
    policy = make_policy("diffusion", steps=10)
    chain = policy.chain(torch.randn(3, 2, 3), noise=StdFloor(0.1))
    assert chain.stds.min() >= 0.1 - 1e-7
    # DDPM's own std at the noisiest step is above the floor
    assert chain.stds[:, 0].min() > 0.1
    # eta 0 (DDIM) sampling is deterministic; eta 1 is not
    obs = torch.randn(3, 2, 3)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(policy.sample(obs, stochastic=True, generator=g), policy.sample(obs, stochastic=True, generator=g))


def test_ddim_subgrid():
    policy = make_policy("diffusion", train_steps=20, steps=5)
    grid = policy.head.time_grid(5)
    assert grid.tolist() == [19, 14, 10, 5, 0, -1]
    with pytest.raises(ValueError, match="1..20"):
        policy.head.time_grid(21)


def test_meanflow_jvp_target_matches_finite_differences():
    torch.manual_seed(0)
    net = ResidualMLP(2, 3, 5, n_times=2, hidden=32, depth=3).double()
    head = MeanFlow(net)
    z, v, cond = torch.randn(4, 3, 2, dtype=torch.float64), torch.randn(4, 3, 2, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    t = torch.tensor([0.9, 0.5, 0.7, 0.3], dtype=torch.float64)
    r = torch.tensor([0.1, 0.5, 0.2, 0.0], dtype=torch.float64)
    u, target = head.target(z, t, r, v, cond)
    h = 1e-6
    with torch.no_grad():
        plus = head.average_velocity(z + h * v, t + h, r, cond)
        minus = head.average_velocity(z - h * v, t - h, r, cond)
    total_derivative = (plus - minus) / (2 * h)
    assert torch.allclose(target, v - (t - r).view(-1, 1, 1) * total_derivative, atol=1e-7)
    assert torch.allclose(u, head.average_velocity(z, t, r, cond))


def test_meanflow_one_step_sampling_formula():
    policy = make_policy("meanflow", horizon=4, obs_horizon=1)
    obs, noise = torch.randn(3, 3), torch.randn(3, 4, 2)
    cond = policy.encode(obs)
    u = policy.head.average_velocity(noise, torch.ones(3), torch.zeros(3), cond)
    assert torch.allclose(policy.sample(obs, noise=noise, steps=1), policy.to_actions(noise - u))


def test_bad_inputs_are_one_line_errors():
    policy = make_policy()
    with pytest.raises(ValueError, match=r"observation 'obs' has shape \(4, 3\); expected \[B, 2, 3\]"):
        policy.act(torch.randn(4, 3))
    with pytest.raises(ValueError, match="noise has shape"):
        policy.sample(torch.randn(4, 2, 3), noise=torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match="batch action has shape"):
        policy.loss({"obs": torch.randn(4, 2, 3), "action": torch.randn(4, 3, 2)})
    with pytest.raises(ValueError, match="unknown head type 'ddpm'"):
        make_policy(type="ddpm")
    with pytest.raises(ValueError, match="horizon divisible by 4"):
        make_policy(backbone="unet", horizon=6, backbone_opts={"channels": [8, 16, 32]})


def test_normalization_round_trip_and_action_clipping():
    stats = {"obs": {"min": [0.0] * 3, "max": [10.0] * 3}, "action": {"min": [-2.0, 0.0], "max": [2.0, 1.0]}}
    policy = make_policy(stats=stats)
    x = torch.tensor([[[-5.0, 0.0], [0.5, 0.5], [1.0, -1.0], [0.0, 3.0]]])
    assert torch.allclose(policy.to_actions(x), torch.tensor([[[-2.0, 0.5], [1.0, 0.75], [2.0, 0.0], [0.0, 1.0]]]))


def test_image_policies_resnet_and_vit():
    for net in ("resnet", "vit"):
        cfg = {
            "obs_keys": ["obs", "cam"],
            "obs_horizon": 2,
            "horizon": 4,
            "act_steps": 4,
            "normalizer": {"obs": "limits", "action": "limits"},
            "encoder": {"type": "image", "net": net, "features": 16, "shift": 2},
            "backbone": BACKBONES["mlp"],
            "head": HEADS["diffusion"] | {"steps": 3},
        }
        policy = Policy(cfg, {"obs": (3,), "cam": (16, 16, 3)}, 2, stats_for({"obs": 3, "action": 2}))
        obs = {"obs": torch.randn(2, 2, 3), "cam": torch.randint(0, 256, (2, 2, 16, 16, 3), dtype=torch.uint8)}
        policy.loss(obs | {"action": torch.rand(2, 4, 2)}).backward()
        assert all(p.grad is not None for p in policy.encoder.parameters())
        policy.eval()
        assert policy.act(obs).shape == (2, 4, 2)
        assert torch.equal(policy.sample(obs, noise=torch.zeros(2, 4, 2)), policy.sample(obs, noise=torch.zeros(2, 4, 2)))


def test_random_shift_moves_content_by_integers():
    img = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    torch.manual_seed(0)
    out = random_shift(img, 2)
    assert out.shape == img.shape
    # every output pixel is some input pixel of the same image and channel (replicate padding)
    for n in range(2):
        for c in range(3):
            assert set(out[n, c].flatten().tolist()) <= set(img[n, c].flatten().tolist())


def test_spec_and_weights_round_trip(tmp_path):
    from omegaconf import OmegaConf

    from rlft.policies.ema import EMA
    from rlft.runtime.run import Run

    policy = make_policy("shortcut", stats=stats_for({"obs": 3, "action": 2}))
    with torch.no_grad():
        policy.action_norm.center.fill_(0.25)
    ema = EMA(policy, decay=0.5, every=1)
    run = Run.start(OmegaConf.create({"run": {"dir": str(tmp_path), "name": "r"}}))
    write_spec(run.folder, policy, {"env": "hopper"})
    run.save_checkpoint(1, {"policy": policy, "ema": ema})
    assert json.loads((run.folder / "policy.json").read_text())["action_dim"] == 2
    loaded = load_policy(run.folder)
    obs, noise = torch.randn(3, 2, 3), torch.randn(3, 4, 2)
    assert torch.equal(loaded.sample(obs, noise=noise), policy.eval().sample(obs, noise=noise))
    assert loaded.action_norm.center[0] == 0.25
    with pytest.raises(CheckpointError, match="no policy.json"):
        load_policy(tmp_path)
    # a self-contained policy folder (what rlft ships) loads the same weights
    save_policy(loaded, tmp_path / "packed", {"env": "hopper"})
    assert sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["policy.json", "policy.safetensors"]
    packed = load_policy(tmp_path / "packed")
    assert torch.equal(packed.sample(obs, noise=noise), loaded.sample(obs, noise=noise))
    with pytest.raises(CheckpointError, match="no such run or policy folder"):
        load_policy(tmp_path / "missing")


def test_ema_follows_then_averages():
    from rlft.policies.ema import EMA

    model = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.5, every=2, start=4)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model, 1)  # not an update step
    assert ema.model.weight.item() != 2.0
    ema.update(model, 2)  # before start: copy
    assert ema.model.weight.item() == 2.0
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model, 4)
    assert ema.model.weight.item() == 3.0


def test_mish_matches_torch_in_value_gradient_and_jvp():
    x = torch.linspace(-40, 40, 4001, dtype=torch.float64, requires_grad=True)  # both softplus branches (|x| > 20)
    ours, theirs = Mish()(x), torch.nn.functional.mish(x)
    assert torch.allclose(ours, theirs, atol=1e-12)
    assert torch.allclose(*(torch.autograd.grad(y.sum(), x)[0] for y in (ours, theirs)), atol=1e-12)
    v = torch.randn_like(x)
    assert torch.allclose(torch.func.jvp(Mish(), (x.detach(),), (v,))[1], torch.func.jvp(torch.nn.functional.mish, (x.detach(),), (v,))[1], atol=1e-12)
