"""Export: parity of every policy kind and every acting kind (Q selection, DSRL, ResiP), the controller's queues and
ensembling, a torch-free robot process, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_policies import BACKBONES, HEADS, stats_for

from rlft.cli import main
from rlft.errors import ExportError
from rlft.export.controller import Controller
from rlft.export.exporter import export_policy, random_inputs
from rlft.policies.policy import Policy
from rlft.runtime.checkpoint import save_policy

ROOT = Path(__file__).resolve().parent.parent


def small_policy(head="diffusion", backbone="mlp", obs_horizon=2, cameras=None, net="resnet", obs_dim=3, action_dim=2, act_steps=2, **head_opts):
    """A small policy with a non-trivial normalizer (so normalization inside the graph is checked)."""
    torch.manual_seed(0)
    shapes = {"obs": (obs_dim,)} | {k: (16, 16, 3) for k in cameras or ()}
    cfg = {
        "obs_keys": sorted(shapes),
        "obs_horizon": obs_horizon,
        "horizon": 4,
        "act_steps": act_steps,
        "normalizer": {"obs": "limits", "action": "limits"},
        "noise_clip": 3.0,
        "encoder": {"type": "image", "net": net, "features": 8, "shift": 2} if cameras else {"type": "state"},
        "backbone": BACKBONES[backbone],
        "head": HEADS[head] | head_opts,
    }
    stats = stats_for({"obs": obs_dim, "action": action_dim})
    stats["obs"] |= {"min": -np.arange(1, obs_dim + 1) * 2.0, "max": np.arange(1, obs_dim + 1) * 3.0}
    stats["action"] |= {"min": -0.5 * np.ones(action_dim), "max": np.linspace(0.5, 2.0, action_dim)}
    return Policy(cfg, shapes, action_dim, stats).eval()


KINDS = {
    "ddim-1-mlp": dict(head="diffusion", steps=1),
    "ddim-4-unet": dict(head="diffusion", backbone="unet", steps=4),
    "ddim-10-mlp-history1": dict(head="diffusion", steps=10, obs_horizon=1),
    "flow-4-mlp": dict(head="flow", steps=4),
    "shortcut-2-transformer": dict(head="shortcut", backbone="transformer", steps=2),
    "meanflow-1-unet": dict(head="meanflow", backbone="unet", steps=1),
    "image-resnet": dict(head="diffusion", steps=2, cameras=["cam"]),
    "image-vit": dict(head="flow", steps=2, cameras=["cam", "wrist"], net="vit"),
}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", KINDS)
def test_parity_every_policy_kind(kind, fmt, tmp_path):
    opts = dict(KINDS[kind])
    steps = opts.pop("steps")
    policy = small_policy(**opts, steps=steps)
    meta = export_policy(policy, tmp_path / "out", fmt, steps, {"name": kind})
    assert meta["parity"]["max_abs_diff"] <= 1e-4
    saved = json.loads((tmp_path / "out" / "controller.json").read_text())
    assert saved["parity"] == meta["parity"] and saved["steps"] == steps and saved["obs_horizon"] == policy.obs_horizon
    # another batch size than the export's and the parity check's (dynamic batch), fresh inputs
    noise, obs = random_inputs(policy, 5, torch.Generator().manual_seed(7))
    got = Controller(tmp_path / "out").predict({k: v.numpy() for k, v in obs.items()}, noise.numpy())
    with torch.no_grad():
        expected = policy.sample(obs, noise=noise, steps=steps).numpy()
    assert got.shape == (5, 4, 2) and np.abs(got - expected).max() <= 1e-4


def acting_kind(kind):
    """A small acting policy of ``kind`` over the small flow policy, with weights that matter (nothing is zero)."""
    from omegaconf import DictConfig

    from rlft.algos.critics import TwinQ
    from rlft.algos.dsrl import SteeredPolicy, build_sac_policy
    from rlft.algos.dsrl_na import NoiseActor
    from rlft.algos.fisor import FeasibleSelect
    from rlft.algos.offline import QSelect
    from rlft.algos.onpolicy.residual import ResidualProvider

    policy = small_policy("flow", steps=2)
    state_dim, noise_dim = policy.obs_horizon * 3, policy.horizon * policy.action_dim
    if kind == "dsrl":
        sac = build_sac_policy(state_dim, noise_dim, DictConfig({"layer_norm": True, "hidden": 16, "depth": 2, "lr": 1e-3, "log_std_init": -1.0}))
        return SteeredPolicy(policy, sac.actor, bound=1.5, steps=None).eval()
    if kind == "dsrl_na":
        return SteeredPolicy(policy, NoiseActor(state_dim, noise_dim, 16, 2, True, 0.0), bound=1.5, steps=None).eval()
    if kind in ("q_select", "fisor"):
        critic = TwinQ(policy.encoder.out_dim, noise_dim, 16, 2)
        return (QSelect(policy, critic, 6, "max") if kind == "q_select" else FeasibleSelect(policy, critic, 6)).eval()
    acting = ResidualProvider(policy, None, hidden=16, depth=2, log_std=-1.0, scale=0.5).eval_policy()
    torch.nn.init.normal_(acting.residual.mean[-1].weight, std=0.5)  # the zero-initialised output, trained
    return acting.eval()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", ["dsrl", "dsrl_na", "q_select", "fisor", "resip"])
def test_parity_every_acting_kind(kind, fmt, tmp_path):
    """The exported graphs do what the acting policy does, on a batch size that neither the trace nor the parity check used."""
    acting = acting_kind(kind)
    meta = export_policy(acting, tmp_path / "out", fmt, 2, {"name": kind})
    assert meta["parity"]["max_abs_diff"] <= 1e-4
    controller = Controller(tmp_path / "out")
    policy = small_policy("flow", steps=2)
    noise, obs = random_inputs(policy, 5, torch.Generator().manual_seed(7))
    obs_np = {k: v.numpy() for k, v in obs.items()}
    with torch.no_grad():
        if kind.startswith("dsrl"):  # the actor's mean noise and the base, observations in
            assert meta["kind"] == "steered" and meta["noise"] is None and meta["inputs"] == ["obs"]
            expected = acting.sample(obs["obs"])
            assert np.abs(controller.predict(obs_np) - expected.numpy()).max() <= 1e-4
            assert not torch.allclose(expected, policy.sample(obs, noise=torch.zeros(5, 4, 2), steps=2), atol=1e-3)  # the actor's noise is not zero
        elif kind in ("q_select", "fisor"):  # six candidates, one kept per observation
            assert meta["kind"] == "q_select" and meta["noise"]["shape"] == [6, 4, 2] and meta["select"]["candidates"] == 6
            many = torch.Generator().manual_seed(8)
            noise = torch.randn(5, 6, 4, 2, generator=many)
            expected = acting.sample(obs, noise=noise, steps=2)
            assert np.abs(controller.predict(obs_np, noise.numpy()) - expected.numpy()).max() <= 1e-4
            candidates = torch.stack([policy.sample(obs, noise=noise[:, i], steps=2) for i in range(6)], 1)
            picked = (candidates - expected[:, None]).abs().amax((2, 3)).argmin(1)
            assert len(set(picked.tolist())) > 1  # not always the same candidate
        else:  # ResiP: the base's plan for the queue, then every step's residual
            assert meta["kind"] == "residual" and meta["action"] == {"horizon": 1, "act_steps": 1, "dim": 2} and meta["residual"]["queue"] == 2
            base_action = acting.queue.plan(obs, noise, steps=2)
            assert np.abs(controller.plan(obs_np, noise.numpy()) - base_action.numpy()).max() <= 1e-4
            expected = acting.correct(obs, base_action[:, 0])
            assert np.abs(controller.correct(obs_np, base_action[:, 0].numpy()) - expected.numpy()).max() <= 1e-4
            assert not torch.allclose(expected[:, 0], policy.to_actions(base_action[:, 0]), atol=1e-3)  # the residual matters
            with pytest.raises(ValueError, match="keeps a queue of base actions"):
                controller.predict(obs_np)
            with pytest.raises(ValueError, match="temporal ensembling does not apply"):
                Controller(tmp_path / "out", ensemble=0.0)


def test_exported_resip_keeps_the_queue_of_the_pytorch_policy(tmp_path):
    """ExportedPolicy (what `rlft eval` runs) against ResidualPolicy step by step, sub-envs ending episodes at different
    steps (so some replan mid-queue), the same generator seeds; and the single-robot controller's queue."""
    from rlft.export.exporter import ExportedPolicy

    acting = acting_kind("resip")
    export_policy(acting, tmp_path / "out", "onnx", 2, {})
    exported = ExportedPolicy(tmp_path / "out")
    g_torch, g_export = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    rng = np.random.default_rng(0)
    for policy in (acting, exported):
        policy.end_episodes(torch.ones(4, dtype=torch.bool))
    for _ in range(7):
        _, obs = random_inputs(small_policy("flow", steps=2), 4, torch.Generator().manual_seed(int(rng.integers(1000))))
        expected, got = acting.sample(obs["obs"], generator=g_torch), exported.sample(obs["obs"], generator=g_export)
        assert got.shape == (4, 1, 2) and torch.allclose(got, expected, atol=1e-4)
        done = torch.from_numpy(rng.random(4) < 0.3)
        acting.end_episodes(done)
        exported.end_episodes(done)

    controller = Controller(tmp_path / "out")
    controller._run = planner = ChunkCounter(2, 2)  # plan c: base actions 10c, 10c + 1
    controller._run_residual = lambda feeds: feeds["base_action"][:, None] + 0.5
    actions = [controller.act(np.full(3, t, np.float32))[0] for t in range(5)]
    assert actions == [0.5, 1.5, 10.5, 11.5, 20.5]  # a plan every queue = 2 steps, the residual on every step
    assert [call["obs"][0, -1, 0] for call in planner.calls] == [0, 2, 4]
    controller.reset()
    assert controller.act(np.zeros(3, np.float32))[0] == 30.5  # a new episode plans first


