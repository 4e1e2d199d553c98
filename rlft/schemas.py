"""Typed configs: one dataclass per command (``configs/<command>.yaml``), config group and algorithm.

:func:`rlft.config.compose` merges the YAML onto ``OmegaConf.structured(<schema>)`` (values are converted
to the field's type: ``train.lr=3e-4`` becomes a float, a string where an int belongs is refused) and
builds the dataclasses with ``OmegaConf.to_object``, so every ``__post_init__`` checks its section's
ranges. A failed rule raises a one-line :class:`ConfigError` ``<field>=<value>: <rule>``; compose puts the
section's dotted path in front (``train.n_envs=0: must be > 0``).

Defaults live in the YAML only (with the comments that say where a published value comes from): every
field here is ``MISSING``, so a YAML that leaves one out fails. A command's ``algo`` section is typed
by the chosen algorithm's schema (``AlgoSpec.config`` in :mod:`rlft.algos.registry`), which compose
puts in place of the ``Any`` field. No torch, no algorithm module: composing stays fast.
"""

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from rlft.algos.registry import ANY_HEAD
from rlft.errors import ConfigError

DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")


# ---- rules: each checks fields of one section; a None value (null = "the default") passes -------------
def show(value: Any) -> str:
    """A value as an error message shows it, YAML-like: null, true, 'text', 3, [1, 2]."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value) if isinstance(value, str) else str(value)


def _fail(name: str, value: Any, rule: str) -> None:
    raise ConfigError(f"{name}={show(value)}: {rule}")


def _values(section: Any, names: tuple[str, ...]) -> list[tuple[str, Any]]:
    return [(n, getattr(section, n)) for n in names if getattr(section, n) is not None]


def positive(section: Any, *names: str) -> None:
    """Sizes and counts: > 0 (an int list: every entry)."""
    for name, value in _values(section, names):
        if any(v <= 0 for v in (value if isinstance(value, list) else [value])):
            _fail(name, value, "must be > 0")


def non_negative(section: Any, *names: str) -> None:
    """Counts, coefficients and periods where 0 means none or off: >= 0."""
    for name, value in _values(section, names):
        if value < 0:
            _fail(name, value, "must be >= 0")


def fraction(section: Any, *names: str) -> None:
    """Probabilities, discounts, Polyak and decay rates: in [0, 1]."""
    for name, value in _values(section, names):
        if not 0.0 <= value <= 1.0:
            _fail(name, value, "must be in [0, 1]")


def learning_rate(section: Any, *names: str) -> None:
    """Learning rates: finite and > 0."""
    for name, value in _values(section, names):
        if not (math.isfinite(value) and value > 0):
            _fail(name, value, "must be a finite learning rate > 0")


def min_learning_rate(section: Any, lr: str, min_lr: str) -> None:
    """A decayed learning rate's floor: finite, >= 0 and <= the learning rate it decays from."""
    value = getattr(section, min_lr)
    if not (math.isfinite(value) and 0 <= value <= getattr(section, lr)):
        _fail(min_lr, value, f"must be finite, >= 0 and <= {lr} ({getattr(section, lr)})")


def at_most(section: Any, low: str, high: str) -> None:
    """``low <= high``."""
    if getattr(section, low) > getattr(section, high):
        _fail(low, getattr(section, low), f"must be <= {high} ({getattr(section, high)})")


def every(section: Any, log_every: str, checkpoint_every: str) -> None:
    """Logging and checkpoint periods > 0; checkpoints at logging steps (exact resume)."""
    positive(section, log_every, checkpoint_every)
    if getattr(section, checkpoint_every) % getattr(section, log_every):
        _fail(checkpoint_every, getattr(section, checkpoint_every), f"must be a multiple of {log_every} ({getattr(section, log_every)})")


