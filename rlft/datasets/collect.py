"""Demonstration collection: train (or load) a stable-baselines3 SAC expert, record D4RL-style datasets.

``rlft collect env=hopper`` runs three stages inside the run folder:

1. expert: SB3 SAC with the RL-Zoo MuJoCo settings. Every ``snapshot_every`` steps the actor is saved
   (``expert/snapshots/step_N.safetensors``) and evaluated (deterministic, ``eval_episodes``), the
   return logged to metrics.jsonl. Every ``checkpoint_every`` steps the SB3 model and replay buffer are
   saved, so ``--resume`` continues an interrupted training (SB3's own format; RNG streams restart).
2. policies: the final actor is the expert; the snapshot whose return (sampled actions,
   ``medium_eval_episodes`` episodes each) is closest to ``medium_fraction`` of the expert's is the
   medium policy (as D4RL's "medium": an early-stopped SAC).
3. datasets: each policy acts stochastically (SAC's sampled actions, as in D4RL) in ``n_envs`` envs
   until ``steps`` transitions are recorded; episodes still running then end with ``truncated``.
   ``medium-replay`` (optional) is the SAC replay buffer up to the medium snapshot, as in D4RL.
   Reference returns for normalized scores are measured: uniform-random actions, and the expert
   dataset's mean episode return (complete episodes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from rlft.datasets.store import EpisodeStore, write_episodes
from rlft.envs.registry import env_id as to_env_id
from rlft.envs.registry import make as make_env
from rlft.errors import ConfigError
from rlft.io import atomic_write, atomic_write_json
from rlft.paths import EXPERTS_DIR
from rlft.runtime.run import Run

Policy = Callable[[np.ndarray], np.ndarray]


class ExpertPolicy:
    """An SB3 SAC actor stored as safetensors + JSON (no pickle): ``act(obs [N, obs_dim]) -> [N, act_dim]``."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box, net_arch: list[int], info: dict[str, Any] | None = None):
        from stable_baselines3.sac.policies import SACPolicy

        self.net_arch = list(net_arch)
        self.info = dict(info or {})
        self.policy = SACPolicy(observation_space, action_space, lambda _: 0.0, net_arch=self.net_arch)
        self.policy.set_training_mode(False)

    @classmethod
    def from_sb3(cls, model: Any, info: dict[str, Any] | None = None) -> "ExpertPolicy":
        arch = model.policy.net_args["net_arch"]
        expert = cls(model.observation_space, model.action_space, arch, info)
        expert.policy.actor.load_state_dict(model.policy.actor.state_dict())
        return expert

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        with torch.no_grad():
            action, _ = self.policy.predict(np.asarray(obs, dtype=np.float32), deterministic=deterministic)
        return action

    def save(self, path: str | Path) -> None:
        """Write ``<path>.safetensors`` and ``<path>.json`` (spaces, architecture, info)."""
        from safetensors.torch import save_file

        path = Path(path)
        weights = {k: v.contiguous() for k, v in self.policy.actor.state_dict().items()}
        atomic_write(path.with_suffix(".safetensors"), lambda p: save_file(weights, str(p)))
        obs_space, act_space = self.policy.observation_space, self.policy.action_space
        atomic_write_json(
            path.with_suffix(".json"),
            {
                "algo": "sac",
                "net_arch": self.net_arch,
                "info": self.info,
                "obs_low": obs_space.low.tolist(),
                "obs_high": obs_space.high.tolist(),
                "act_low": act_space.low.tolist(),
                "act_high": act_space.high.tolist(),
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> "ExpertPolicy":
        from safetensors.torch import load_file

        path = Path(path)
        if not path.with_suffix(".json").exists() and (EXPERTS_DIR / f"{path.name}.json").exists():
            path = EXPERTS_DIR / path.name
        meta_path, weights_path = path.with_suffix(".json"), path.with_suffix(".safetensors")
        for p in (meta_path, weights_path):
            if not p.exists():
                shipped = ", ".join(sorted(f.stem for f in EXPERTS_DIR.glob("*.json"))) or "none"
                raise FileNotFoundError(f"{p}: expert file missing; an expert is <prefix>.json + <prefix>.safetensors, or a shipped one: {shipped}")
        meta = json.loads(meta_path.read_text())
        box = lambda lo, hi: gym.spaces.Box(np.asarray(lo, np.float32), np.asarray(hi, np.float32), dtype=np.float32)  # noqa: E731
        expert = cls(box(meta["obs_low"], meta["obs_high"]), box(meta["act_low"], meta["act_high"]), meta["net_arch"], meta["info"])
        expert.policy.actor.load_state_dict(load_file(str(weights_path)))
        return expert


def evaluate(policy: Policy, env_name: str, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` sequential episodes of one env, [episodes]."""
    env = make_env(env_name)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs[None])[0])
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return np.asarray(returns)


def record(policy: Policy, env_name: str, steps: int, n_envs: int, seed: int, desc: str = "record") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run ``policy`` in ``n_envs`` envs until ``steps`` transitions exist; return (data, episode_ends).

    Keys: obs [T, obs_dim] float32, action [T, act_dim] float32, reward [T] float32, terminated [T] bool,
    truncated [T] bool. Episodes still running at the end are kept with ``truncated`` on their last step.
    """
    envs = [make_env(env_name) for _ in range(n_envs)]
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]).astype(np.float32)
    running: list[dict[str, list]] = [_new_episode() for _ in range(n_envs)]
    finished: list[dict[str, list]] = []
    with tqdm(total=steps, desc=desc, unit="step", disable=None) as bar:
        for _ in range(-(-steps // n_envs)):
            actions = policy(obs)
            for i, env in enumerate(envs):
                next_obs, reward, terminated, truncated, _ = env.step(actions[i])
                ep = running[i]
                for key, value in (("obs", obs[i].copy()), ("action", actions[i]), ("reward", reward), ("terminated", terminated), ("truncated", truncated)):
                    ep[key].append(value)
                if terminated or truncated:
                    finished.append(ep)
                    running[i] = _new_episode()
                    next_obs, _ = env.reset()
                obs[i] = next_obs
            bar.update(n_envs)
    for ep in running:
        if ep["obs"]:
            ep["truncated"][-1] = True
            finished.append(ep)
    for e in envs:
        e.close()
    dtypes = {"obs": np.float32, "action": np.float32, "reward": np.float32, "terminated": bool, "truncated": bool}
    data = {k: np.concatenate([np.asarray(ep[k], dtype=dt) for ep in finished]) for k, dt in dtypes.items()}
    ends = np.cumsum([len(ep["obs"]) for ep in finished])
    return data, ends


def _new_episode() -> dict[str, list]:
    return {"obs": [], "action": [], "reward": [], "terminated": [], "truncated": []}


def train_expert(cfg: DictConfig, run: Run) -> ExpertPolicy:
    """Stage 1: SB3 SAC with snapshots and resumable checkpoints; returns the final expert."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger

    ex = cfg.expert
    folder = run.folder / "expert"
    snap_dir = folder / "snapshots"
    model_path, buffer_path = run.ckpt_dir / "sb3_model.zip", run.ckpt_dir / "sb3_replay.pkl"
    env = make_env(cfg.env.name)
    if run.resume and model_path.exists():
        model = SAC.load(model_path, env=env, device="cpu")
        start = model.num_timesteps
        if start < int(ex.steps):  # a finished training needs no buffer to go on
            model.load_replay_buffer(buffer_path)
    else:
        model = SAC(
            "MlpPolicy",
            env,
            learning_rate=ex.learning_rate,
            buffer_size=int(ex.steps),
            learning_starts=int(ex.learning_starts),
            batch_size=int(ex.batch_size),
            gamma=ex.gamma,
            tau=ex.tau,
            policy_kwargs={"net_arch": list(ex.net_arch)},
            seed=int(cfg.seed),
            device="cpu",
            verbose=0,
        )
        start = 0
    metrics = run.open_metrics(resume_step=start if run.resume else None)
    bar = tqdm(total=int(ex.steps), initial=start, desc=f"SAC {cfg.env.name}", unit="step", disable=None)

    class Snapshots(BaseCallback):
        def _on_step(self) -> bool:
            step = self.num_timesteps
            bar.update(1)
            if step % int(ex.snapshot_every) == 0:
                actor = ExpertPolicy.from_sb3(self.model, {"step": step})
                returns = evaluate(lambda o: actor.act(o, deterministic=True), cfg.env.name, int(ex.eval_episodes), seed=int(cfg.seed) + 10_000)
                actor.info.update(return_mean=float(returns.mean()), return_std=float(returns.std()))
                actor.save(snap_dir / f"step_{step:09d}")
                recent = [e["r"] for e in self.model.ep_info_buffer]
                metrics.log(step, {"expert/eval_return": returns.mean(), **({"expert/train_return": np.mean(recent)} if recent else {})})
                bar.set_postfix(eval_return=f"{returns.mean():.0f}")
            return True

        def _on_rollout_end(self) -> None:
            # after SB3 stored the step's transition, so the saved buffer holds every step counted
            step = self.num_timesteps
            if step % int(ex.checkpoint_every) == 0 or step == int(ex.steps):
                atomic_write(model_path, lambda p: self.model.save(p))
                atomic_write(buffer_path, lambda p: self.model.save_replay_buffer(p))

    model.set_logger(Logger(folder=None, output_formats=[]))  # progress goes to metrics.jsonl; SB3's default makes /tmp/SB3-<time>
    if start < int(ex.steps):
        model.learn(total_timesteps=int(ex.steps) - start, callback=Snapshots(), reset_num_timesteps=False)
    bar.close()
    metrics.close()
    snaps = sorted(snap_dir.glob("step_*.json"))
    if not snaps:
        raise RuntimeError(f"{snap_dir}: no snapshots; expert.steps must be at least expert.snapshot_every")
    return ExpertPolicy.load(snaps[-1].with_suffix(""))


def pick_medium(snap_dir: Path, expert: ExpertPolicy, env_name: str, fraction: float, episodes: int, seed: int) -> ExpertPolicy:
    """The snapshot whose return with sampled actions is closest to ``fraction`` of the expert's.

    Returns are measured as the data will be recorded (SAC's sampled actions), on ``episodes``
    episodes per snapshot: the deterministic evaluations logged during training can hide a policy
    that falls in some episodes and not in others. Every measurement is kept in
    ``medium_selection.json`` beside the snapshots.
    """

    def sampled_return(policy: ExpertPolicy) -> float:
        torch.manual_seed(seed)
        return float(evaluate(lambda o: policy.act(o, deterministic=False), env_name, episodes, seed).mean())

    target = fraction * sampled_return(expert)
    snapshots = [ExpertPolicy.load(path.with_suffix("")) for path in sorted(snap_dir.glob("step_*.json"))]
    for snapshot in snapshots:
        snapshot.info["sampled_return_mean"] = sampled_return(snapshot)
        snapshot.info["target_return"] = target
    medium = min(snapshots, key=lambda snap: abs(snap.info["sampled_return_mean"] - target))
    selection = [{"step": snap.info["step"], "sampled_return_mean": snap.info["sampled_return_mean"]} for snap in snapshots]
    atomic_write_json(snap_dir.parent / "medium_selection.json", {"target_return": target, "fraction": fraction, "episodes": episodes, "snapshots": selection})
    return medium


KINDS = ("expert", "medium", "medium-replay")


def replay_data(buffer_path: Path, until_step: int, action_space: gym.spaces.Box) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """D4RL-style medium-replay: the SAC replay buffer from the first step up to the medium snapshot."""
    from stable_baselines3.common.save_util import load_from_pkl

    buf = load_from_pkl(buffer_path)  # written by this run's own training
    n = min(int(until_step), buf.buffer_size if buf.full else buf.pos)
    scaled = buf.actions[:n, 0].astype(np.float32)  # SB3 stores SAC actions scaled to [-1, 1]
    action = action_space.low + (scaled + 1.0) * 0.5 * (action_space.high - action_space.low)
    timeouts = buf.timeouts[:n, 0].astype(bool)
    terminated = buf.dones[:n, 0].astype(bool) & ~timeouts
    truncated = timeouts.copy()
    truncated[-1] |= not terminated[-1]
    data = {
        "obs": buf.observations[:n, 0].astype(np.float32),
        "action": action.astype(np.float32),
        "reward": buf.rewards[:n, 0].astype(np.float32),
        "terminated": terminated,
        "truncated": truncated,
    }
    return data, np.flatnonzero(terminated | truncated) + 1


def validate(cfg: DictConfig) -> None:
    """Refuse a collect config that cannot run, before anything is written."""
    kinds = list(cfg.datasets.kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"datasets.kinds: unknown kind '{unknown[0]}'; choose from {', '.join(KINDS)}")
    if cfg.expert.load:
        if "medium" in kinds and not cfg.expert.load_medium:
            raise ConfigError("datasets.kinds has 'medium' but expert.load_medium is not set; give it or drop 'medium'")
        if "medium-replay" in kinds:
            raise ConfigError("datasets.kinds: 'medium-replay' needs the replay buffer of a training run; drop expert.load")
    elif int(cfg.expert.steps) < int(cfg.expert.snapshot_every):
        raise ConfigError(f"expert.steps ({cfg.expert.steps}) must be at least expert.snapshot_every ({cfg.expert.snapshot_every})")


def collect(cfg: DictConfig, run: Run, command: str = "") -> dict[str, EpisodeStore]:
    """All three stages; returns the written datasets by kind (``expert``, ``medium``, ``medium-replay``).

    ``command`` (the command line that started the run) is recorded in each dataset's metadata.
    """
    validate(cfg)
    name = cfg.env.name
    kinds = list(cfg.datasets.kinds)
    if cfg.expert.load:
        expert = ExpertPolicy.load(cfg.expert.load)
        medium = ExpertPolicy.load(cfg.expert.load_medium) if cfg.expert.load_medium else None
    else:
        expert = train_expert(cfg, run)
        medium = None
    expert.save(run.folder / "expert" / "expert")
    expert_return = float(
        expert.info.get("return_mean") or evaluate(lambda o: expert.act(o, True), name, int(cfg.expert.eval_episodes), int(cfg.seed) + 10_000).mean()
    )
    if medium is None and {"medium", "medium-replay"} & set(kinds):
        ds = cfg.datasets
        medium = pick_medium(run.folder / "expert" / "snapshots", expert, name, float(ds.medium_fraction), int(ds.medium_eval_episodes), int(cfg.seed) + 30_000)
    if medium is not None:
        medium.save(run.folder / "expert" / "medium")
    policies = {"expert": expert, "medium": medium, "medium-replay": medium}

    rng = np.random.default_rng(int(cfg.seed))
    act_space = make_env(name).action_space
    random_policy = lambda o: rng.uniform(act_space.low, act_space.high, size=(len(o), *act_space.shape)).astype(np.float32)  # noqa: E731
    random_return = float(evaluate(random_policy, name, int(cfg.datasets.random_episodes), int(cfg.seed) + 20_000).mean())

    recorded: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    for i, kind in enumerate(kinds):
        pol = policies[kind]
        if kind == "medium-replay":
            recorded[kind] = replay_data(run.ckpt_dir / "sb3_replay.pkl", pol.info["step"], act_space)
            continue
        torch.manual_seed(int(cfg.seed) + i)
        recorded[kind] = record(
            lambda o, p=pol: p.act(o, deterministic=False),
            name,
            int(cfg.datasets.steps),
            int(cfg.datasets.n_envs),
            int(cfg.seed) + 1000 * (i + 1),
            desc=f"{kind} data",
        )
    if "expert" in recorded:
        data, ends = recorded["expert"]
        starts = np.concatenate([[0], ends[:-1]])
        # Episodes cut short by the end of recording would drag the mean down; full-length ones count.
        complete = ~data["truncated"][ends - 1] | (np.diff(np.concatenate([[0], ends])) >= int(cfg.env.max_episode_steps))
        returns = np.add.reduceat(data["reward"].astype(np.float64), starts)
        expert_data_return = float(returns[complete].mean() if complete.any() else returns.mean())
    else:
        expert_data_return = expert_return

    out: dict[str, EpisodeStore] = {}
    versions = {"gymnasium": gym.__version__, "mujoco": __import__("mujoco").__version__, "stable_baselines3": __import__("stable_baselines3").__version__}
    for kind, (data, ends) in recorded.items():
        pol = policies[kind]
        how = "replay buffer of SB3 SAC up to the medium snapshot" if kind == "medium-replay" else f"SB3 SAC actor ({kind}), sampled actions"
        meta = {
            "source": "rlft collect",
            "env_id": to_env_id(name),
            "env": name,
            "kind": kind,
            "ref_returns": {"random": random_return, "expert": expert_data_return},
            "collection": {
                "policy": how,
                "policy_step": pol.info.get("step"),
                "policy_eval_return": pol.info.get("return_mean"),
                "policy_sampled_return": pol.info.get("sampled_return_mean"),
                "command": command,
                "seed": int(cfg.seed),
                "n_envs": int(cfg.datasets.n_envs),
                "versions": versions,
            },
        }
        path = Path(cfg.out) / f"{to_env_id(name).lower()}-{kind}.zarr.zip"
        out[kind] = write_episodes(path, data, ends, meta)
    return out
