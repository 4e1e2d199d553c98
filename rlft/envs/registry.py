"""Environment factory: short names -> gymnasium ids, vectorised with gymnasium's vector API."""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig, OmegaConf

from rlft.envs.proxy import PROXY_TASKS, proxy_kwargs
from rlft.envs.robosuite_tasks import TASKS as ROBOSUITE_TASKS
from rlft.envs.robosuite_tasks import image_id
from rlft.envs.safety import SAFE_VELOCITY, costs_in_info
from rlft.errors import ConfigError
from rlft.paths import CONFIG_DIR

# Short name -> gymnasium id. configs/env/<name>.yaml carries the same id and the reference returns.
LOCOMOTION = {
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v5",
    "halfcheetah": "HalfCheetah-v5",
    "ant": "Ant-v5",
}


# bullet-safety-gym's Run / Circle tasks (the `safety` extra; `make install-safety`), with their own info["cost"].
BULLET_SAFETY = {
    f"{agent}_{task}": f"Safety{agent.capitalize()}{task.capitalize()}-v0" for task in ("run", "circle") for agent in ("ball", "car", "drone", "ant")
}

# Short names of the tasks rlft bundles (registered with gymnasium by rlft.envs.toy).
BUNDLED = {"pointmass": "rlft/PointMass-v0", "pointmass_safe": "rlft/SafePointMass-v0"}

# robosuite manipulation tasks (the robosuite extra; registered with gymnasium by rlft.envs.robosuite_tasks).
# <task>_img: the same task observed by cameras (agentview + wrist, 84x84) and the robot's own state.
MANIPULATION = {name: gym_id for name, (_, gym_id, _) in ROBOSUITE_TASKS.items()} | {
    f"{name}_img": image_id(gym_id) for name, (_, gym_id, _) in ROBOSUITE_TASKS.items()
}


def env_id(name: str) -> str:
    """Gymnasium id for a short name (``hopper`` -> ``Hopper-v5``, ``hopper_vel`` -> ``Hopper-v5`` with a
    velocity cost, see :func:`velocity_limit`, ``hopper_fwd`` -> ``Hopper-v5`` with a proxy reward, see
    :mod:`rlft.envs.proxy`); full ids pass through."""
    import rlft.envs.toy  # noqa: F401  (registers the bundled tasks)

    if name in LOCOMOTION:
        return LOCOMOTION[name]
    if name in PROXY_TASKS:
        return LOCOMOTION[PROXY_TASKS[name][0]]
    if name in SAFE_VELOCITY:
        return SAFE_VELOCITY[name]
    if name in BULLET_SAFETY or (name.startswith("Safety") and name not in gym.registry):
        try:
            import bullet_safety_gym  # noqa: F401  (registers its tasks with gymnasium)
        except ImportError:
            raise ConfigError(f"env {name} is a bullet-safety-gym task: install it with make install-safety (the safety extra)") from None
        name = BULLET_SAFETY.get(name, name)
    if name in BUNDLED:
        return BUNDLED[name]
    if name in MANIPULATION:
        return MANIPULATION[name]
    if name in gym.registry:
        return name
    short = sorted(LOCOMOTION | BUNDLED | MANIPULATION | SAFE_VELOCITY | BULLET_SAFETY | PROXY_TASKS)
    raise ConfigError(f"unknown env '{name}'; short names: {', '.join(short)}, or any registered gymnasium id")


def velocity_limit(name: str) -> float | None:
    """The forward-velocity limit of a velocity-constrained task's short name (``hopper_vel``), else None."""
    from rlft.envs.safety import VELOCITY_LIMITS

    return VELOCITY_LIMITS[SAFE_VELOCITY[name]] if name in SAFE_VELOCITY else None


def make(name: str, cost_penalty: float = 0.0, **kwargs: Any) -> gym.Env:
    """One gymnasium env by short name or id (seed it with its first ``reset(seed=...)``). Velocity-constrained
    tasks (``hopper_vel``) put the step's cost in ``info["cost"]``; ``cost_penalty`` > 0 subtracts that many
    times the cost from the reward (a fixed Lagrangian weight, for training constrained experts)."""
    from rlft.envs.safety import CostPenalty, VelocityCost

    env = gym.make(env_id(name), **(proxy_kwargs(name) | kwargs))
    limit = velocity_limit(name)
    if limit is not None:
        env = VelocityCost(env, limit)
    if cost_penalty:
        if limit is None and not costs_in_info(env_id(name)):
            raise ConfigError(f"env {name} has no safety cost to penalise; cost penalties apply to hopper_vel, walker2d_vel, ...")
        env = CostPenalty(env, cost_penalty)
    return env


def spaces(name: str, kwargs: Mapping[str, Any] | None = None) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
    """The per-step observation shape of each key (``obs`` for flat observations) and the action shape of env ``name``."""
    from rlft.envs.obs import obs_shapes

    env = make(name, **dict(kwargs or {}))
    try:
        return obs_shapes(env.observation_space), tuple(env.action_space.shape)
    finally:
        env.close()


def check_fits_env(what: str, obs_shape: tuple[int, ...] | Mapping[str, tuple[int, ...]] | None, action_shape: tuple[int, ...], env: Mapping[str, Any]) -> None:
    """``what`` (a dataset or a policy) can act in ``env`` (an env config); else a one-line ConfigError before anything
    trains. ``obs_shape``: a flat state's per-step shape (checked against a flat env), or per-key shapes (cameras +
    state), each of which the env must observe alike (the env may have more keys), or None: not checked."""
    env_obs, env_action = spaces(env["name"], env.get("kwargs"))
    flat_env = env_obs.get("obs") if list(env_obs) == ["obs"] else None
    problems = []
    if isinstance(obs_shape, Mapping):
        if any(env_obs.get(k) != tuple(s) for k, s in obs_shape.items()):
            problems.append(f"observations {dict(obs_shape)} but env={env['name']} observes {env_obs}")
    elif obs_shape is not None and flat_env is not None and tuple(obs_shape) != flat_env:
        problems.append(f"observations of shape {tuple(obs_shape)} but env={env['name']} observes {flat_env}")
    if tuple(action_shape) != env_action:
        problems.append(f"actions of shape {tuple(action_shape)} but env={env['name']} takes {env_action}")
    if problems:
        raise ConfigError(f"{what} has {' and '.join(problems)}; choose the env it was made for")


def make_vector(name: str, n_envs: int, seed: int | None = None, asynchronous: bool = False, kwargs: Mapping[str, Any] | None = None) -> gym.vector.VectorEnv:
    """``n_envs`` copies stepped together by gymnasium's sync or async vector env.

    Autoreset is SAME_STEP: a finished sub-env is reset inside ``step`` and its last observation is
    in ``info["final_obs"]``, which bootstrapping on truncation needs.
    """
    env = gym.make_vec(
        env_id(name),
        num_envs=n_envs,
        vectorization_mode="async" if asynchronous else "sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        **(proxy_kwargs(name) | dict(kwargs or {})),
    )
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def normalized_score(returns: np.ndarray | float, random_return: float, expert_return: float) -> np.ndarray | float:
    """D4RL normalized score: 100 * (R - R_random) / (R_expert - R_random)."""
    return 100.0 * (np.asarray(returns, dtype=np.float64) - random_return) / (expert_return - random_return)


def env_config(name: str) -> DictConfig:
    """``configs/env/<name>.yaml`` (gymnasium id, episode limit, D4RL reference returns)."""
    path = CONFIG_DIR / "env" / f"{name}.yaml"
    if not path.is_file():
        choices = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"unknown env '{name}'; choose one of: {choices}")
    return OmegaConf.load(path)