def device(section: Any, name: str = "device") -> None:
    """A torch device string (cpu, cuda, cuda:N or mps) that this machine has; torch is imported only to ask
    about an accelerator."""
    value = getattr(section, name)
    if not DEVICE.fullmatch(value):
        _fail(name, value, "must be cpu, cuda, cuda:N or mps")
    if value == "cpu":
        return
    import torch

    if value == "mps" and not torch.backends.mps.is_available():
        _fail(name, value, "Apple's MPS is not available here; use device=cpu")
    if value.startswith("cuda") and not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "torch finds no GPU"
        _fail(name, value, f"CUDA is not available here ({why}); use device=cpu")
    if value.startswith("cuda:") and int(value.split(":")[1]) >= torch.cuda.device_count():
        _fail(name, value, f"this machine has {torch.cuda.device_count()} GPU(s), numbered from 0")


SEED_LIMIT = 2**31  # numpy, torch and gymnasium all take seeds in [0, 2**32); evaluation adds episode offsets


def seed(section: Any, name: str = "seed") -> None:
    """A random seed: an integer in [0, 2**31)."""
    value = getattr(section, name)
    if not 0 <= value < SEED_LIMIT:
        _fail(name, value, "must be in [0, 2**31)")


def non_empty(section: Any, *names: str) -> None:
    """Names, paths and key lists that cannot be empty."""
    for name, value in _values(section, names):
        if len(value) == 0:
            _fail(name, value, "must not be empty")


def typed_options(section: Any, *names: str) -> None:
    """Option maps of a type (``head: {type: flow, ...}``): a ``type`` string."""
    for name, value in _values(section, names):
        if not isinstance(value.get("type"), str) or not value["type"]:
            _fail(f"{name}.type", value.get("type"), "must be a type name (a string)")


# ---- sections shared by commands --------------------------------------------------------------------
@dataclass
class RunConfig:
    """The run folder ``<dir>/<name>`` and how many checkpoints it keeps."""

    dir: str = MISSING
    name: str = MISSING
    keep_checkpoints: int = MISSING

    def __post_init__(self) -> None:
        non_empty(self, "dir", "name")
        if "/" in self.name:
            _fail("name", self.name, "must be a folder name (no '/'); choose the parent with run.dir")
        non_negative(self, "keep_checkpoints")


@dataclass
class EMAConfig:
    """Exponential moving average of the weights."""

    decay: float = MISSING
    every: int = MISSING
    start: int = MISSING

    def __post_init__(self) -> None:
        fraction(self, "decay")
        positive(self, "every")
        non_negative(self, "start")


@dataclass
class StepEvalConfig:
    """Evaluation of a step-based trainer (pretrain, offline) in the env."""

    every: int = MISSING
    episodes: int = MISSING
    backend: str = MISSING
    seed: int = MISSING

    def __post_init__(self) -> None:
        seed(self)
        non_negative(self, "every", "episodes")


@dataclass
class OnlineEvalConfig:
    """Evaluation of a fine-tuning run: every ``every`` iterations, at the first and at the last."""

    every: int = MISSING
    episodes: int = MISSING
    seed: int = MISSING

    def __post_init__(self) -> None:
        seed(self)
        positive(self, "every")
        non_negative(self, "episodes")


# ---- groups -----------------------------------------------------------------------------------------
@dataclass
class RefReturns:
    """Reference returns of a normalized score: 0 at ``random``, 100 at ``expert``."""

    random: float = MISSING
    expert: float = MISSING

    def __post_init__(self) -> None:
        at_most(self, "random", "expert")


@dataclass
class EnvConfig:
    """``configs/env/<name>.yaml``."""

    name: str = MISSING
    id: str = MISSING
    max_episode_steps: int = MISSING
    kwargs: Dict[str, Any] = MISSING
    d4rl_ref: Optional[RefReturns] = MISSING
    cost_limit: Optional[float] = MISSING
    demonstrator: Optional[str] = None  # the task's scripted demonstrator, rlft collect's default (robosuite tasks)

    def __post_init__(self) -> None:
        non_empty(self, "name", "id")
        positive(self, "max_episode_steps")
        non_negative(self, "cost_limit")


