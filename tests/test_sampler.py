import numpy as np
import torch

from conftest import make_episodes
from rlft.datasets.sampler import WindowSampler
from rlft.datasets.store import write_episodes
from rlft.policies.normalizer import Normalizer


def sampler(tmp_path, lengths=(3, 5), **kw):
    data, ends = make_episodes(list(lengths))
    return WindowSampler(write_episodes(tmp_path / "s.zarr", data, ends), **kw)


def test_history_pads_with_first_step_of_episode(tmp_path):
    s = sampler(tmp_path, obs_horizon=3, horizon=1)
    b = s.windows(np.array([0, 1, 3, 4, 7]))
    # obs[..., 0] is the global step; episode 2 starts at 3
    assert b["obs"][..., 0].tolist() == [[0, 0, 0], [0, 0, 1], [3, 3, 3], [3, 3, 4], [5, 6, 7]]


def test_chunk_pads_with_last_action_and_masks(tmp_path):
    s = sampler(tmp_path, obs_horizon=1, horizon=4)
    b = s.windows(np.array([1, 6]))
    assert b["action"][..., 0].tolist() == [[1, 2, 2, 2], [6, 7, 7, 7]]
    assert b["valid"].tolist() == [[True, True, False, False], [True, True, False, False]]
    assert b["reward"].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
    assert b["terminated"].tolist() == [[False, True, True, True], [False, True, True, True]]


def test_windows_never_cross_episodes(tmp_path):
    s = sampler(tmp_path, lengths=(2, 3, 4), obs_horizon=2, horizon=3)
    b = s.sample(256, np.random.default_rng(0))
    ends = np.array([2, 5, 9])
    first = b["obs"][:, -1, 0].long().numpy()
    episode = np.searchsorted(ends, first, side="right")
    lo, hi = np.concatenate([[0], ends[:-1]])[episode], ends[episode]
    assert np.all(b["obs"][..., 0].numpy() >= lo[:, None]) and np.all(b["action"][..., 0].numpy() < hi[:, None])


def test_sample_is_deterministic_for_seed(tmp_path):
    s = sampler(tmp_path, horizon=2)
    a, b = s.sample(8, np.random.default_rng(1)), s.sample(8, np.random.default_rng(1))
    assert torch.equal(a["action"], b["action"])


def test_normalizer_limits_and_gaussian(tmp_path):
    data, ends = make_episodes([40, 60])
    store = write_episodes(tmp_path / "s.zarr", data, ends)
    x = torch.from_numpy(data["action"])
    lim = Normalizer(store.stats["action"], "limits")
    y = lim(x)
    assert torch.allclose(y.min(0).values, torch.tensor(-1.0)) and torch.allclose(y.max(0).values, torch.tensor(1.0))
    assert torch.allclose(lim.unnormalize(y), x, atol=1e-4)
    gau = Normalizer(store.stats["action"], "gaussian")
    z = gau(x)
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-4) and torch.allclose(z.std(0, unbiased=False), torch.ones(2), atol=1e-4)


def test_normalizer_constant_dimension_is_not_blown_up():
    n = Normalizer({"min": np.array([2.0, 0.0]), "max": np.array([2.0, 4.0])})
    assert n(torch.tensor([[2.0, 4.0]])).tolist() == [[0.0, 1.0]]
