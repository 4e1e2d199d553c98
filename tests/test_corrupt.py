"""`rlft data corrupt` (RIQL's protocol): exact rates per element, only the chosen element changed, magnitudes
within their bounds, the same output for the same seed, a gradient attack that lowers a trained critic's Q,
and one line for bad input."""

import json

import numpy as np
import pytest
import torch

from rlft.cli import main
from rlft.datasets.corrupt import PGD_STEP, detection, eligible_rows, pgd
from rlft.datasets.store import EpisodeStore, write_episodes


def smooth_store(path, episodes=12, length=40, seed=0):
    """Smooth toy trajectories: obs (sin, cos) of a phase advancing at a per-episode speed, action = that speed's
    cosine term, reward a smooth function of the phase; episodes end terminated."""
    g = np.random.default_rng(seed)
    obs, action, reward = [], [], []
    for _ in range(episodes):
        phase = g.uniform(0, 2 * np.pi) + g.uniform(0.08, 0.12) * np.arange(length)
        obs.append(np.stack([np.sin(phase), np.cos(phase)], 1))
        action.append(np.cos(phase)[:, None])
        reward.append(1.0 + 0.5 * np.sin(phase))
    ends = np.arange(1, episodes + 1) * length
    terminated = np.zeros(ends[-1], bool)
    terminated[ends - 1] = True
    data = {
        "obs": np.concatenate(obs).astype(np.float32),
        "action": np.concatenate(action).astype(np.float32),
        "reward": np.concatenate(reward).astype(np.float32),
        "terminated": terminated,
        "truncated": np.zeros(ends[-1], bool),
    }
    write_episodes(path, data, ends, {"env": "toy"})
    return path


def _corrupt(tmp_path, capsys, src, out, *args):
    assert main(["data", "corrupt", str(src), *args, "--out", str(tmp_path / out)]) == 0
    return json.loads(capsys.readouterr().out), EpisodeStore(tmp_path / out)


@pytest.mark.parametrize("element", ["obs", "action", "reward", "dynamics"])
def test_random_corruption_is_exact_in_rate_element_and_bounds(tmp_path, capsys, element):
    src = EpisodeStore(smooth_store(tmp_path / "clean.zarr"))
    printed, out = _corrupt(tmp_path, capsys, src.path, "c.zarr", "--kind", "random", "--on", element, "--rate", "0.3", "--scale", "2.0", "--seed", "3")
    record = out.meta["corruption"]
    rows = np.asarray(record["rows"][element])
    eligible = eligible_rows(src, element)
    assert printed["corrupted"] == {element: round(0.3 * len(eligible))} == {element: len(rows)}
    assert record | {"rows": None} == {"kind": "random", "on": element, "rate": 0.3, "scale": 2.0, "seed": 3, "rows": None}
    if element == "dynamics":  # the next observation of transition t is the observation of step t + 1 of its episode
        assert np.isin(rows - 1, eligible).all() and not np.isin(rows, src.episode_starts).any()
    key = "obs" if element == "dynamics" else element
    for k in src.keys:  # nothing else changed
        if k != key:
            np.testing.assert_array_equal(out[k], src[k])
    changed = np.flatnonzero((out[key] != src[key]).reshape(src.n_steps, -1).any(1))
    np.testing.assert_array_equal(changed, rows)
    delta = (out[key] - src[key])[rows].astype(np.float64)
    if element == "reward":  # replaced by U[-30 scale, 30 scale]
        assert np.abs(out["reward"][rows]).max() <= 60.0 and np.abs(out["reward"][rows]).max() > 40.0
    else:  # x + U[-scale, scale] x std per dimension
        std = src[key].astype(np.float64).std(0)
        assert (np.abs(delta) <= 2.0 * std + 1e-5).all() and (np.abs(delta).max(0) > 1.5 * std).all()
    again, _ = _corrupt(tmp_path, capsys, src.path, "d.zarr", "--kind", "random", "--on", element, "--rate", "0.3", "--scale", "2.0", "--seed", "3")
    np.testing.assert_array_equal(EpisodeStore(tmp_path / "d.zarr")[key], out[key])
    other, _ = _corrupt(tmp_path, capsys, src.path, "e.zarr", "--kind", "random", "--on", element, "--rate", "0.3", "--scale", "2.0", "--seed", "4")
    assert EpisodeStore(tmp_path / "e.zarr").meta["corruption"]["rows"][element] != record["rows"][element]