def test_diffusion_graph_is_ddim_eta0_not_the_default_ddpm(tmp_path):
    policy = small_policy("diffusion", steps=10, eta=1.0)
    export_policy(policy, tmp_path / "out", "torchscript", 5, {})
    noise, obs = random_inputs(policy, 3, torch.Generator().manual_seed(0))
    got = Controller(tmp_path / "out").predict({k: v.numpy() for k, v in obs.items()}, noise.numpy())
    with torch.no_grad():
        assert np.abs(got - policy.sample(obs, noise=noise, steps=5, stochastic=False).numpy()).max() <= 1e-6
        assert np.abs(got - policy.sample(obs, noise=noise, steps=10).numpy()).max() > 1e-3  # K is baked in


def test_parity_failure_is_loud_and_writes_nothing(tmp_path, monkeypatch):
    import rlft.export.exporter as exporter

    write = exporter._write_graph

    def write_perturbed(graph, fmt, path, example):  # the exported weights differ from the policy's
        weight = next(graph.owner.head.net.parameters())
        with torch.no_grad():
            weight.add_(0.05)
            write(graph, fmt, path, example)
            weight.sub_(0.05)

    monkeypatch.setattr(exporter, "_write_graph", write_perturbed)
    with pytest.raises(ExportError, match=r"differs from PyTorch by .* \(> 0.0001\)"):
        export_policy(small_policy("flow", steps=2), tmp_path / "out", "torchscript", 2, {})
    assert not (tmp_path / "out").exists()


