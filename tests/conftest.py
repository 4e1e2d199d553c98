import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; MuJoCo reads it when first imported

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_episodes(lengths, obs_dim=3, act_dim=2, seed=0):
    """Concatenated toy episodes whose obs[t, 0] is the global step index (easy to check windows)."""
    g = np.random.default_rng(seed)
    total = int(sum(lengths))
    obs = g.normal(size=(total, obs_dim)).astype(np.float32)
    obs[:, 0] = np.arange(total)
    action = g.normal(size=(total, act_dim)).astype(np.float32)
    action[:, 0] = np.arange(total)
    ends = np.cumsum(lengths)
    terminated = np.zeros(total, bool)
    terminated[ends - 1] = True
    return {"obs": obs, "action": action, "reward": np.ones(total, np.float32), "terminated": terminated, "truncated": np.zeros(total, bool)}, ends


# ---- the toy fine-tuning task (PointMass), shared by the online fine-tuning tests ------------------------
def record_scripted(path, env_name, demonstrator, steps, n_envs=20, seed=0):
    """``steps`` transitions of a bundled task's scripted demonstrator, as ``rlft collect expert.scripted=`` records them."""
    from rlft.algos.expert import ScriptedPolicy
    from rlft.datasets.record import record
    from rlft.datasets.store import write_episodes

    data, ends = record(ScriptedPolicy(env_name, demonstrator, seed), env_name, steps, n_envs, seed, stochastic=True)
    write_episodes(path, data, ends, {"env": env_name})


def record_demos(path, steps=5000, seed=0):
    """The curling (poor) demonstrator on PointMass (about 47 steps an episode)."""
    record_scripted(path, "pointmass", "curling", steps, seed=seed)


TOY_POLICY = ["policy.backbone.hidden=64", "policy.horizon=2", "policy.act_steps=2"]
TOY_PRESETS = {  # the policies the toy fixture pretrains: preset -> extra overrides
    "flow_mlp": [],
    "diffusion_mlp": ["policy.head.train_steps=10", "policy.head.steps=10"],
}


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """Demonstrations of the poor expert and a policy of each kind pretrained on them (``pre-<preset>``)."""
    root = tmp_path_factory.mktemp("toy")
    from rlft.cli import main

    record_demos(root / "demos.zarr")
    for preset, extra in TOY_PRESETS.items():
        args = ["pretrain", f"policy={preset}", "env=pointmass", f"data.path={root / 'demos.zarr'}", "data.env=pointmass", *TOY_POLICY, *extra]
        args += [
            "train.steps=1500",
            "train.warmup=50",
            "train.checkpoint_every=500",
            "ema.start=200",
            "eval.episodes=0",
            f"run.dir={root}",
            f"run.name=pre-{preset}",
        ]
        assert main(args) == 0
    return root


# ---- the toy safe task (SafePointMass), shared by the safe offline RL tests ----------------------------
def record_safety_demos(path, steps=4000, seed=0):
    """The mixed demonstrator on SafePointMass (even sub-envs: the unsafe shortcut; odd: the detour), with costs."""
    record_scripted(path, "pointmass_safe", "mixed", steps, seed=seed)


# ---- bad-input checks shared by the reliability tests -----------------------------------------------------
def snapshot(root) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes: equal snapshots before and after mean nothing was changed."""
    from pathlib import Path

    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    """What the command printed on stderr, asserted to be one ``rlft: error:`` line."""
    err = capsys.readouterr().err
    assert err.startswith("rlft: error: ") and err.count("\n") == 1, err
    return err
