"""DSRL (Wagenmaker et al. 2025): improve a frozen diffusion or flow policy by choosing its initial noise.

The base policy is frozen and made deterministic given its initial noise w [H, A] (DDIM eta 0 or the
flow ODE). The RL agent's action is w, bounded to [-b, b]; the env executes the first ``act_steps``
actions of base(s, w). The weights of the base never change.

* ``algo=dsrl``: stable-baselines3's SAC, used as the library it is, on :class:`LatentNoiseVecEnv` (an
  SB3 ``VecEnv`` over rlft's batched env);
* ``algo=dsrl_na``: noise aliasing, :class:`rlft.algos.dsrl_na.NoiseAliasedSAC`.

Chunk-aware steps: one transition is one executed chunk; its reward is sum_k gamma^k r_k over the env
steps it took, it bootstraps with gamma^act_steps (SAC's gamma is set to that), and the logs count env
steps, not transitions. One fit iteration = ``train.n_steps`` chunk steps of all ``train.n_envs`` envs
with the learner's gradient steps interleaved (``utd`` per chunk step, as DSRL's ``train_freq`` 1).
Before the first iteration, ``warmup_steps`` chunk steps with w ~ N(0, I) (the base policy as is, clipped
to the bound) fill the replay buffer.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from rlft.algos.dsrl_na import NoiseActor, NoiseAliasedSAC
from rlft.algos.online import run_online
from rlft.algos.registry import LoadOptions
from rlft.algos.sb3_sac import SB3SACState
from rlft.envs import make
from rlft.envs.wrappers import ActionChunk, ObsHistory
from rlft.errors import CheckpointError, ConfigError
from rlft.policies.acting import ExportSpec, Graph, OverFrozenBase
from rlft.policies.policy import Policy
from rlft.runtime.checkpoint import load_weights, policy_from_spec, read_spec, run_checkpoint
from rlft.runtime.run import Run


class LatentNoiseVecEnv(VecEnv):
    """An SB3 ``VecEnv`` whose action is the base policy's initial noise for the whole chunk.

    Observations: the base's ``normalized_state`` [N, T * D] (numpy). Actions: w [N, H * A] in [-bound, bound].
    A step runs the base's deterministic sampler from w (``steps`` sampling steps) and executes the
    chunk's first ``act_steps`` actions; the reward is discounted within the chunk by ``gamma``. Ended
    episodes reset by themselves; their info has SB3's ``terminal_observation`` and
    ``TimeLimit.truncated``, and ``env_steps`` counts the env steps of every chunk.
    After a step, ``last`` holds what DSRL-NA stores: the raw observations before it and after it
    (the ended episode's final one where it ended) [N, T, D] and the executed actions, normalized
    [N, act_steps, A]; ``env_steps`` counts env steps (:meth:`take_env_steps` reads and clears it).
    """

    def __init__(self, env_name: str, n_envs: int, base: Policy, bound: float, gamma: float, steps: int | None = None, backend: str = "auto"):
        if any(len(s) != 1 for s in base.obs_shapes.values()) or len(base.obs_shapes) != 1:
            raise ValueError("DSRL supports state-observation policies (one flat observation key) so far")
        self.batched = make(env_name, n_envs, backend=backend, device=base.action_norm.center.device)
        self.env = ActionChunk(ObsHistory(self.batched, base.obs_horizon), base.act_steps, gamma=gamma)
        self.base, self.bound, self.steps = base.eval().requires_grad_(False), float(bound), steps
        self.render_mode = None
        obs_dim = base.obs_horizon * next(iter(base.obs_shapes.values()))[0]
        super().__init__(
            n_envs,
            gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            gym.spaces.Box(-self.bound, self.bound, (base.horizon * base.action_dim,), np.float32),
        )
        self._obs: torch.Tensor | None = None
        self._actions: np.ndarray | None = None
        self.last: dict[str, torch.Tensor] = {}
        self.env_steps = 0

    def features(self, obs: torch.Tensor) -> np.ndarray:
        return self.base.normalized_state(obs).cpu().numpy()

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self._seeds[0])
        self._reset_seeds()
        self._obs = obs
        return self.features(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    @torch.no_grad()
    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._obs is None or self._actions is None:
            raise RuntimeError("reset() and step_async() come before step_wait()")
        base = self.base
        noise = torch.as_tensor(self._actions, dtype=torch.float32).view(self.num_envs, base.horizon, base.action_dim).clamp(-self.bound, self.bound)
        chunk = base.sample(self._obs, noise=noise, steps=self.steps)
        executed = base.action_norm(chunk[:, : base.act_steps].float())
        obs, reward, terminated, truncated, info = self.env.step(chunk)
        done = (terminated | truncated).cpu().numpy()
        steps = info["steps"].cpu().numpy()
        self.env_steps += int(steps.sum())
        infos: list[dict[str, Any]] = [{"env_steps": int(s)} for s in steps]
        if done.any():
            finals = self.features(info["final_obs"])
            time_limit = (truncated & ~terminated).cpu().numpy()
            for i in np.flatnonzero(done):
                infos[i] |= {"terminal_observation": finals[i], "TimeLimit.truncated": bool(time_limit[i])}
        self.last = {"obs": self._obs, "next_obs": info["final_obs"], "executed": executed}
        self._obs = obs
        return self.features(obs), reward.float().cpu().numpy(), done, infos

    @property
    def raw_obs(self) -> torch.Tensor:
        """The current raw observation history [N, T, D]."""
        if self._obs is None:
            raise RuntimeError("reset() comes first")
        return self._obs

    def take_env_steps(self) -> int:
        """Env steps since the last call."""
        steps, self.env_steps = self.env_steps, 0
        return steps

    def pop_episodes(self) -> list[dict[str, Any]]:
        """Episodes finished since the last call (undiscounted ``return``, ``length``, ``success``)."""
        return self.batched.pop_episodes()

    def close(self) -> None:
        self.env.close()

    # SB3's VecEnv API for per-sub-env attributes; the batched env has one set for all
    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        raise NotImplementedError(f"LatentNoiseVecEnv has no per-sub-env method '{method_name}'")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices: Any) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)


class SteeredPolicy(OverFrozenBase):
    """The fine-tuned controller: noise actor + frozen base, for ``rlft eval``.

    ``actor(features [N, F], deterministic) -> [N, H * A]`` in [-1, 1] (SB3's squashed actor or DSRL-NA's);
    the noise is ``bound`` times that, and the base samples deterministically from it. Evaluation
    uses the actor's mean (``default_stochastic`` False), whatever the base's own sampler default.
    """

    def __init__(self, base: Policy, actor: nn.Module, bound: float, steps: int | None):
        super().__init__(base, steps)
        self.actor, self.bound = actor, float(bound)
        self.act_steps, self.horizon = base.act_steps, base.horizon

    @torch.no_grad()
    def noise(self, obs: torch.Tensor | dict[str, torch.Tensor], stochastic: bool = False) -> torch.Tensor:
        """obs [N, T, D] (or its one-key dict) -> initial noise [N, H, A]."""
        squashed = self.actor(self.base.normalized_state(obs), deterministic=not stochastic)
        return (self.bound * squashed).view(-1, self.base.horizon, self.base.action_dim)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, steps: int | None = None, stochastic: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw action chunk [N, H, A]; ``stochastic`` samples the actor's noise instead of its mean
        (from torch's global RNG: ``generator`` is accepted for :func:`evaluate`'s call and not used)."""
        return self.base.sample(obs, noise=self.noise(obs, stochastic), steps=steps or self.steps)

    def export_spec(self, steps: int) -> ExportSpec:
        """The actor's mean noise and the base's sampler in one graph: ``obs -> raw action chunk``, no noise input."""
        spec = self.base.export_spec(steps)
        chunk = Graph(lambda obs: self.sample(obs, steps=steps), ())
        return replace(spec, kind="steered", chunk=chunk, noise_shape=None, meta={"steered": {"bound": self.bound}})


# ---- SAC over the noise (stable-baselines3) ---------------------------------------------------------
def _sac_policy_class() -> type:
    """SB3's SAC policy with LayerNorm after every hidden layer (DSRL's networks), built the SB3 way."""
    from stable_baselines3.common.torch_layers import create_mlp
    from stable_baselines3.sac.policies import SACPolicy

    class LayerNormSACPolicy(SACPolicy):
        def make_actor(self, features_extractor: Any = None) -> Any:
            actor = super().make_actor(features_extractor)
            arch, act = self.net_args["net_arch"], self.net_args["activation_fn"]
            actor.latent_pi = nn.Sequential(*create_mlp(actor.features_dim, -1, arch, act, post_linear_modules=[nn.LayerNorm]))
            return actor

        def make_critic(self, features_extractor: Any = None) -> Any:
            critic = super().make_critic(features_extractor)
            args = self.critic_kwargs
            in_dim = critic.q_networks[0][0].in_features  # features + action
            for i in range(critic.n_critics):
                net = nn.Sequential(*create_mlp(in_dim, 1, args["net_arch"], args["activation_fn"], post_linear_modules=[nn.LayerNorm]))
                setattr(critic, f"qf{i}", net)
                critic.q_networks[i] = net
            return critic

    return LayerNormSACPolicy


def sac_policy_kwargs(algo: DictConfig) -> dict[str, Any]:
    return {
        "net_arch": {"pi": [algo.hidden] * algo.depth, "qf": [algo.hidden] * algo.depth},
        "activation_fn": nn.Tanh,
        "log_std_init": algo.log_std_init,
        "n_critics": 2,
    }


def build_sac_policy(obs_dim: int, noise_dim: int, algo: DictConfig) -> nn.Module:
    """A stand-alone SB3 SAC policy of the run's shape (for loading a run's actor back)."""
    from stable_baselines3.sac.policies import SACPolicy

    policy_cls = _sac_policy_class() if algo.layer_norm else SACPolicy
    spaces = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32), gym.spaces.Box(-1.0, 1.0, (noise_dim,), np.float32)
    return policy_cls(*spaces, lambda _: algo.lr, **sac_policy_kwargs(algo))


