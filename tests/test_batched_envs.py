import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rlft.envs
from rlft.cli import main
from rlft.envs.registry import env_id
from rlft.envs.wrappers import ActionChunk, ObsHistory, SingleEnv
from rlft.errors import ConfigError


def gym_vector(name, n_envs, **kwargs):
    same_step = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    return gym.make_vec(env_id(name), num_envs=n_envs, vectorization_mode="sync", vector_kwargs=same_step, **kwargs)


def final_obs_of(obs, info):
    final = np.array(obs, copy=True)
    if "final_obs" in info:
        for i in np.flatnonzero(info["_final_obs"]):
            final[i] = info["final_obs"][i]
    return final


@pytest.mark.parametrize(
    "name, steps, kwargs, action_scale, ends",
    [
        ("hopper", 1100, {}, 1.5, "terminated"),  # beyond the action bounds: MuJoCo clamps ctrl, the cost uses the raw action
        ("walker2d", 1100, {}, 1.0, "terminated"),
        ("halfcheetah", 1050, {}, 1.0, "truncated"),  # never terminates: truncated at 1000
        ("ant", 1000, {}, 1.0, "terminated"),
        ("walker2d", 200, {"max_episode_steps": 40, "healthy_z_range": (0.5, 2.0)}, 0.2, "truncated"),
    ],
)
def test_native_matches_gymnasium_vector_env(name, steps, kwargs, action_scale, ends):
    n = 3
    ours = rlft.envs.make(name, n, backend="native", seed=7, dtype=torch.float64, **kwargs)
    ref = gym_vector(name, n, **kwargs)
    obs, _ = ours.reset()
    ref_obs, _ = ref.reset(seed=7)
    np.testing.assert_allclose(obs.numpy(), ref_obs, rtol=0, atol=1e-6)
    rng = np.random.default_rng(1)
    low, high = ref.single_action_space.low * action_scale, ref.single_action_space.high * action_scale
    terminations = truncations = episodes = 0
    for _ in range(steps):
        actions = rng.uniform(low, high, size=(n, len(low))).astype(np.float32)
        obs, reward, terminated, truncated, info = ours.step(torch.from_numpy(actions))
        ref_obs, ref_reward, ref_terminated, ref_truncated, ref_info = ref.step(actions)
        np.testing.assert_allclose(obs.numpy(), ref_obs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(info["final_obs"].numpy(), final_obs_of(ref_obs, ref_info), rtol=0, atol=1e-6)
        np.testing.assert_allclose(reward.numpy(), ref_reward, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(terminated.numpy(), ref_terminated)
        np.testing.assert_array_equal(truncated.numpy(), ref_truncated)
        terminations += int(ref_terminated.sum())
        truncations += int(ref_truncated.sum())
        episodes += int((ref_terminated | ref_truncated).sum())
    assert (terminations if ends == "terminated" else truncations) > 0
    assert len(ours.pop_episodes()) == episodes
    ours.close()
    ref.close()


def test_native_episode_statistics_and_auto_seed():
    env = rlft.envs.make("hopper", 2, backend="native", seed=0, dtype=torch.float64)
    env.reset()
    returns, lengths, episodes, env_order = np.zeros(2), np.zeros(2, int), [], []
    for _ in range(200):
        _, reward, _, _, info = env.step(torch.ones(2, 3))
        returns += reward.numpy()
        lengths += 1
        for i in np.flatnonzero(info["done"].numpy()):
            env_order.append(int(i))
            episodes.append((returns[i], lengths[i]))
            returns[i], lengths[i] = 0, 0
    popped = env.pop_episodes()
    assert len(popped) == len(episodes) > 0 and env.pop_episodes() == []
    assert [p["length"] for p in popped] == [length for _, length in episodes]
    np.testing.assert_allclose([p["return"] for p in popped], [r for r, _ in episodes])
    assert all(p["success"] is None for p in popped)
    assert [p["env"] for p in popped] == env_order
    # reset(seed) reproduces the same first observation; the constructor's seed was used once
    first, _ = env.reset(seed=0)
    kept = first.clone()
    env.step(torch.ones(2, 3))  # returned tensors are the caller's: later steps leave them alone
    assert torch.equal(first, kept)
    again, _ = env.reset(seed=0)
    assert torch.equal(first, again)


def chunk_reference(name, n, seed, chunks, act_steps):
    """Each sub-env by hand with gymnasium: step the chunk until the episode ends, then reset."""
    envs = [gym.make(env_id(name)) for _ in range(n)]
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    results = []
    for chunk in chunks:
        rewards, steps, finals, dones = np.zeros(n), np.zeros(n, int), obs.copy(), np.zeros(n, bool)
        for i, e in enumerate(envs):
            for k in range(act_steps):
                o, r, term, trunc, _ = e.step(chunk[i, k])
                rewards[i] += r
                steps[i] += 1
                obs[i] = finals[i] = o
                if term or trunc:
                    dones[i] = True
                    obs[i] = e.reset()[0]
                    break
        results.append((obs.copy(), rewards, steps, finals, dones))
    return results


@pytest.mark.parametrize("backend", ["native", "gymnasium"])
def test_action_chunk_matches_stepping_by_hand(backend):
    n, act_steps, horizon = 3, 5, 8
    rng = np.random.default_rng(0)
    chunks = rng.uniform(-1, 1, size=(30, n, horizon, 3)).astype(np.float32)
    env = ActionChunk(rlft.envs.make("hopper", n, backend=backend, seed=3, dtype=torch.float64), act_steps)
    env.reset()
    partial_chunks = 0
    for chunk, (ref_obs, ref_reward, ref_steps, ref_final, ref_done) in zip(chunks, chunk_reference("hopper", n, 3, chunks, act_steps)):
        obs, reward, terminated, truncated, info = env.step(torch.from_numpy(chunk))
        np.testing.assert_allclose(obs.numpy(), ref_obs, atol=1e-6)
        np.testing.assert_allclose(info["final_obs"].numpy(), ref_final, atol=1e-6)
        np.testing.assert_allclose(reward.numpy(), ref_reward, atol=1e-6)
        np.testing.assert_array_equal(info["steps"].numpy(), ref_steps)
        np.testing.assert_array_equal((terminated | truncated).numpy(), ref_done)
        partial_chunks += int((ref_steps < act_steps).sum())
    assert partial_chunks > 0, "no episode ended inside a chunk"
    assert sum(e["length"] for e in env.pop_episodes()) > 0
    with pytest.raises(ValueError, match=r"action chunks must have shape \(n_envs, H >= act_steps, act_dim\) = \(3, >=5, 3\), got \(3, 4, 3\)"):
        env.step(torch.zeros(3, 4, 3))
    env.close()


def test_action_chunk_on_async_vector_env_keeps_new_episodes_untouched():
    env = ActionChunk(rlft.envs.make("hopper", 2, backend="gymnasium_async", seed=0), 8)
    env.reset()
    for _ in range(10):
        obs, reward, terminated, truncated, info = env.step(torch.ones(2, 8, 3))
        ended = (terminated | truncated).numpy()
        assert (info["steps"].numpy()[~ended] == 8).all() and (info["steps"].numpy()[ended] <= 8).all()
        if ended.any():
            i = int(np.flatnonzero(ended)[0])
            fresh = gym.make("Hopper-v5")
            # a new episode's first obs is within the reset noise of the initial pose: untouched by leftover actions
            init = fresh.unwrapped.init_qpos[1:]
            assert np.abs(obs[i, :5].numpy() - init).max() <= 0.005 + 1e-6
            break
    else:
        pytest.fail("no episode ended")
    env.close()


def test_async_workers_ignore_ctrl_c_so_the_main_process_can_stop_gracefully():
    env = rlft.envs.make("hopper", 2, backend="gymnasium_async", seed=0)
    env.reset()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the main process is untouched
    for process in env.vec.processes:  # what a terminal Ctrl-C does to the process group's workers
        os.kill(process.pid, signal.SIGINT)
    time.sleep(0.5)
    obs, *_ = env.step(torch.zeros(2, 3))  # a worker hit by KeyboardInterrupt would fail this step
    assert obs.shape == (2, 11) and all(process.is_alive() for process in env.vec.processes)
    env.close()


def test_obs_history_pads_with_first_obs_and_stacks_final_obs():
    env = ObsHistory(rlft.envs.make("hopper", 2, backend="native", seed=0), 3)
    obs, _ = env.reset()
    assert obs.shape == (2, 3, 11) and torch.equal(obs[:, 0], obs[:, 2])
    first = obs[:, 0].clone()
    obs, *_, info = env.step(torch.zeros(2, 3))
    assert torch.equal(obs[:, 0], first) and torch.equal(obs[:, 1], first) and not torch.equal(obs[:, 2], first)
    previous = obs
    for _ in range(200):
        obs, _, _, _, info = env.step(torch.ones(2, 3))
        if info["done"].any():
            i = int(torch.nonzero(info["done"])[0])
            assert torch.equal(info["final_obs"][i, :2], previous[i, 1:])  # history up to the last obs
            assert not torch.equal(info["final_obs"][i, 2], obs[i, 2])
            assert torch.equal(obs[i, 0], obs[i, 2]) and torch.equal(obs[i, 1], obs[i, 2])  # new episode, padded
            break
        previous = obs
    else:
        pytest.fail("no episode ended")
    chunked = ActionChunk(ObsHistory(rlft.envs.make("hopper", 2, backend="native", seed=0), 2), 4)
    obs, _ = chunked.reset()
    obs, *_, info = chunked.step(torch.zeros(2, 4, 3))
    assert obs.shape == info["final_obs"].shape == (2, 2, 11)


def test_interface_device_dtype_and_spaces():
    env = rlft.envs.make("ant", 2, seed=0)
    assert env.backend == "native" and (env.n_envs, env.obs_dim, env.act_dim) == (2, 105, 8)
    assert env.single_observation_space.shape == (105,) and env.single_action_space.shape == (8,)
    assert env.action_low.dtype == torch.float32 and torch.equal(env.action_high, torch.ones(8)) and env.max_episode_steps == 1000
    obs, _ = env.reset()
    assert obs.dtype == torch.float32 and obs.device.type == "cpu"
    obs, reward, terminated, truncated, info = env.step(np.zeros((2, 8), np.float64))  # numpy and float64 actions are accepted
    assert reward.shape == (2,) and reward.dtype == torch.float32 and terminated.dtype == truncated.dtype == info["done"].dtype == torch.bool
    assert info["final_obs"].shape == (2, 105)
    gym_env = rlft.envs.make("Pendulum-v1", 2, seed=0, dtype=torch.float64)
    assert gym_env.backend == "gymnasium" and gym_env.reset()[0].dtype == torch.float64
    gym_env.close()


def test_bad_inputs_give_clear_errors():
    env = rlft.envs.make("hopper", 2, backend="native")
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(torch.zeros(2, 3))
    env.reset()
    with pytest.raises(ValueError, match=r"actions must have shape \(n_envs, act_dim\) = \(2, 3\), got \(3, 2\)"):
        env.step(torch.zeros(3, 2))
    with pytest.raises(ConfigError, match="unknown env 'hoper'"):
        rlft.envs.make("hoper", 2)
    with pytest.raises(ConfigError, match="unknown backend 'cuda'; choose one of: auto, native, gpu, workers, gymnasium, gymnasium_async"):
        rlft.envs.make("hopper", 2, backend="cuda")
    with pytest.raises(ConfigError, match="the native backend runs Hopper-v5, Walker2d-v5, HalfCheetah-v5, Ant-v5, not Pendulum-v1"):
        rlft.envs.make("Pendulum-v1", 2, backend="native")
    with pytest.raises(ConfigError, match="does not support xml_file for Hopper-v5"):
        rlft.envs.make("hopper", 2, backend="native", xml_file="x.xml")
    assert rlft.envs.make("hopper", 1, xml_file="hopper.xml").backend == "gymnasium"  # auto falls back


@pytest.mark.parametrize("backend", ["native", "gymnasium"])
def test_single_env_view_passes_gymnasium_env_checker(backend):
    check_env(SingleEnv(rlft.envs.make("walker2d", 1, backend=backend)), skip_render_check=True)


def test_render_gives_a_frame_or_a_clear_error():
    env = rlft.envs.make("hopper", 2, backend="native", seed=0)
    env.reset()
    try:
        frame = env.render(1)
    except RuntimeError as e:
        assert "MUJOCO_GL" in str(e)
    else:
        assert frame.shape == (480, 480, 3) and frame.dtype == np.uint8
    env.close()


def test_bench_rollout_cli_json(capsys):
    import json

    assert main(["bench", "rollout", "env=halfcheetah", "n_envs=4", "steps=5", "warmup=2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"env_steps_per_s", "backend", "n_envs", "physics_limit_steps_per_s"} <= result.keys()
    assert result["backend"] == "native" and result["n_envs"] == 4 and result["physics_limit_steps_per_s"] > 0
    assert main(["bench", "rollout", "backend=gpus"]) == 2
    assert "rlft: error: unknown backend 'gpus'" in capsys.readouterr().err


def mjx_device():
    """cuda when MJX has a GPU; cpu only on request (compiling MJX on CPU takes about a minute per task)."""
    from rlft.envs.backends.mjx import gpu_available, mjx_installed

    if not mjx_installed():
        pytest.skip("MJX is not installed (pip install -e .[gpu])")
    if gpu_available():
        return "cuda"
    if not os.environ.get("RLFT_MJX_CPU_TEST"):
        pytest.skip("no CUDA GPU with MJX; set RLFT_MJX_CPU_TEST=1 to run MJX on CPU (about a minute to compile)")
    return "cpu"


def test_gpu_backend_agrees_with_native_from_the_same_start():
    device = mjx_device()
    steps, n = 30, 2
    gpu = rlft.envs.make("hopper", n, backend="gpu", seed=0, device=device, reset_noise_scale=0.0)
    cpu = rlft.envs.make("hopper", n, backend="native", seed=0, reset_noise_scale=0.0)
    gpu_obs, _ = gpu.reset()
    cpu_obs, _ = cpu.reset()
    assert gpu_obs.device.type == device
    torch.testing.assert_close(gpu_obs.cpu(), cpu_obs, atol=1e-5, rtol=0)
    actions = torch.rand(steps, n, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for t in range(steps):
        gpu_obs, gpu_reward, gpu_term, _, _ = gpu.step(actions[t].to(device))
        cpu_obs, cpu_reward, cpu_term, _, _ = cpu.step(actions[t])
        # MJX is float32 with its own solver: close, not equal
        torch.testing.assert_close(gpu_obs.cpu(), cpu_obs, atol=2e-2, rtol=0)
        torch.testing.assert_close(gpu_reward.cpu(), cpu_reward, atol=2e-2, rtol=0)
    chunked = ActionChunk(gpu, 4)
    obs, reward, *_, info = chunked.step(torch.zeros(n, 4, 3, device=device))
    assert obs.device.type == reward.device.type == info["steps"].device.type == device
    gpu.close()


class _Countdown(gym.Env):
    """Ends after 3 steps; the episode succeeds when the summed actions are positive."""

    observation_space = gym.spaces.Box(-10, 10, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.total = 0, 0.0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        self.total += float(action[0])
        done = self.t == 3
        return np.full(1, self.t, np.float32), 1.0, done, False, {"is_success": self.total > 0} if done else {}


def test_gymnasium_backend_reports_success():
    gym.register("RlftCountdown-v0", entry_point=_Countdown)
    env = rlft.envs.make("RlftCountdown-v0", 2, seed=0)
    assert env.backend == "gymnasium"
    env.reset()
    for _ in range(3):
        obs, reward, terminated, *_ = env.step(torch.tensor([[1.0], [-1.0]]))
    assert terminated.tolist() == [True, True] and obs[:, 0].tolist() == [0.0, 0.0]
    assert [(e["env"], e["return"], e["length"], e["success"]) for e in env.pop_episodes()] == [(0, 3.0, 3, True), (1, 3.0, 3, False)]
    env.close()
