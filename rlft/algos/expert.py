"""Demonstration collection: train (or load) a stable-baselines3 SAC expert, record D4RL-style datasets.

``rlft collect env=hopper`` runs three stages inside the run folder:

1. expert: SB3 SAC with the RL-Zoo MuJoCo settings, trained under :func:`rlft.runtime.trainer.fit`. One fit
   step is a block of ``gcd(snapshot_every, checkpoint_every, steps)`` env steps (one SB3 ``learn`` call),
   so snapshots and checkpoints fall on fit steps; every block logs ``env_steps``, SAC's diagnostics and the
   training episodes that ended in it. Every ``snapshot_every`` env steps the actor is saved
   (``expert/snapshots/step_N.{safetensors,json}``) and evaluated (deterministic, ``eval_episodes``, batched);
   every ``checkpoint_every`` a checkpoint (safetensors modules + optimizer states, no pickle) holds SB3's
   actor, critic, critic target, ``log_ent_coef``, the three optimizers, SB3's counters, the replay buffer
   (:class:`~rlft.algos.replay.Replay`) and the training env at the block boundary (:class:`TrainEnvState`).

   Resume is exact: an interrupted + ``--resume``d training gives bit-identical weights, replay and metrics
   to an uninterrupted one (checked by the tests), because a block ends at an SB3 rollout boundary and
   everything the next block reads is restored: weights, optimizers, counters, replay, the env's MuJoCo
   integration state (qpos, qvel, warm start, time, ...), its time-limit step count and the running
   episode's rewards, SB3's last observation, the env's reset RNG, the action space's RNG (random actions
   before ``learning_starts``) and the python / numpy / torch RNGs. Not restored: SB3's wall-clock fields
   (the Monitor's episode times, ``start_time``) and its 100-episode logging window ``ep_info_buffer``,
   which only feed SB3's own console logs (off here).
2. policies: the final snapshot is the expert; the snapshot whose return (sampled actions,
   ``medium_eval_episodes`` episodes each) is closest to ``medium_fraction`` of the expert's is the
   medium policy (as D4RL's "medium": an early-stopped SAC).
3. datasets: each policy acts stochastically (SAC's sampled actions, as in D4RL) in ``n_envs`` batched envs
   (:func:`rlft.datasets.record.record`) until ``steps`` transitions are recorded; episodes still running then
   end with ``truncated``. ``medium-replay`` (optional) is the SAC replay buffer up to the medium snapshot, as
   in D4RL, read from the newest checkpoint. Reference returns for normalized scores are measured:
   uniform-random actions, and the expert dataset's mean episode return (complete episodes).

Scripted demonstrators (``env=pointmass expert.scripted=curling datasets.kinds=[scripted]``): the bundled toy
tasks' hand-written policies (:data:`rlft.envs.toy.DEMONSTRATORS`) are recorded by stage 3 alone; their data's
mean episode return is the "expert" reference (normalized score 100 = the demonstrator).

Safety tasks (``env=hopper_vel`` ...): the datasets hold the per-step ``cost``; ``expert.cost_penalty`` trains
the expert on reward - penalty x cost (a fixed Lagrangian weight). DSRL's recipe, data that spans safe and
unsafe, high and low reward, is several such runs (penalties 0, 0.5, 2, ...) merged with ``rlft data merge``;
reference returns of safety data are its min / max episode return (DSRL's normalized reward).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from rlft.algos.replay import Replay
from rlft.algos.sb3_sac import SB3SACState
from rlft.datasets.record import record, record_successes
from rlft.datasets.store import EpisodeStore, return_range, write_episodes
from rlft.envs.registry import LOCOMOTION, MANIPULATION, check_fits_env
from rlft.envs.registry import env_id as to_env_id
from rlft.envs.registry import make as make_env
from rlft.envs.safety import SAFE_VELOCITY
from rlft.errors import ConfigError
from rlft.io import atomic_write_json
from rlft.policies.expert import ExpertPolicy
from rlft.runtime.checkpoint import latest_checkpoint, load_weights
from rlft.runtime.evaluate import evaluate
from rlft.runtime.run import Run
from rlft.runtime.trainer import fit

KINDS = ("expert", "medium", "medium-replay", "scripted")
PLOTTED = (("expert/train_return", "expert/eval_return"),)  # learning_curve.png: one panel, both returns


class UniformPolicy:
    """Uniform-random actions in the action space, [B, 1, A] (the "random" reference return)."""

    obs_horizon, act_steps = 1, 1
    default_steps = None
    default_stochastic = True
    device = torch.device("cpu")

    def __init__(self, space: gym.spaces.Box):
        self.low, self.high = torch.as_tensor(space.low, dtype=torch.float32), torch.as_tensor(space.high, dtype=torch.float32)

    def sample(self, obs: torch.Tensor, steps: int | None = None, stochastic: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(len(obs), 1, len(self.low), generator=generator)
        return self.low + u * (self.high - self.low)

    def end_episodes(self, done: torch.Tensor) -> None:
        """No memory."""


class ScriptedPolicy:
    """A scripted demonstrator (:func:`demonstrators`) as an acting policy, [B, 1, A]; sub-env i of the batch is
    index i (the safe point mass's odd sub-envs take the detour). ``quality``: the robosuite demonstrators' operator
    skill (:data:`rlft.envs.robosuite_demos.QUALITIES`); their phase machines restart in sub-envs whose episode ended."""

    obs_horizon, act_steps = 1, 1
    default_steps = None
    default_stochastic = True
    device = torch.device("cpu")

    def __init__(self, env_name: str, name: str, seed: int, quality: str = "mixed"):
        entry = demonstrators()[env_name][name]
        self.act = entry(env_name, quality) if isinstance(entry, type) else entry
        self.rng = np.random.default_rng(seed)

    def sample(self, obs: Any, steps: int | None = None, stochastic: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        if isinstance(obs, dict):  # an image task (lift_img): state then object is the state task's observation
            obs = torch.cat([obs["state"], obs["object"]], dim=-1)
        last = obs[:, -1].cpu().numpy()
        return torch.from_numpy(self.act(last, self.rng, np.arange(len(last))))[:, None]

    def end_episodes(self, done: torch.Tensor) -> None:
        """Stateful demonstrators start over in the sub-envs ``done`` [B]; the toys' have no memory."""
        if hasattr(self.act, "reset"):
            self.act.reset(done.cpu().numpy(), self.rng)


def demonstrators() -> dict[str, dict[str, Any]]:
    """Scripted demonstrators by task and name (``rlft collect env=<task> expert.scripted=<name>``): the toys'
    functions (:data:`rlft.envs.toy.DEMONSTRATORS`) and the robosuite tasks' classes (``pick`` for lift and can)."""
    from rlft.envs.robosuite_demos import OBJECT_POS, PickDemonstrator
    from rlft.envs.toy import DEMONSTRATORS

    return DEMONSTRATORS | {name: {"pick": PickDemonstrator} for task in OBJECT_POS for name in (task, f"{task}_img")}


def dataset_kinds(cfg: DictConfig) -> list[str]:
    """``datasets.kinds``, or when it is null the task's default: ``[scripted]`` with a scripted demonstrator
    (``expert.scripted``; the robosuite tasks default to theirs), else ``[expert, medium]``."""
    if cfg.datasets.kinds is not None:
        return list(cfg.datasets.kinds)
    return ["scripted"] if cfg.expert.scripted else ["expert", "medium"]


# ---- stage 1: the expert ----------------------------------------------------------------------------------
class TrainEnvState(nn.Module):
    """SB3's one training env at a block boundary, as tensors: what the next block's first step reads.

    ``mj_state`` [S] float64 (MuJoCo's ``mjSTATE_INTEGRATION``), ``elapsed`` (the time limit's step count),
    ``episode_rewards`` [t] float64 (the Monitor's rewards of the running episode), ``last_obs`` [1, obs_dim]
    and ``episode_start`` [1] (SB3's ``_last_obs`` / ``_last_episode_starts``). :meth:`pull` reads them
    from the env, :meth:`push` writes them back.
    """

    NAMES = ("mj_state", "elapsed", "episode_rewards", "last_obs", "episode_start")

    def __init__(self, model: Any):
        import mujoco

        super().__init__()
        self._model = [model]  # a list: the SB3 model is no submodule
        self.monitor = model.env.envs[0]
        self.sim = self.monitor.unwrapped
        self.time_limit = self.monitor
        while not isinstance(self.time_limit, gym.wrappers.TimeLimit):
            self.time_limit = self.time_limit.env
        self.spec = mujoco.mjtState.mjSTATE_INTEGRATION
        for name in self.NAMES:
            self.register_buffer(name, torch.zeros(0))
        self.pull()

    def pull(self) -> None:
        import mujoco

        model, sim = self._model[0], self.sim
        state = np.empty(mujoco.mj_stateSize(sim.model, self.spec))
        mujoco.mj_getState(sim.model, sim.data, state, self.spec)
        self.mj_state = torch.from_numpy(state)
        self.elapsed = torch.tensor(self.time_limit._elapsed_steps, dtype=torch.int64)
        self.episode_rewards = torch.tensor(self.monitor.rewards, dtype=torch.float64)
        self.last_obs = torch.from_numpy(np.array(model._last_obs))
        self.episode_start = torch.from_numpy(np.array(model._last_episode_starts))

    def push(self) -> None:
        import mujoco

        model, sim = self._model[0], self.sim
        mujoco.mj_setState(sim.model, sim.data, self.mj_state.numpy().copy(), self.spec)
        self.time_limit._elapsed_steps = int(self.elapsed)
        self.monitor.rewards = self.episode_rewards.tolist()
        model._last_obs = self.last_obs.numpy().copy()
        model._last_episode_starts = self.episode_start.numpy().copy()

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        for name in self.NAMES:  # shapes vary (the running episode's length)
            setattr(self, name, state[name].clone())


class ExpertLearner:
    """SB3 SAC on one gymnasium MuJoCo env with the run's ``expert`` settings, trained in blocks of env steps."""

    def __init__(self, cfg: DictConfig):
        from stable_baselines3 import SAC
        from stable_baselines3.common.logger import Logger

        ex = cfg.expert
        self.model = SAC(
            "MlpPolicy",
            make_env(cfg.env.name, cost_penalty=ex.cost_penalty),
            learning_rate=ex.learning_rate,
            buffer_size=ex.steps,
            learning_starts=ex.learning_starts,
            batch_size=ex.batch_size,
            gamma=ex.gamma,
            tau=ex.tau,
            policy_kwargs={"net_arch": list(ex.net_arch)},
            seed=cfg.seed,
            device="cpu",
            verbose=0,
        )
        self.model.set_logger(Logger(folder=None, output_formats=[]))  # progress goes to metrics.jsonl; SB3's default makes /tmp/SB3-<time>
        self.model._last_obs = self.model.env.reset()  # what SB3's first learn() would do (seeded by SAC's seed)
        self.model._last_episode_starts = np.ones(1, dtype=bool)
        self.sac = SB3SACState(self.model)
        self.env = TrainEnvState(self.model)

    def modules(self) -> dict[str, nn.Module]:
        return {**self.sac.modules(), "env": self.env}

    def optimizers(self) -> dict[str, Any]:
        return self.sac.optimizers()

    def generators(self) -> dict[str, np.random.Generator]:
        """The env's reset RNG and the action space's (SB3's random actions before ``learning_starts``)."""
        return {"env": self.env.sim.np_random, "actions": self.model.action_space.np_random}

    def block(self, env_steps: int) -> dict[str, float]:
        """``env_steps`` more steps of SAC; its diagnostics and the training episodes that ended."""
        ended_before = len(self.monitor_returns)
        self.env.push()
        metrics = self.sac.learn(env_steps)
        self.env.pull()
        ended = self.monitor_returns[ended_before:]
        if ended:
            metrics |= {"expert/train_return": float(np.mean(ended)), "expert/train_episodes": len(ended)}
        return metrics

    @property
    def monitor_returns(self) -> list[float]:
        return self.env.monitor.episode_returns


def block_size(ex: DictConfig) -> int:
    """Env steps per fit step: snapshots, checkpoints and the end all fall on block boundaries."""
    return math.gcd(ex.snapshot_every, ex.checkpoint_every, ex.steps)


def train_expert(cfg: DictConfig, run: Run) -> ExpertPolicy:
    """Stage 1 under :func:`~rlft.runtime.trainer.fit` (see the module docstring); returns the final snapshot."""
    ex = cfg.expert
    snap_dir = run.folder / "expert" / "snapshots"
    block = block_size(ex)
    learner = ExpertLearner(cfg)

    def update(step: int) -> dict[str, float]:
        metrics = learner.block(block) | {"env_steps": step * block}
        if (step * block) % ex.snapshot_every == 0:
            actor = ExpertPolicy.from_sb3(learner.model, {"step": step * block})
            result = evaluate(actor, cfg.env.name, ex.eval_episodes, seed=cfg.seed + 10_000)
            actor.info.update(return_mean=result["return_mean"], return_std=result["return_std"])
            actor.save(snap_dir / f"step_{step * block:09d}")
            metrics["expert/eval_return"] = result["return_mean"]
            if "cost_mean" in result:
                metrics["expert/eval_cost"] = result["cost_mean"]
        return metrics

    fit(
        run,
        update,
        ex.steps // block,
        modules=learner.modules(),
        optimizers=learner.optimizers(),
        generators=learner.generators(),
        log_every=1,
        checkpoint_every=ex.checkpoint_every // block,
        desc=f"SAC {cfg.env.name} ({block} env steps per step)",
        plot=PLOTTED,
    )
    snaps = sorted(snap_dir.glob("step_*.json"))
    return ExpertPolicy.load(snaps[-1].with_suffix(""))


# ---- stage 2: the medium policy -----------------------------------------------------------------------------
def pick_medium(snap_dir: Path, expert: ExpertPolicy, env_name: str, fraction: float, episodes: int, seed: int) -> ExpertPolicy:
    """The snapshot whose return with sampled actions is closest to ``fraction`` of the expert's.

    Returns are measured as the data will be recorded (SAC's sampled actions), on ``episodes``
    episodes per snapshot: the deterministic evaluations logged during training can hide a policy
    that falls in some episodes and not in others. Every measurement is kept in
    ``medium_selection.json`` beside the snapshots.
    """

    def sampled_return(policy: ExpertPolicy) -> float:
        return float(evaluate(policy, env_name, episodes, seed, stochastic=True)["return_mean"])

    target = fraction * sampled_return(expert)
    snapshots = [ExpertPolicy.load(path.with_suffix("")) for path in sorted(snap_dir.glob("step_*.json"))]
    for snapshot in snapshots:
        snapshot.info["sampled_return_mean"] = sampled_return(snapshot)
        snapshot.info["target_return"] = target
    medium = min(snapshots, key=lambda snap: abs(snap.info["sampled_return_mean"] - target))
    selection = [{"step": snap.info["step"], "sampled_return_mean": snap.info["sampled_return_mean"]} for snap in snapshots]
    atomic_write_json(snap_dir.parent / "medium_selection.json", {"target_return": target, "fraction": fraction, "episodes": episodes, "snapshots": selection})
    return medium


# ---- stage 3: the datasets ----------------------------------------------------------------------------------
def replay_data(run: Run, until_step: int, action_space: gym.spaces.Box) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """D4RL-style medium-replay: the SAC replay buffer of the run's newest checkpoint, from the first step up to the medium snapshot."""
    replay = Replay(int(run.cfg.expert.steps))
    load_weights(latest_checkpoint(run.folder), {"replay": replay})
    n = min(int(until_step), replay.size)
    rows = {k: v[:n, 0].numpy() for k, v in replay.data.items()}  # one training env: sub-env axis 0
    scaled = rows["actions"].astype(np.float32)  # SB3 stores SAC actions scaled to [-1, 1]
    action = action_space.low + (scaled + 1.0) * 0.5 * (action_space.high - action_space.low)
    timeouts = rows["timeouts"].astype(bool)
    terminated = rows["dones"].astype(bool) & ~timeouts
    truncated = timeouts.copy()
    truncated[-1] |= not terminated[-1]
    data = {
        "obs": rows["observations"].astype(np.float32),
        "action": action.astype(np.float32),
        "reward": rows["rewards"].astype(np.float32),
        "terminated": terminated,
        "truncated": truncated,
    }
    return data, np.flatnonzero(terminated | truncated) + 1


def dataset_path(cfg: DictConfig, kind: str) -> Path:
    """Where ``rlft collect`` writes the ``kind`` dataset: ``<out>/<env id>-<kind>.zarr.zip`` (``hopper-vel-v5-...``
    for the velocity-constrained tasks; the scripted demonstrator's name for ``scripted``: ``pointmass-v0-curling``, or
    on the robosuite tasks its quality: ``lift-v0-mixed``)."""
    gym_id = to_env_id(cfg.env.name).split("/")[-1].lower()
    if kind == "scripted":  # the robosuite demonstrations are named by their quality: lift-v0-mixed
        kind = cfg.demos.quality if cfg.env.name in MANIPULATION else cfg.expert.scripted
    if cfg.env.name in SAFE_VELOCITY:
        gym_id = gym_id.replace("-", "-vel-", 1)
    return Path(cfg.out) / f"{gym_id}-{kind}.zarr.zip"


def validate(cfg: DictConfig) -> None:
    """Refuse a collect config that cannot run, before anything is written."""
    kinds = dataset_kinds(cfg)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"datasets.kinds: unknown kind '{unknown[0]}'; choose from {', '.join(KINDS)}")
    if cfg.env.name in MANIPULATION and not cfg.expert.scripted:
        raise ConfigError(f"env={cfg.env.name}: rlft collect records scripted demonstrations of the robosuite tasks; set expert.scripted=pick")
    if cfg.expert.scripted or "scripted" in kinds:
        DEMONSTRATORS = demonstrators()
        name = cfg.expert.scripted
        if not name:
            raise ConfigError(f"datasets.kinds has 'scripted' but expert.scripted is not set; name a demonstrator ({scripted_choices(DEMONSTRATORS)})")
        if cfg.env.name not in DEMONSTRATORS or name not in DEMONSTRATORS[cfg.env.name]:
            raise ConfigError(f"expert.scripted={name}: env={cfg.env.name} has no such scripted demonstrator; choose from {scripted_choices(DEMONSTRATORS)}")
        if kinds != ["scripted"]:
            raise ConfigError(f"expert.scripted={name} records one dataset: set datasets.kinds=[scripted] (now {kinds})")
        if cfg.expert.load:
            raise ConfigError(f"expert.scripted={name} and expert.load={cfg.expert.load}: record one or the other; set expert.load=null")
        return
    if cfg.expert.load:
        if "medium" in kinds and not cfg.expert.load_medium:
            raise ConfigError("datasets.kinds has 'medium' but expert.load_medium is not set; give it or drop 'medium'")
        if "medium-replay" in kinds:
            raise ConfigError("datasets.kinds: 'medium-replay' needs the replay buffer of a training run; drop expert.load")
        for key in ("load", "load_medium"):
            if cfg.expert[key]:
                expert = ExpertPolicy.load(cfg.expert[key])
                check_fits_env(f"expert.{key}={cfg.expert[key]}", expert.observation_space.shape, expert.action_space.shape, cfg.env)
        return
    if cfg.expert.steps < cfg.expert.snapshot_every:
        raise ConfigError(f"expert.steps ({cfg.expert.steps}) must be at least expert.snapshot_every ({cfg.expert.snapshot_every})")
    if cfg.env.name not in (*LOCOMOTION, *SAFE_VELOCITY):
        raise ConfigError(f"env={cfg.env.name}: rlft collect trains experts on the MuJoCo tasks {', '.join((*LOCOMOTION, *SAFE_VELOCITY))}")
    if "medium-replay" in kinds and cfg.env.name in SAFE_VELOCITY:
        raise ConfigError("datasets.kinds: 'medium-replay' comes from SAC's replay buffer, which holds no costs; drop it for safety tasks")
    if cfg.expert.cost_penalty and cfg.env.name not in SAFE_VELOCITY:
        raise ConfigError(f"expert.cost_penalty={cfg.expert.cost_penalty}: env={cfg.env.name} has no cost; use a safety task ({', '.join(SAFE_VELOCITY)})")