@dataclass
class DataConfig:
    """``configs/data/<name>.yaml``: a dataset (store path or shipped name) and the env it was recorded in."""

    path: str = MISSING
    env: Optional[str] = MISSING

    def __post_init__(self) -> None:
        non_empty(self, "path")


@dataclass
class NormalizerConfig:
    """Normalizer kinds of the state observations and of the actions."""

    obs: str = MISSING
    action: str = MISSING


@dataclass
class PolicyConfig:
    """``configs/policy/<preset>.yaml`` (and the actor of dql / ofql). The encoder, backbone and head
    option maps depend on their ``type`` (rlft/policies/), so only ``type`` is checked here."""

    name: str = MISSING
    obs_keys: List[str] = MISSING
    obs_horizon: int = MISSING
    horizon: int = MISSING
    act_steps: int = MISSING
    normalizer: NormalizerConfig = MISSING
    clip_action: bool = MISSING
    noise_clip: float = MISSING
    encoder: Dict[str, Any] = MISSING
    backbone: Dict[str, Any] = MISSING
    head: Dict[str, Any] = MISSING

    def __post_init__(self) -> None:
        non_empty(self, "name", "obs_keys")
        positive(self, "obs_horizon", "horizon")
        if not 1 <= self.act_steps <= self.horizon:
            _fail("act_steps", self.act_steps, f"must be in 1..horizon ({self.horizon})")
        non_negative(self, "noise_clip")
        typed_options(self, "encoder", "backbone", "head")
        if self.head["type"] not in ANY_HEAD:
            _fail("head.type", self.head["type"], f"must be one of {', '.join(ANY_HEAD)}")


# ---- commands ---------------------------------------------------------------------------------------
@dataclass
class CommandConfig:
    """What every command has: ``choices``, the group options compose picked (``{"env": "hopper"}``)."""

    choices: Dict[str, str] = field(default_factory=dict)


@dataclass
class TrainingCommand(CommandConfig):
    """A command that trains into a run folder."""

    seed: int = MISSING
    threads: int = MISSING
    device: str = MISSING
    run: RunConfig = MISSING
    env: EnvConfig = MISSING
    data: DataConfig = MISSING

    def __post_init__(self) -> None:
        seed(self)
        positive(self, "threads")
        device(self)


@dataclass
class StepTrainConfig:
    """A step-based trainer's budget, batch and logging / checkpoint periods."""

    steps: int = MISSING
    batch_size: int = MISSING
    log_every: int = MISSING
    checkpoint_every: int = MISSING

    def __post_init__(self) -> None:
        positive(self, "steps", "batch_size")
        every(self, "log_every", "checkpoint_every")


@dataclass
class PretrainTrainConfig(StepTrainConfig):
    """Behaviour cloning: AdamW, linear warm-up then cosine from ``lr`` to ``min_lr``."""

    lr: float = MISSING
    min_lr: float = MISSING
    warmup: int = MISSING
    weight_decay: float = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        learning_rate(self, "lr")
        min_learning_rate(self, "lr", "min_lr")
        non_negative(self, "warmup", "weight_decay")


@dataclass
class PretrainConfig(TrainingCommand):
    """``rlft pretrain`` (configs/pretrain.yaml)."""

    train: PretrainTrainConfig = MISSING
    ema: EMAConfig = MISSING
    eval: StepEvalConfig = MISSING
    policy: PolicyConfig = MISSING


@dataclass
class OnlineTrainConfig:
    """Fine-tuning iterations: ``n_envs`` x ``n_steps`` steps each, then the update."""

    iterations: int = MISSING
    n_envs: int = MISSING
    n_steps: int = MISSING
    backend: str = MISSING
    checkpoint_every: int = MISSING

    def __post_init__(self) -> None:
        positive(self, "iterations", "n_envs", "n_steps", "checkpoint_every")


