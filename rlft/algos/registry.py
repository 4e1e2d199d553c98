"""One registry for every algorithm: its kind, its typed config, how it trains, how its runs act.

``rlft pretrain``, ``rlft finetune`` and ``rlft offline`` train the algorithm of their kind named by
``algo=`` (pretraining has one, ``bc``); ``rlft info`` lists :data:`ALGOS`; ``rlft eval`` and ``rlft export``
load a run folder through :func:`load_acting_policy`, which asks the spec of the algorithm recorded in
the run's ``policy.json`` (``meta.algo``; folders without one are pretrained policies) what the run
acts with: the plain :class:`~rlft.policies.policy.Policy`, an offline run's EMA actor with its Q
selection, DSRL's noise actor over its frozen base, ResiP's base + residual.

Entry points are ``"module:attribute"`` strings, imported only when used, so reading the registry
imports no algorithm. Adding an algorithm: docs/adding-an-algorithm.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rlft.errors import ConfigError

ANY_HEAD = ("diffusion", "flow", "shortcut", "meanflow")
KINDS = ("pretrain", "online", "offline")
COMMAND_KIND = {"pretrain": "pretrain", "finetune": "online", "offline": "offline"}  # training command -> algorithm kind


@dataclass(frozen=True)
class LoadOptions:
    """What ``rlft eval`` / ``rlft export`` may ask of a run's loader. None values: the run's own.

    ``weights``: ``auto`` (EMA where the checkpoint has it), ``ema`` or ``policy`` (the raw weights);
    ``select_candidates`` / ``select_rule``: an offline run's Q selection. A loader refuses what it cannot honour.
    """

    weights: str = "auto"
    select_candidates: int | None = None
    select_rule: str | None = None

    @property
    def selects(self) -> bool:
        return self.select_candidates is not None or self.select_rule is not None


@dataclass(frozen=True)
class AlgoSpec:
    """An algorithm.

    * ``kind``: ``pretrain``, ``online`` or ``offline`` (the command that trains it);
    * ``config``: ``"module:Class"``, the dataclass that types and checks its ``algo`` config section
      (None for ``bc``, whose settings are the pretrain command's own);
    * ``train``: ``"module:function"``, called as ``function(cfg, run)``; returns what the run acts with;
    * ``load``: ``"module:function"``, called as ``function(folder, checkpoint, options)`` with a
      :class:`LoadOptions`; returns an :class:`~rlft.policies.acting.ActingPolicy`;
    * ``heads``: head types of the policies it trains or fine-tunes;
    * ``provider``: for the chain-PPO engine, ``"module:function(algo_config, base) -> provider"``;
    * ``check``: ``"module:function(cfg)"`` that refuses what cannot run (missing data, an unsuitable
      base) before a run folder is written; default: the one of its kind (:data:`KIND_CHECKS`).
    """

    name: str
    kind: str
    config: str | None
    train: str
    load: str
    summary: str
    heads: tuple[str, ...] = ANY_HEAD
    provider: str | None = None
    check: str | None = None

    def checker(self) -> Callable[[Any], None]:
        """The function that checks a composed config for this algorithm."""
        return entry_point(self.check or KIND_CHECKS[self.kind])


KIND_CHECKS = {"pretrain": "rlft.algos.pretrain:check", "online": "rlft.algos.online:check", "offline": "rlft.algos.offline:check"}
PLAIN = "rlft.algos.registry:load_plain_policy"
CHAIN_PPO = "rlft.algos.onpolicy.finetune:finetune"
LATENT_SAC = "rlft.algos.dsrl:finetune_dsrl"

ALGOS: dict[str, AlgoSpec] = {
    spec.name: spec
    for spec in (
        AlgoSpec("bc", "pretrain", None, "rlft.algos.pretrain:pretrain", PLAIN, "behaviour cloning with the head's own loss, EMA weights"),
        AlgoSpec(
            "dppo",
            "online",
            "rlft.schemas:DPPOConfig",
            CHAIN_PPO,
            PLAIN,
            "PPO over the last denoising steps of a diffusion policy",
            ("diffusion",),
            "rlft.algos.onpolicy.providers:build_dppo",
        ),
        AlgoSpec(
            "reinflow",
            "online",
            "rlft.schemas:ReinFlowConfig",
            CHAIN_PPO,
            PLAIN,
            "PPO over Euler steps made Gaussian by a learned noise net",
            ("flow", "shortcut", "meanflow"),
            "rlft.algos.onpolicy.providers:build_reinflow",
        ),
        AlgoSpec(
            "resip",
            "online",
            "rlft.schemas:ResiPConfig",
            CHAIN_PPO,
            "rlft.algos.onpolicy.residual:load_residual_policy",
            "PPO on a Gaussian residual over a frozen base",
            provider="rlft.algos.onpolicy.residual:build_residual",
        ),
        AlgoSpec(
            "dsrl",
            "online",
            "rlft.schemas:DSRLConfig",
            LATENT_SAC,
            "rlft.algos.dsrl:load_steered_policy",
            "SAC over a frozen base's initial noise (SB3)",
        ),
        AlgoSpec(
            "dsrl_na",
            "online",
            "rlft.schemas:DSRLNAConfig",
            LATENT_SAC,
            "rlft.algos.dsrl:load_steered_policy",
            "DSRL with an action critic distilled into a noise critic",
        ),
        AlgoSpec(
            "dql",
            "offline",
            "rlft.schemas:DQLConfig",
            "rlft.algos.offline:train_offline",
            "rlft.algos.offline:load_offline_policy",
            "diffusion actor + twin Q, backprop through the chain",
        ),
        AlgoSpec(
            "ofql",
            "offline",
            "rlft.schemas:OFQLConfig",
            "rlft.algos.offline:train_offline",
            "rlft.algos.offline:load_offline_policy",
            "one-step mean-flow actor + twin Q",
        ),
        AlgoSpec(
            "iql",
            "offline",
            "rlft.algos.iql:IQLConfig",
            "rlft.algos.iql:train_iql",
            "rlft.algos.iql:load_iql_policy",
            "expectile V + twin Q, advantage-weighted generative actor",
        ),
        AlgoSpec(
            "fisor",
            "offline",
            "rlft.algos.fisor:FISORConfig",
            "rlft.algos.fisor:train_fisor",
            "rlft.algos.fisor:load_fisor_policy",
            "safe offline RL: reachability feasibility + weighted diffusion actor",
            ("diffusion",),
            check="rlft.algos.fisor:check",
        ),
    )
}


def entry_point(target: str) -> Callable[..., Any]:
    """``"package.module:attribute"`` -> the attribute."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def names(kind: str) -> list[str]:
    """The algorithms of ``kind``, sorted."""
    return sorted(name for name, spec in ALGOS.items() if spec.kind == kind)


def get(name: str, kind: str | None = None) -> AlgoSpec:
    """The spec of ``name``; ConfigError (one line, the valid names) if unknown or not of ``kind``."""
    spec = ALGOS.get(name)
    if spec is None or (kind is not None and spec.kind != kind):
        valid = names(kind) if kind else sorted(ALGOS)
        what = f"not an {kind} algorithm" if spec is not None else "not a known algorithm"
        raise ConfigError(f"algo={name} is {what}; choose algo={' or algo='.join(valid)}")
    return spec


def run_algo(folder: str | Path) -> AlgoSpec:
    """The spec of the algorithm that wrote a run or policy folder (``bc`` for pretrained policies)."""
    from rlft.runtime.checkpoint import read_spec

    name = read_spec(folder).get("meta", {}).get("algo") or "bc"
    if name not in ALGOS:
        raise ConfigError(f"{folder} was written by algorithm '{name}', which this rlft does not have ({', '.join(sorted(ALGOS))})")
    return ALGOS[name]


def load_acting_policy(folder: str | Path, checkpoint: Path | None = None, options: LoadOptions = LoadOptions()) -> Any:
    """What the run in ``folder`` acts with, from its newest checkpoint (or ``checkpoint``); see the module docstring."""
    from rlft.runtime.checkpoint import resolve_policy

    folder = resolve_policy(folder)
    return entry_point(run_algo(folder).load)(folder, checkpoint, options)


def load_plain_policy(folder: Path, checkpoint: Path | None = None, options: LoadOptions = LoadOptions()) -> Any:
    """The loader of algorithms whose runs act with their trained Policy alone (bc, dppo, reinflow)."""
    from rlft.runtime.checkpoint import load_policy

    if options.selects:
        raise ConfigError(f"select.* applies to the Q selection of offline runs ({', '.join(names('offline'))}); {folder} is a {run_algo(folder).name} run")
    return load_policy(folder, weights=options.weights, checkpoint=checkpoint)
