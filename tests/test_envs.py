import gymnasium as gym
import numpy as np
import pytest

from rlft.envs.registry import env_config, env_id, make_vector, normalized_score
from rlft.errors import ConfigError


@pytest.mark.parametrize("name, gid", [("hopper", "Hopper-v5"), ("walker2d", "Walker2d-v5"), ("halfcheetah", "HalfCheetah-v5"), ("ant", "Ant-v5")])
def test_short_names_match_configs(name, gid):
    assert env_id(name) == gid == env_config(name).id
    assert gid in gym.registry


def test_unknown_env():
    with pytest.raises(ConfigError, match="unknown env 'hoppr'"):
        env_id("hoppr")


def test_vector_env_keeps_final_obs_on_autoreset():
    env = make_vector("hopper", 3, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 11)
    done_seen = False
    for _ in range(200):
        obs, rew, term, trunc, info = env.step(np.ones((3, 3), np.float32))  # falls over quickly
        if np.any(term | trunc):
            done_seen = True
            i = int(np.flatnonzero(term | trunc)[0])
            assert info["final_obs"][i] is not None and not np.allclose(info["final_obs"][i], obs[i])
            break
    assert done_seen
    env.close()


def test_normalized_score_d4rl_refs():
    ref = env_config("hopper").d4rl_ref
    assert normalized_score(ref.random, ref.random, ref.expert) == pytest.approx(0.0)
    assert normalized_score(ref.expert, ref.random, ref.expert) == pytest.approx(100.0)
    assert normalized_score(1607.0, ref.random, ref.expert) == pytest.approx(100 * (1607 + 20.272305) / (3234.3 + 20.272305))