@dataclass
class FinetuneConfig(TrainingCommand):
    """``rlft finetune`` (configs/finetune.yaml); ``algo``: the online algorithm's schema."""

    base: Optional[str] = MISSING
    train: OnlineTrainConfig = MISSING
    eval: OnlineEvalConfig = MISSING
    algo: Any = MISSING


@dataclass
class OfflineConfig(TrainingCommand):
    """``rlft offline`` (configs/offline.yaml); ``algo``: the offline algorithm's schema."""

    train: StepTrainConfig = MISSING
    eval: StepEvalConfig = MISSING
    algo: Any = MISSING


@dataclass
class ExpertConfig:
    """The SB3 SAC expert ``rlft collect`` trains (or loads), or the scripted demonstrator it records."""

    load: Optional[str] = MISSING
    load_medium: Optional[str] = MISSING
    scripted: Optional[str] = MISSING
    steps: int = MISSING
    learning_starts: int = MISSING
    learning_rate: float = MISSING
    batch_size: int = MISSING
    gamma: float = MISSING
    tau: float = MISSING
    net_arch: List[int] = MISSING
    snapshot_every: int = MISSING
    checkpoint_every: int = MISSING
    eval_episodes: int = MISSING
    cost_penalty: float = MISSING

    def __post_init__(self) -> None:
        positive(self, "steps", "batch_size", "net_arch", "snapshot_every", "checkpoint_every", "eval_episodes")
        non_negative(self, "learning_starts", "cost_penalty")
        learning_rate(self, "learning_rate")
        fraction(self, "gamma", "tau")
        non_empty(self, "net_arch")


@dataclass
class DatasetsConfig:
    """The datasets ``rlft collect`` records."""

    kinds: Optional[List[str]] = MISSING
    steps: int = MISSING
    n_envs: int = MISSING
    medium_fraction: float = MISSING
    medium_eval_episodes: int = MISSING
    random_episodes: int = MISSING

    def __post_init__(self) -> None:
        if self.kinds is not None:
            non_empty(self, "kinds")
        positive(self, "steps", "n_envs", "medium_eval_episodes", "random_episodes")
        fraction(self, "medium_fraction")


@dataclass
class DemosConfig:
    """The robosuite tasks' scripted demonstrations ``rlft collect`` records."""

    n: int = MISSING
    quality: str = MISSING

    def __post_init__(self) -> None:
        positive(self, "n")
        if self.quality not in ("expert", "mixed", "worse"):
            _fail("quality", self.quality, "must be one of expert, mixed, worse")


@dataclass
class CollectConfig(CommandConfig):
    """``rlft collect`` (configs/collect.yaml)."""

    seed: int = MISSING
    threads: int = MISSING
    run: RunConfig = MISSING
    expert: ExpertConfig = MISSING
    datasets: DatasetsConfig = MISSING
    demos: DemosConfig = MISSING
    out: str = MISSING
    force: bool = MISSING
    env: EnvConfig = MISSING

    def __post_init__(self) -> None:
        seed(self)
        positive(self, "threads")


@dataclass
class SelectOverride:
    """The Q selection of an offline run that ``rlft eval``, ``rlft export`` and ``rlft bench latency`` use;
    null = the run's own. The run's loader checks the rule and whether the run selects at all."""

    candidates: Optional[int] = MISSING
    rule: Optional[str] = MISSING

    def __post_init__(self) -> None:
        positive(self, "candidates")


@dataclass
class EvalConfig(CommandConfig):
    """``rlft eval`` (configs/eval.yaml)."""

    run: Optional[str] = MISSING
    checkpoint: Optional[str] = MISSING
    weights: str = MISSING
    n_episodes: int = MISSING
    n_envs: int = MISSING
    steps: Optional[int] = MISSING
    sampler: str = MISSING
    seed: int = MISSING
    backend: str = MISSING
    device: str = MISSING
    threads: int = MISSING
    cost_limit: Optional[float] = MISSING
    select: SelectOverride = MISSING

    def __post_init__(self) -> None:
        seed(self)
        positive(self, "n_episodes", "n_envs", "steps", "threads")
        non_negative(self, "cost_limit")
        device(self)