def test_all_corrupts_obs_action_and_reward_on_their_own_draws(tmp_path, capsys):
    src = EpisodeStore(smooth_store(tmp_path / "clean.zarr"))
    printed, out = _corrupt(tmp_path, capsys, src.path, "c.zarr", "--kind", "random", "--on", "all", "--rate", "0.25")
    n = round(0.25 * src.n_steps)
    assert printed["corrupted"] == {"obs": n, "action": n, "reward": n}
    rows = {e: set(r) for e, r in out.meta["corruption"]["rows"].items()}
    assert rows["obs"] != rows["action"] != rows["reward"]
    _, alone = _corrupt(tmp_path, capsys, src.path, "o.zarr", "--kind", "random", "--on", "obs", "--rate", "0.25")
    np.testing.assert_array_equal(alone["obs"], out["obs"])  # each element's draw depends on the seed and the element only
    found = detection(out.meta["corruption"], sorted(rows["obs"]))
    assert found["precision"] == 1.0 and found["recall_by_element"]["obs"] == 1.0 and found["recall"] < 0.6
    assert main(["data", "info", str(out.path), "--json"]) == 0  # the record's rows shown as counts
    assert json.loads(capsys.readouterr().out)["corruption"] == {
        "kind": "random",
        "on": "all",
        "rate": 0.25,
        "scale": 1.0,
        "seed": 0,
        "rows": printed["corrupted"],
    }