class SB3SAC:
    """``algo=dsrl``: stable-baselines3's SAC on a :class:`LatentNoiseVecEnv` (SAC's gamma = gamma^act_steps)."""

    def __init__(self, venv: LatentNoiseVecEnv, algo: DictConfig, seed: int, device: torch.device):
        from stable_baselines3 import SAC
        from stable_baselines3.common.logger import Logger

        self.venv = venv
        self.model = SAC(
            _sac_policy_class() if algo.layer_norm else "MlpPolicy",
            venv,
            learning_rate=algo.lr,
            buffer_size=algo.buffer_size,
            learning_starts=0,  # the warm-up fills the buffer with the base policy's own noise instead
            batch_size=algo.batch_size,
            tau=algo.tau,
            gamma=algo.gamma**venv.base.act_steps,
            train_freq=1,
            gradient_steps=algo.utd,
            ent_coef="auto",
            target_entropy=algo.target_entropy,
            policy_kwargs=sac_policy_kwargs(algo),
            seed=seed,
            device=device,
            verbose=0,
        )
        self.model.set_logger(Logger(folder=None, output_formats=[]))  # SB3 would make /tmp/SB3-<time> per learn()
        self.actor = self.model.actor
        self.state = SB3SACState(self.model)

    def modules(self) -> dict[str, nn.Module]:
        return self.state.modules()

    def optimizers(self) -> dict[str, Any]:
        return self.state.optimizers()

    def store(self, obs: np.ndarray, noise: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, done: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """One warm-up transition per sub-env, in SB3's own buffer layout (actions scaled to [-1, 1])."""
        next_obs = next_obs.copy()
        for i in np.flatnonzero(done):
            next_obs[i] = infos[i]["terminal_observation"]
        self.model.replay_buffer.add(obs, next_obs, noise / self.venv.bound, reward, done, infos)

    def continue_from(self, obs: np.ndarray) -> None:
        """SAC's rollouts go on from the warm-up's last observations (SB3 would reset the envs otherwise)."""
        self.model._last_obs = obs
        self.model._last_episode_starts = np.zeros(self.venv.num_envs, dtype=bool)

    def run(self, n_steps: int) -> dict[str, float]:
        """``n_steps`` chunk steps of every sub-env with SAC's gradient steps; SAC's training diagnostics."""
        return self.state.learn(n_steps * self.venv.num_envs)


def warm_up(venv: LatentNoiseVecEnv, learner: Any, n_steps: int) -> None:
    """Fill the learner's replay with ``n_steps`` chunk steps of the base policy as is: w ~ N(0, I), clipped to the bound."""
    obs = venv.reset()
    for _ in range(n_steps):
        noise = torch.randn(venv.num_envs, *venv.action_space.shape).clamp(-venv.bound, venv.bound).numpy()
        venv.step_async(noise)
        next_obs, reward, done, infos = venv.step_wait()
        learner.store(obs, noise, next_obs, reward, done, infos)
        obs = next_obs
    learner.continue_from(obs)


# ---- the run --------------------------------------------------------------------------------------------
class SteeringLearner:
    """The :class:`~rlft.algos.online.OnlineLearner` of DSRL and DSRL-NA: SAC over the noise of a frozen base.

    One iteration = ``train.n_steps`` chunk steps of every sub-env with the learner's gradient steps;
    the first also runs the warm-up. The run saves the frozen base as its ``policy``.
    """

    def __init__(self, cfg: DictConfig, base: Policy, rng: np.random.Generator, device: torch.device):
        algo = cfg.algo
        self.cfg, self.policy = cfg, base
        self.data_loss = None  # the base never changes; the noise actor has no likelihood of actions
        self.venv = LatentNoiseVecEnv(cfg.env.name, cfg.train.n_envs, base, algo.bound, algo.gamma, algo.steps, cfg.train.backend)
        self.venv.seed(cfg.seed)
        self.learner = SB3SAC(self.venv, algo, cfg.seed, device) if algo.name == "dsrl" else NoiseAliasedSAC(self.venv, algo)
        self.steered = SteeredPolicy(base, self.learner.actor, algo.bound, algo.steps)

    def modules(self) -> dict[str, nn.Module]:
        return self.learner.modules()

    def optimizers(self) -> dict[str, Any]:
        return self.learner.optimizers()

    def iteration(self, itr: int) -> tuple[dict[str, float], int, list[dict[str, Any]]]:
        metrics: dict[str, float] = {}
        warmup = self.cfg.algo.warmup_steps
        if itr == 1 and warmup:
            warm_up(self.venv, self.learner, warmup)
            metrics["warmup_env_steps"] = self.venv.env_steps
        metrics |= self.learner.run(self.cfg.train.n_steps)
        episodes = self.venv.pop_episodes()
        return metrics, self.venv.take_env_steps(), episodes

    def acting_policy(self) -> SteeredPolicy:
        return self.steered

    def close(self) -> None:
        self.venv.close()


def finetune_dsrl(cfg: DictConfig, run: Run) -> SteeredPolicy:
    """``rlft finetune algo=dsrl|dsrl_na``: steer ``cfg.base`` in ``cfg.env``; returns the steered policy."""
    return run_online(cfg, run, SteeringLearner)  # type: ignore[return-value]


def load_steered_policy(folder: Path, checkpoint: Path | None = None, options: LoadOptions = LoadOptions()) -> SteeredPolicy:
    """The steered policy of a ``dsrl`` / ``dsrl_na`` run folder (newest checkpoint unless given); no pickle."""
    if options.selects or options.weights not in ("auto", "policy"):
        raise ConfigError(
            f"{folder} is a {read_spec(folder)['meta']['algo']} run: it acts with its noise actor over the frozen base (no EMA weights, no Q selection)"
        )
    spec = read_spec(folder)
    steering = spec.get("meta", {}).get("algo_config")
    if steering is None:
        raise CheckpointError(f"{folder}/policy.json has no 'algo_config'; it was written by an older rlft, run the fine-tuning again")
    base = policy_from_spec(spec, folder)
    obs_dim = base.obs_horizon * next(iter(base.obs_shapes.values()))[0]
    noise_dim = base.horizon * base.action_dim
    if spec["meta"]["algo"] == "dsrl":
        holder: nn.Module = build_sac_policy(obs_dim, noise_dim, DictConfig(steering))
        name = "sac"
    else:
        holder = NoiseActor(obs_dim, noise_dim, int(steering["hidden"]), int(steering["depth"]), bool(steering["layer_norm"]), float(steering["log_std_init"]))
        name = "actor"
    load_weights(run_checkpoint(folder, checkpoint), {"policy": base, name: holder})
    actor = holder.actor if name == "sac" else holder
    return SteeredPolicy(base.eval(), actor.eval(), float(steering["bound"]), steering["steps"]).eval()