@dataclass
class ExportConfig(CommandConfig):
    """``rlft export`` (configs/export.yaml)."""

    run: Optional[str] = MISSING
    format: str = MISSING
    steps: Optional[int] = MISSING
    out: Optional[str] = MISSING
    force: bool = MISSING
    checkpoint: Optional[str] = MISSING
    weights: str = MISSING
    select: SelectOverride = MISSING
    parity_batch: int = MISSING
    threads: int = MISSING

    def __post_init__(self) -> None:
        positive(self, "steps", "parity_batch", "threads")


@dataclass
class BenchConfig(CommandConfig):
    """``rlft bench rollout`` (configs/bench.yaml)."""

    backend: str = MISSING
    n_envs: int = MISSING
    steps: int = MISSING
    warmup: int = MISSING
    seed: int = MISSING
    device: str = MISSING
    physics_threads: Optional[int] = MISSING
    threads: int = MISSING
    env: EnvConfig = MISSING

    def __post_init__(self) -> None:
        seed(self)
        positive(self, "n_envs", "steps", "physics_threads", "threads")
        non_negative(self, "warmup")
        device(self)


@dataclass
class BenchLatencyConfig(CommandConfig):
    """``rlft bench latency`` (configs/bench_latency.yaml)."""

    run: Optional[str] = MISSING
    steps: Optional[int] = MISSING
    select: SelectOverride = MISSING
    repeats: int = MISSING
    warmup: int = MISSING
    threads: int = MISSING
    seed: int = MISSING

    def __post_init__(self) -> None:
        seed(self)
        positive(self, "steps", "repeats", "threads")
        non_negative(self, "warmup")


@dataclass
class ADGConfig:
    """ADG's recovery (``method: adg``): windows of 2 ``horizon`` + 1 steps of ``elements``; two DDPMs of
    ``diffusion_steps`` levels on an MLP ``backbone``, the ambient one trained on levels >= ``ambient_level``;
    steps whose rescaled score exceeds ``threshold`` are flagged and repaired."""

    horizon: int = MISSING
    elements: List[str] = MISSING
    diffusion_steps: int = MISSING
    ambient_level: int = MISSING
    threshold: float = MISSING
    schedule: str = MISSING
    lr: float = MISSING
    backbone: Dict[str, Any] = MISSING

    def __post_init__(self) -> None:
        positive(self, "horizon", "diffusion_steps")
        non_empty(self, "elements")
        bad = [e for e in self.elements if e not in ("obs", "action", "reward")]
        if bad or len(set(self.elements)) != len(self.elements):
            _fail("elements", self.elements, "must be distinct names among obs, action, reward")
        if not 0 <= self.ambient_level < self.diffusion_steps:
            _fail("ambient_level", self.ambient_level, f"must be in 0..diffusion_steps - 1 ({self.diffusion_steps - 1})")
        fraction(self, "threshold")
        learning_rate(self, "lr")


@dataclass
class RepairConfig(CommandConfig):
    """``rlft data repair`` (configs/repair.yaml): ``src`` and ``out`` come from the command line."""

    seed: int = MISSING
    threads: int = MISSING
    device: str = MISSING
    run: RunConfig = MISSING
    src: Optional[str] = MISSING
    out: Optional[str] = MISSING
    force: bool = MISSING
    method: str = MISSING
    train: StepTrainConfig = MISSING
    adg: ADGConfig = MISSING

    def __post_init__(self) -> None:
        seed(self)
        positive(self, "threads")
        device(self)
        if self.method != "adg":
            _fail("method", self.method, "must be adg")


COMMANDS: Dict[str, type] = {
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "offline": OfflineConfig,
    "collect": CollectConfig,
    "eval": EvalConfig,
    "export": ExportConfig,
    "bench": BenchConfig,
    "bench_latency": BenchLatencyConfig,
    "repair": RepairConfig,
}


