"""GPU physics: the locomotion tasks on MJX (MuJoCo in JAX), the whole step jitted, tensors via DLPack.

Physics, observation, reward, termination, time limit and autoreset run in one jitted function over
all sub-envs; actions come in and results go out through DLPack, so on a GPU nothing leaves it. MJX
runs on the jax device that matches ``device`` (``cuda:k`` -> GPU k, ``cpu`` -> jax's CPU, slow but
useful for tests). Observation and reward follow the same array functions as the native backend;
the physics is MJX's (float32, its own solver), so trajectories agree with MuJoCo's only approximately,
and reset noise comes from jax's random generator (same distributions, other streams than gymnasium's).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import numpy as np
import torch

from rlft.envs.backends.locomotion import setup
from rlft.envs.base import BatchedEnv


def mjx_installed() -> bool:
    return importlib.util.find_spec("jax") is not None and importlib.util.find_spec("mujoco.mjx") is not None


def gpu_available() -> bool:
    """CUDA for torch, and MJX with a jax GPU device."""
    if not torch.cuda.is_available() or not mjx_installed():
        return False
    import jax

    try:
        return len(jax.devices("gpu")) > 0
    except RuntimeError:
        return False


def _jax_device(device: torch.device) -> Any:
    import jax

    if device.type == "cuda":
        return jax.devices("gpu")[device.index or 0]
    return jax.devices("cpu")[0]


class MjxEnv(BatchedEnv):
    """Hopper, Walker2d, HalfCheetah or Ant v5 on MJX; same interface as the other backends."""

    backend = "gpu"

    def __init__(
        self,
        gym_id: str,
        n_envs: int,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **env_kwargs: Any,
    ) -> None:
        import jax
        from mujoco import mjx

        spec = setup(gym_id, env_kwargs, "gpu")
        super().__init__(n_envs, spec.observation_space, spec.action_space, spec.max_episode_steps, seed, device, dtype)
        self.task, self.params, self.frame_skip, self.dt = spec.task, spec.params, spec.frame_skip, spec.dt
        self._jax_device = _jax_device(self.device)
        self._model = mjx.put_model(spec.model, device=self._jax_device)
        self._step_fn = jax.jit(functools.partial(_step, self._model, spec))
        self._reset_fn = jax.jit(functools.partial(_reset_all, self._model, spec, n_envs))
        self._state: tuple[Any, ...] | None = None
        self._key = None

    def _reset(self, seed: int | None) -> torch.Tensor:
        import jax

        if seed is not None or self._key is None:
            self._key = jax.device_put(jax.random.PRNGKey(np.random.SeedSequence(seed).generate_state(1)[0]), self._jax_device)
        self._key, key = jax.random.split(self._key)
        data, elapsed, obs = self._reset_fn(key)
        self._state = (data, elapsed, obs)
        return self._torch(obs)

    def _step(self, actions: torch.Tensor, active: torch.Tensor | None):
        import jax

        data, elapsed, obs = self._state
        ctrl = self._jax(actions.to(self.device, torch.float32).contiguous())
        mask = self._jax(torch.ones(self.n_envs, dtype=torch.bool, device=self.device) if active is None else active.contiguous())
        self._key, key = jax.random.split(self._key)
        data, elapsed, obs, reward, terminated, truncated, final_obs = self._step_fn(data, elapsed, obs, ctrl, mask, key)
        self._state = (data, elapsed, obs)
        as_bool = functools.partial(self._torch, dtype=torch.bool)
        return self._torch(obs), self._torch(reward), as_bool(terminated), as_bool(truncated), self._torch(final_obs), None, None

    def _jax(self, tensor: torch.Tensor) -> Any:
        import jax

        return jax.dlpack.from_dlpack(tensor)

    def _torch(self, array: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        # a copy: jax arrays are immutable, and torch code may change its tensors in place
        return torch.from_dlpack(array).to(self.device, dtype or self.dtype, copy=True)


def _fresh(model: Any, spec: Any, key: Any) -> Any:
    """One sub-env at the start of an episode: initial pose plus gymnasium's reset noise, forward-computed."""
    import jax
    import jax.numpy as jnp
    from mujoco import mjx

    scale, m = spec.params["reset_noise_scale"], spec.model
    k_pos, k_vel = jax.random.split(key)
    qpos = jnp.asarray(m.qpos0, jnp.float32) + jax.random.uniform(k_pos, (m.nq,), minval=-scale, maxval=scale)
    if spec.task.qvel_noise == "uniform":
        qvel = jax.random.uniform(k_vel, (m.nv,), minval=-scale, maxval=scale)
    else:
        qvel = scale * jax.random.normal(k_vel, (m.nv,))
    return mjx.forward(model, mjx.make_data(model).replace(qpos=qpos, qvel=qvel))


def _observe(spec: Any, data: Any) -> Any:
    import jax.numpy as jnp

    return spec.task.observe(jnp, spec.params, data.qpos, data.qvel, data.cfrc_ext)


def _reset_all(model: Any, spec: Any, n_envs: int, key: Any) -> tuple[Any, Any, Any]:
    import jax
    import jax.numpy as jnp

    data = jax.vmap(lambda k: _fresh(model, spec, k))(jax.random.split(key, n_envs))
    return data, jnp.zeros(n_envs, jnp.int32), _observe(spec, data)


def _where(mask: Any, new: Any, old: Any) -> Any:
    """Per-sub-env choice between two batched pytrees."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)


def _step(model: Any, spec: Any, data: Any, elapsed: Any, obs: Any, ctrl: Any, active: Any, key: Any) -> tuple[Any, ...]:
    """One batched step with time limit and same-step autoreset; sub-envs with ``active`` False keep their state."""
    import jax
    import jax.numpy as jnp
    from mujoco import mjx

    task, params, contact = spec.task, spec.params, spec.task.contact_forces

    def physics(d: Any, u: Any) -> Any:
        d = jax.lax.fori_loop(0, spec.frame_skip, lambda _, x: mjx.step(model, x), d.replace(ctrl=u))
        return mjx.rne_postconstraint(model, d) if contact else d

    x_before = data.xpos[:, 1, 0] if contact else data.qpos[:, 0]
    stepped = _where(active, jax.vmap(physics)(data, ctrl), data)
    x_velocity = ((stepped.xpos[:, 1, 0] if contact else stepped.qpos[:, 0]) - x_before) / spec.dt
    reward, terminated = task.reward_and_termination(jnp, params, stepped.qpos, stepped.qvel, stepped.cfrc_ext, x_velocity, ctrl)
    reward, terminated = jnp.where(active, reward, 0.0), terminated & active
    elapsed = elapsed + active
    truncated = active & (elapsed >= spec.max_episode_steps)
    final_obs = jnp.where(active[:, None], _observe(spec, stepped), obs)
    done = terminated | truncated
    fresh = jax.lax.cond(
        done.any(),
        lambda: jax.vmap(lambda k: _fresh(model, spec, k))(jax.random.split(key, done.shape[0])),
        lambda: stepped,
    )
    data = _where(done, fresh, stepped)
    obs = jnp.where(done[:, None], _observe(spec, fresh), final_obs)
    return data, jnp.where(done, 0, elapsed), obs, reward, terminated, truncated, final_obs