def scripted_choices(demonstrators: dict[str, dict[str, Any]]) -> str:
    """``env=pointmass expert.scripted=curling, ...``: every scripted demonstrator, for error messages."""
    return ", ".join(f"env={env} expert.scripted={name}" for env, names in demonstrators.items() for name in names)


def collect(cfg: DictConfig, run: Run, command: str = "") -> dict[str, EpisodeStore]:
    """All three stages; returns the written datasets by kind (``expert``, ``medium``, ``medium-replay``).

    With ``expert.scripted`` only stage 3 runs: the scripted demonstrator's ``scripted`` dataset.
    ``command`` (the command line that started the run) is recorded in each dataset's metadata.
    """
    validate(cfg)
    name = cfg.env.name
    kinds = dataset_kinds(cfg)
    if cfg.expert.scripted:
        expert = ScriptedPolicy(name, cfg.expert.scripted, cfg.seed, cfg.demos.quality)
        medium = None
    elif cfg.expert.load:
        expert = ExpertPolicy.load(cfg.expert.load)
        medium = ExpertPolicy.load(cfg.expert.load_medium) if cfg.expert.load_medium else None
    else:
        expert = train_expert(cfg, run)
        medium = None
    if not cfg.expert.scripted:
        expert.save(run.folder / "expert" / "expert")
        expert_return = float(expert.info.get("return_mean") or evaluate(expert, name, cfg.expert.eval_episodes, cfg.seed + 10_000)["return_mean"])
    if medium is None and {"medium", "medium-replay"} & set(kinds):
        ds = cfg.datasets
        medium = pick_medium(run.folder / "expert" / "snapshots", expert, name, ds.medium_fraction, ds.medium_eval_episodes, cfg.seed + 30_000)
    if medium is not None:
        medium.save(run.folder / "expert" / "medium")
    policies = {"expert": expert, "medium": medium, "medium-replay": medium, "scripted": expert}

    recorded: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    if name in MANIPULATION:  # sparse success reward: random 0, a success 1 (normalized score = success rate x 100)
        random_return = 0.0
        data, ends, attempts = record_successes(expert, name, cfg.demos.n, cfg.datasets.n_envs, cfg.env.max_episode_steps, cfg.seed + 1000)
        recorded["scripted"] = (data, ends)
    else:
        act_space = make_env(name).action_space
        random_return = float(evaluate(UniformPolicy(act_space), name, cfg.datasets.random_episodes, cfg.seed + 20_000)["return_mean"])
    for i, kind in enumerate(kinds):
        pol = policies[kind]
        if kind in recorded:
            continue
        if kind == "medium-replay":
            recorded[kind] = replay_data(run, pol.info["step"], act_space)
            continue
        steps, n_envs, seed = cfg.datasets.steps, cfg.datasets.n_envs, cfg.seed + 1000 * (i + 1)
        recorded[kind] = record(pol, name, steps, n_envs, seed, stochastic=True, desc=f"{kind} data")
    if name in MANIPULATION:
        expert_data_return = 1.0
    elif {"expert", "scripted"} & set(recorded):  # the demonstrator's data return is the "expert" reference (score 100)
        data, ends = recorded.get("expert") or recorded["scripted"]
        starts = np.concatenate([[0], ends[:-1]])
        # Episodes cut short by the end of recording would drag the mean down; full-length ones count.
        complete = ~data["truncated"][ends - 1] | (np.diff(np.concatenate([[0], ends])) >= cfg.env.max_episode_steps)
        returns = np.add.reduceat(data["reward"].astype(np.float64), starts)
        expert_data_return = float(returns[complete].mean() if complete.any() else returns.mean())
    else:
        expert_data_return = expert_return

    out: dict[str, EpisodeStore] = {}
    versions = {"gymnasium": gym.__version__, "mujoco": __import__("mujoco").__version__, "stable_baselines3": __import__("stable_baselines3").__version__}
    for kind, (data, ends) in recorded.items():
        pol = policies[kind]
        scripted = f"scripted demonstrator '{cfg.expert.scripted}'"
        if name in MANIPULATION:
            scripted += f", quality {cfg.demos.quality}, the first {cfg.demos.n} successes of {attempts} episodes"
        how = {"medium-replay": "replay buffer of SB3 SAC up to the medium snapshot", "scripted": scripted}
        how = how.get(kind, f"SB3 SAC actor ({kind}), sampled actions")
        info = getattr(pol, "info", {})
        meta = {
            "source": "rlft collect",
            "env_id": to_env_id(name),
            "env": name,
            "kind": kind,
            "ref_returns": return_range(data["reward"], ends) if "cost" in data else {"random": random_return, "expert": expert_data_return},
            "collection": {
                "policy": how,
                "policy_step": info.get("step"),
                "policy_eval_return": info.get("return_mean"),
                "policy_sampled_return": info.get("sampled_return_mean"),
                "cost_penalty": cfg.expert.cost_penalty,
                "command": command,
                "seed": cfg.seed,
                "n_envs": cfg.datasets.n_envs,
                "versions": versions,
            },
        }
        out[kind] = write_episodes(dataset_path(cfg, kind), data, ends, meta)
    return out