# ---- online algorithms (configs/algo/*.yaml) ---------------------------------------------------------
@dataclass
class PPOConfig:
    """What chain PPO (DPPO, ReinFlow) and ResiP share: GAE, clipped ratios, epochs, two AdamW optimizers
    with warm-up + cosine from ``*_lr`` to ``*_min_lr``, a V(s) critic MLP (``critic_layer_norm``: layer norms in
    its residual blocks and before its output, which keeps bootstrapped values from diverging on sparse,
    mostly-truncated tasks), and the DDRL data anchor
    (``data_coef`` x the provider's loss on ``data_batch_size`` demonstration windows a step)."""

    name: str = MISSING
    policy: str = MISSING
    gamma: float = MISSING
    gae_lambda: float = MISSING
    clip: float = MISSING
    update_epochs: int = MISSING
    batch_size: int = MISSING
    vf_coef: float = MISSING
    ent_coef: float = MISSING
    target_kl: float = MISSING
    actor_lr: float = MISSING
    actor_min_lr: float = MISSING
    critic_lr: float = MISSING
    critic_min_lr: float = MISSING
    lr_warmup: int = MISSING
    actor_weight_decay: float = MISSING
    critic_weight_decay: float = MISSING
    max_grad_norm: Optional[float] = MISSING
    reward_scaling: bool = MISSING
    critic_hidden: int = MISSING
    critic_depth: int = MISSING
    critic_layer_norm: bool = False
    data_coef: float = MISSING
    data_batch_size: int = MISSING

    def __post_init__(self) -> None:
        non_empty(self, "name", "policy")
        fraction(self, "gamma", "gae_lambda")
        positive(self, "clip", "update_epochs", "batch_size", "target_kl", "max_grad_norm", "critic_hidden", "critic_depth", "data_batch_size")
        non_negative(self, "vf_coef", "ent_coef", "lr_warmup", "actor_weight_decay", "critic_weight_decay", "data_coef")
        learning_rate(self, "actor_lr", "critic_lr")
        min_learning_rate(self, "actor_lr", "actor_min_lr")
        min_learning_rate(self, "critic_lr", "critic_min_lr")


@dataclass
class ChainConfig(PPOConfig):
    """PPO over a policy's sampling chain of ``steps`` steps, with element-wise log-probs clamped to
    ``logprob_clamp``, and the provider's own regulariser ``reg_coef`` (next to PPO's ``data_coef``, the
    demonstration anchor, ``data_batch_size`` windows a step)."""

    steps: int = MISSING
    logprob_clamp: Optional[List[float]] = MISSING
    reg_coef: float = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "steps")
        non_negative(self, "reg_coef")
        if self.logprob_clamp is not None and not (len(self.logprob_clamp) == 2 and self.logprob_clamp[0] < self.logprob_clamp[1]):
            _fail("logprob_clamp", self.logprob_clamp, "must be [low, high] with low < high, or null")


@dataclass
class DPPOConfig(ChainConfig):
    """``algo=dppo``: the last ``ft_steps`` of ``steps`` DDPM steps fine-tuned, std floors, one ratio per
    denoising step with the clip from ``clip_base`` (noisiest) to ``clip`` and advantages discounted by
    ``gamma_denoising`` along the chain."""

    ft_steps: int = MISSING
    min_sampling_std: float = MISSING
    min_logprob_std: float = MISSING
    clip_base: float = MISSING
    gamma_denoising: float = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "ft_steps", "min_sampling_std", "min_logprob_std", "clip_base")
        fraction(self, "gamma_denoising")
        at_most(self, "ft_steps", "steps")


@dataclass
class ReinFlowConfig(ChainConfig):
    """``algo=reinflow``: a noise net's std in [min_std, max_std], held to ``noise_hold``, decayed to ``noise_decay_end``
    (fractions of training)."""

    min_std: float = MISSING
    max_std: float = MISSING
    noise_hold: float = MISSING
    noise_decay_end: float = MISSING
    noise_hidden: List[int] = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "min_std", "noise_hidden")
        at_most(self, "min_std", "max_std")
        fraction(self, "noise_hold", "noise_decay_end")
        at_most(self, "noise_hold", "noise_decay_end")