# ---- the controller -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small ONNX export (history 2, chunk 4, 2 executed) and one batch of reference outputs."""
    folder = tmp_path_factory.mktemp("export") / "onnx"
    policy = small_policy("flow", steps=2)
    export_policy(policy, folder, "onnx", 2, {"name": "small"})
    noise, obs = random_inputs(policy, 3, torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = policy.sample(obs, noise=noise, steps=2)
    np.savez(folder.parent / "reference.npz", obs=obs["obs"].numpy(), noise=noise.numpy(), action=expected.numpy())
    return folder


class ChunkCounter:
    """Stands in for the graph: chunk c (0-based call count) is [[10c + h] * A for h in 0..H-1]; records inputs."""

    def __init__(self, horizon, action_dim):
        self.horizon, self.action_dim, self.calls = horizon, action_dim, []

    def __call__(self, feeds):
        self.calls.append({k: v.copy() for k, v in feeds.items()})
        c = len(self.calls) - 1
        return np.repeat((10.0 * c + np.arange(self.horizon))[None, :, None], self.action_dim, axis=2).astype(np.float32)


def test_controller_queue_executes_act_steps_then_queries(exported):
    controller = Controller(exported)
    controller._run = counter = ChunkCounter(4, 2)
    buffer = np.zeros(3, np.float32)  # one observation buffer refilled in place, as robot drivers do
    actions = []
    for t in range(5):
        buffer[:] = t
        actions.append(controller.act(buffer)[0])
    assert actions == [0, 1, 10, 11, 20]  # act_steps = 2 of each chunk of 4
    assert len(counter.calls) == 3
    # history of 2, padded with the first observation at the start, oldest first
    assert counter.calls[0]["obs"][0, :, 0].tolist() == [0, 0]
    assert counter.calls[1]["obs"][0, :, 0].tolist() == [1, 2]
    controller.reset()
    assert controller.act(np.full(3, 9.0, np.float32))[0] == 30  # the queue was dropped: a new query
    assert counter.calls[3]["obs"][0, :, 0].tolist() == [9, 9]


@pytest.mark.parametrize("k", [0.0, 0.5])
def test_controller_temporal_ensembling(exported, k):
    controller = Controller(exported, ensemble=k)
    controller._run = counter = ChunkCounter(4, 2)
    actions = [controller.act(np.zeros(3, np.float32)) for _ in range(6)]
    assert len(counter.calls) == 6  # one query per step
    # step t averages chunk s's prediction for t (10 s + t - s) over the chunks s = t-3..t, oldest weighted exp(0)
    for t, action in enumerate(actions):
        starts = np.arange(max(0, t - 3), t + 1)
        weights = np.exp(-k * np.arange(len(starts)))
        assert np.allclose(action, (weights * (9 * starts + t)).sum() / weights.sum())
    assert actions[0].shape == (2,)


def test_controller_draws_clipped_noise_and_checks_shapes(exported):
    controller = Controller(exported, seed=0)
    noise = controller.draw_noise(2000)
    assert noise.dtype == np.float32 and np.abs(noise).max() == 3.0  # clipped, and clipping happened
    obs = np.zeros((2, 2, 3), np.float32)
    assert not np.array_equal(Controller(exported, seed=0).predict(obs), Controller(exported, seed=1).predict(obs))
    assert np.array_equal(Controller(exported, seed=5).predict(obs), Controller(exported, seed=5).predict(obs))
    with pytest.raises(ValueError, match=r"observation 'obs' has shape \(2, 3\); expected \[B, 2, 3\]"):
        controller.predict(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="noise has shape"):
        controller.predict(obs, np.zeros((2, 4, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="not an exported policy folder"):
        Controller(exported.parent)


def test_controller_runs_in_a_process_without_torch(exported):
    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import numpy as np
from rlft.export.controller import Controller
ref = np.load({str(exported.parent / "reference.npz")!r})
controller = Controller({str(exported)!r}, seed=0)
got = controller.predict({{"obs": ref["obs"]}}, ref["noise"])
print(float(np.abs(got - ref["action"]).max()))
print(controller.act(ref["obs"][0, -1]).shape)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "omegaconf", "gymnasium", "mujoco")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout.splitlines()
    assert float(out[0]) <= 1e-4
    assert out[1] == "(2,)"
    assert out[2] == "['torch']"  # only the blocked entry itself


# ---- the command line ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hopper_policy(tmp_path_factory):
    """An untrained diffusion policy of Hopper's shape (episodes end fast), saved as a policy folder."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("policies") / "tiny-hopper"
    cfg = {
        "obs_keys": ["obs"],
        "obs_horizon": 1,
        "horizon": 4,
        "act_steps": 4,
        "normalizer": {"obs": "limits", "action": "limits"},
        "noise_clip": 3.0,
        "encoder": {"type": "state"},
        "backbone": BACKBONES["mlp"],
        "head": HEADS["diffusion"],
    }
    policy = Policy(cfg, {"obs": (11,)}, 3, stats_for({"obs": 11, "action": 3}))
    save_policy(policy, folder, {"env": "hopper", "ref_returns": {"random": 0.0, "expert": 1000.0}})
    return folder


def test_cli_export_then_eval_gives_the_pytorch_return(hopper_policy, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", f"run={hopper_policy}", "format=onnx", "steps=3", f"out={out}"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["out"] == str(out) and line["steps"] == 3 and line["parity_max_abs_diff"] <= 1e-4 and line["control_dt"] == 0.008
    meta = json.loads((out / "controller.json").read_text())
    assert meta["source"]["env"] == "hopper" and meta["source"]["run"] == str(hopper_policy) and meta["action"] == {"horizon": 4, "act_steps": 4, "dim": 3}
    common = ["n_episodes=3", "n_envs=2", "seed=5", "--json"]
    assert main(["eval", f"run={out}", *common]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert main(["eval", f"run={hopper_policy}", "steps=3", "sampler=deterministic", *common]) == 0
    torch_result = json.loads(capsys.readouterr().out)
    assert exported["steps"] == 3 and exported["episodes"] == 3
    assert exported["length_mean"] == torch_result["length_mean"]
    assert exported["return_mean"] == pytest.approx(torch_result["return_mean"], rel=1e-4)
    assert main(["eval", f"run={out / 'policy.onnx'}", *common]) == 0  # the graph file itself
    assert json.loads(capsys.readouterr().out)["return_mean"] == exported["return_mean"]
    assert main(["eval", f"run={out}", "steps=5", *common]) == 2
    assert "exported with 3 sampling steps" in capsys.readouterr().err
    before = (out / "controller.json").read_bytes()
    assert main(["export", f"run={hopper_policy}", "format=onnx", "steps=3", f"out={out}"]) == 2  # never replaced silently
    assert "already exists" in capsys.readouterr().err and (out / "controller.json").read_bytes() == before
    assert main(["export", f"run={hopper_policy}", "format=onnx", "steps=2", f"out={out}", "force=true"]) == 0
    assert json.loads((out / "controller.json").read_text())["steps"] == 2


def test_default_output_folders(hopper_policy):
    from rlft.export.exporter import default_out
    from rlft.runtime.checkpoint import resolve_policy

    assert default_out(hopper_policy, "onnx", 3) == hopper_policy / "export" / "onnx-3steps"
    shipped = resolve_policy("hopper-v5-medium-flow_mlp")
    assert default_out(shipped, "torchscript", 4) == Path("exports/hopper-v5-medium-flow_mlp/torchscript-4steps")  # never into the package


def test_cli_errors_are_one_line(hopper_policy, tmp_path, capsys):
    assert main(["export", f"run={hopper_policy}", "format=tflite"]) == 2
    assert main(["export", f"run={hopper_policy}", "steps=50"]) == 2
    assert main(["export", f"run={tmp_path / 'missing'}"]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and all(e.startswith("rlft: error: ") for e in errors)
    assert "choose one of: onnx, torchscript" in errors[0] and "1..10" in errors[1]


def test_cli_bench_latency(hopper_policy, capsys):
    assert main(["bench", "latency", f"run={hopper_policy}", "steps=2", "repeats=5", "warmup=1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2 and result["batch"] == 1 and set(result["latency_ms"]) == {"torch", "torchscript", "onnxruntime"}
    assert all(0 < r["median"] <= r["p99"] for r in result["latency_ms"].values())