def test_pgd_takes_signed_steps_inside_the_box():
    x, std = torch.zeros(4, 2), torch.tensor([1.0, 3.0])
    start = torch.tensor([[0.5, -0.5], [-0.9, 0.2], [0.0, 0.0], [1.0, 1.0]])
    out = pgd(x, std, 1.0, lambda z: z.sum(1), steps=30, start=start)  # minimising the sum: every lambda decreases by 0.3
    np.testing.assert_allclose(out.numpy(), ((start - 30 * PGD_STEP).clamp(-1.0, 1.0) * std).numpy(), atol=1e-6)
    far = pgd(x, std, 0.5, lambda z: -(z**2).sum(1), steps=200, start=torch.zeros(4, 2) + 0.1)  # a maximum of |x| ends on the box
    np.testing.assert_allclose(far.abs().numpy(), (0.5 * std).expand(4, 2).numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def critic_run(tmp_path_factory):
    """A small iql run on the smooth toy data, whose critic the adversarial corruption attacks."""
    root = tmp_path_factory.mktemp("critic")
    smooth_store(root / "clean.zarr")
    args = ["offline", "algo=iql", f"data.path={root / 'clean.zarr'}", "data.env=null", "env=pointmass", "algo.policy.backbone.hidden=32"]
    args += ["algo.critic.hidden=32", "train.steps=200", "train.batch_size=64", "train.log_every=50", "train.checkpoint_every=200", "eval.episodes=0"]
    assert main([*args, f"run.dir={root}", "run.name=iql"]) == 0
    return root


def test_adversarial_corruption_lowers_the_critics_q_within_the_box(critic_run, tmp_path, capsys):
    from rlft.algos.attack import critic_adversary
    from rlft.datasets.corrupt import state_keys

    src = EpisodeStore(critic_run / "clean.zarr")
    critic = ["--kind", "adversarial", "--critic", str(critic_run / "iql"), "--rate", "0.3"]
    printed, out = _corrupt(tmp_path, capsys, src.path, "obs.zarr", *critic, "--on", "obs")
    rows = np.asarray(out.meta["corruption"]["rows"]["obs"])
    assert printed["corrupted"] == {"obs": len(rows)} and out.meta["corruption"]["critic"] == str(critic_run / "iql")
    std = src["obs"].astype(np.float64).std(0)
    assert (np.abs(out["obs"][rows] - src["obs"][rows]) <= std + 1e-5).all()
    adversary = critic_adversary(critic_run / "iql", src, state_keys(src))
    action = torch.from_numpy(src["action"][rows])
    with torch.no_grad():
        before = adversary.q({"obs": torch.from_numpy(src["obs"][rows])}, action)
        after = adversary.q({"obs": torch.from_numpy(out["obs"][rows])}, action)
        random_box = torch.from_numpy(src["obs"][rows] + np.random.default_rng(0).uniform(-1, 1, (len(rows), 2)).astype(np.float32) * std.astype(np.float32))
        random_q = adversary.q({"obs": random_box}, action)
    assert (after < before).float().mean() > 0.95 and after.mean() < random_q.mean(), (before.mean(), random_q.mean(), after.mean())
    _, rew = _corrupt(tmp_path, capsys, src.path, "rew.zarr", *critic, "--on", "reward", "--scale", "0.5")
    rows = np.asarray(rew.meta["corruption"]["rows"]["reward"])
    np.testing.assert_allclose(rew["reward"][rows], -0.5 * src["reward"][rows])  # RIQL's adversarial reward: -scale x r
    _, dyn = _corrupt(tmp_path, capsys, src.path, "dyn.zarr", *critic, "--on", "dynamics")
    rows = np.asarray(dyn.meta["corruption"]["rows"]["dynamics"])
    with torch.no_grad():  # the attack on next observations lowers V(s')
        lower = adversary.next_value({"obs": torch.from_numpy(dyn["obs"][rows])}) < adversary.next_value({"obs": torch.from_numpy(src["obs"][rows])})
    assert lower.float().mean() > 0.95


def _image_store(path):
    n = 10
    data = {"obs/state": np.zeros((n, 3), np.float32), "obs/image": np.zeros((n, 4, 4, 3), np.uint8), "action": np.zeros((n, 2), np.float32)}
    data |= {"reward": np.zeros(n, np.float32), "terminated": np.zeros(n, bool), "truncated": np.zeros(n, bool)}
    write_episodes(path, data, [n])
    return path


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--kind", "random", "--on", "obs", "--rate", "0"], 2, "--rate 0.0: the fraction"),
        (["--kind", "random", "--on", "obs", "--rate", "1.5"], 2, "--rate 1.5: the fraction"),
        (["--kind", "random", "--on", "obs", "--scale", "-1"], 2, "--scale -1.0: the corruption range must be > 0"),
        (["--kind", "random", "--on", "obs", "--rate", "0.001"], 2, "corrupts no transition"),
        (["--kind", "adversarial", "--on", "obs"], 2, "--critic <run folder of an iql, dql or ofql run>"),
        (["--kind", "random", "--on", "obs", "--critic", "x"], 2, "--kind random takes none"),
        (["--kind", "adversarial", "--on", "obs", "--critic", "nowhere/run"], 1, "no such run or policy folder"),
        (["--kind", "random", "--on", "everything"], 2, "invalid choice: 'everything'"),
        (["--kind", "random", "--on", "obs", "IMAGE"], 1, "'obs/image' is uint8 of per-step shape (4, 4, 3) (an image or not a float vector)"),
        (["--kind", "random", "--on", "obs", "EXISTS"], 2, "already exists; choose another output or add --force"),
        (["--kind", "random", "--on", "obs", "TWICE"], 1, "already corrupted (random on obs); corrupt the clean store"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, code, words):
    src = smooth_store(tmp_path / "clean.zarr", episodes=2, length=20)
    out = tmp_path / "out.zarr"
    if "IMAGE" in args:
        src = _image_store(tmp_path / "image.zarr")
    if "EXISTS" in args:
        out.mkdir()
    if "TWICE" in args:
        assert main(["data", "corrupt", str(src), "--kind", "random", "--on", "obs", "--out", str(tmp_path / "once.zarr")]) == 0
        src = tmp_path / "once.zarr"
    capsys.readouterr()
    argv = ["data", "corrupt", str(src), *[a for a in args if a not in ("IMAGE", "EXISTS", "TWICE")], "--out", str(out)]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    assert rc == code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err, err
    assert ("EXISTS" in args) == out.exists()
