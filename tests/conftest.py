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
def record_demos(path, n_envs=20, episodes=100, seed=0):
    """Episodes of the curling (poor) demonstrator on PointMass."""
    from rlft.datasets.store import write_episodes
    from rlft.envs import make
    from rlft.envs.toy import curling_demonstrator

    env = make("pointmass", n_envs, seed=seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset()
    running = [[] for _ in range(n_envs)]
    done_eps = []
    while len(done_eps) < episodes:
        a = curling_demonstrator(obs.numpy(), rng)
        nxt, r, te, tr, _ = env.step(torch.from_numpy(a))
        for i in range(n_envs):
            running[i].append((obs[i].numpy().copy(), a[i], float(r[i]), bool(te[i]), bool(tr[i])))
            if te[i] or tr[i]:
                done_eps.append(running[i])
                running[i] = []
        obs = nxt
    cols = list(zip(*[step for ep in done_eps for step in ep]))
    data = {
        k: np.asarray(c, dtype=np.float32 if k in ("obs", "action", "reward") else bool)
        for k, c in zip(("obs", "action", "reward", "terminated", "truncated"), cols)
    }
    write_episodes(path, data, np.cumsum([len(ep) for ep in done_eps]), {"env": "pointmass"})


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
def record_safety_demos(path, n_envs=20, episodes=200, seed=0):
    """Episodes of the mixed demonstrator on SafePointMass (even sub-envs: the unsafe shortcut; odd: the detour), with costs."""
    from rlft.datasets.store import write_episodes
    from rlft.envs import make
    from rlft.envs.toy import mixed_safety_demonstrator

    env = make("pointmass_safe", n_envs, seed=seed)
    rng = np.random.default_rng(seed)
    detour = np.arange(n_envs) % 2 == 1
    obs, _ = env.reset()
    running = [[] for _ in range(n_envs)]
    done_eps = []
    while len(done_eps) < episodes:
        a = mixed_safety_demonstrator(obs.numpy(), rng, detour)
        nxt, r, te, tr, info = env.step(torch.from_numpy(a))
        for i in range(n_envs):
            running[i].append((obs[i].numpy().copy(), a[i], float(r[i]), bool(te[i]), bool(tr[i]), float(info["cost"][i])))
            if te[i] or tr[i]:
                done_eps.append(running[i])
                running[i] = []
        obs = nxt
    cols = list(zip(*[step for ep in done_eps for step in ep]))
    keys = ("obs", "action", "reward", "terminated", "truncated", "cost")
    data = {k: np.asarray(c, dtype=bool if k in ("terminated", "truncated") else np.float32) for k, c in zip(keys, cols)}
    write_episodes(path, data, np.cumsum([len(ep) for ep in done_eps]), {"env": "pointmass_safe"})


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