@dataclass
class ResidualConfig:
    """ResiP's Gaussian residual: MLP ``depth`` x ``hidden``, fixed log-std, executed at ``scale``."""

    hidden: int = MISSING
    depth: int = MISSING
    log_std: float = MISSING
    scale: float = MISSING

    def __post_init__(self) -> None:
        positive(self, "hidden", "depth", "scale")


@dataclass
class ResiPConfig(PPOConfig):
    """``algo=resip``: PPO on a residual over a frozen base sampled with ``steps`` steps (null = its own)."""

    steps: Optional[int] = MISSING
    residual: ResidualConfig = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "steps")


@dataclass
class DSRLConfig:
    """``algo=dsrl``: SAC over the initial noise (|w| <= ``bound``) of a frozen base."""

    name: str = MISSING
    policy: str = MISSING
    bound: float = MISSING
    steps: Optional[int] = MISSING
    gamma: float = MISSING
    lr: float = MISSING
    batch_size: int = MISSING
    tau: float = MISSING
    utd: int = MISSING
    target_entropy: float = MISSING
    hidden: int = MISSING
    depth: int = MISSING
    layer_norm: bool = MISSING
    log_std_init: float = MISSING
    buffer_size: int = MISSING
    warmup_steps: int = MISSING

    def __post_init__(self) -> None:
        non_empty(self, "name", "policy")
        positive(self, "bound", "steps", "batch_size", "utd", "hidden", "depth", "buffer_size")
        fraction(self, "gamma", "tau")
        learning_rate(self, "lr")
        non_negative(self, "warmup_steps")


@dataclass
class DSRLNAConfig(DSRLConfig):
    """``algo=dsrl_na``: DSRL with a noise critic distilled from an action critic, ``distill_steps`` per chunk step."""

    distill_steps: int = MISSING

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "distill_steps")


# ---- offline algorithms -----------------------------------------------------------------------------
@dataclass
class SelectConfig:
    """Acting by Q selection: ``candidates`` actor samples, one picked by ``rule`` (max or softmax of Q)."""

    candidates: int = MISSING
    rule: str = MISSING

    def __post_init__(self) -> None:
        positive(self, "candidates")


@dataclass
class CriticConfig:
    """Each Q of the twin critic: an MLP ``depth`` x ``hidden`` on [state, action]."""

    hidden: int = MISSING
    depth: int = MISSING

    def __post_init__(self) -> None:
        positive(self, "hidden", "depth")


@dataclass
class OfflineAlgoConfig:
    """DQL's skeleton: BC loss + ``eta`` x the normalized Q term, twin Q with Polyak targets, EMA actor, Q selection."""

    name: str = MISSING
    gamma: float = MISSING
    tau: float = MISSING
    eta: float = MISSING
    lr: float = MISSING
    lr_decay: bool = MISSING
    grad_clip: float = MISSING
    max_q_backup: bool = MISSING
    backup_samples: int = MISSING
    ema: EMAConfig = MISSING
    select: SelectConfig = MISSING
    critic: CriticConfig = MISSING
    policy: PolicyConfig = MISSING

    def __post_init__(self) -> None:
        non_empty(self, "name")
        fraction(self, "gamma", "tau")
        non_negative(self, "eta", "grad_clip")
        learning_rate(self, "lr")
        positive(self, "backup_samples")


@dataclass
class DQLConfig(OfflineAlgoConfig):
    """``algo=dql``: Diffusion-QL, a DDPM actor backpropagated through its whole chain."""


@dataclass
class OFQLConfig(OfflineAlgoConfig):
    """``algo=ofql``: one-step flow Q-learning, a mean-flow actor sampled in one step."""
