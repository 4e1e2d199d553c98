"""One home for the online fine-tuning algorithms: who trains each, which bases suit it, how its runs load.

``rlft finetune`` dispatches through :data:`ONLINE`; ``rlft eval`` loads any run through
:func:`load_trained_policy`, which returns what the run acts with: the *combined* policy for methods
that steer a frozen base (DSRL's noise actor, ResiP's residual), the EMA actor with its Q selection for
offline runs (DQL, OFQL), and the plain :class:`~rlft.policies.policy.Policy` otherwise.
Entry points are ``module:function`` strings, imported only when used (no algorithm is imported to
compose a config).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ANY_HEAD = ("diffusion", "flow", "shortcut", "meanflow")


@dataclass(frozen=True)
class OnlineAlgo:
    train: str  # "module:function", called as function(cfg, run)
    heads: tuple[str, ...]  # head types of the base policies it can fine-tune
    loader: str | None = None  # "module:function(folder, checkpoint) -> policy" for steered runs; None = a plain Policy


ONLINE: dict[str, OnlineAlgo] = {
    "dppo": OnlineAlgo("rlft.algos.onpolicy.finetune:finetune", ("diffusion",)),
    "reinflow": OnlineAlgo("rlft.algos.onpolicy.finetune:finetune", ("flow", "shortcut", "meanflow")),
    "resip": OnlineAlgo("rlft.algos.onpolicy.finetune:finetune", ANY_HEAD, "rlft.algos.onpolicy.residual:load_residual_policy"),
    "dsrl": OnlineAlgo("rlft.algos.dsrl:finetune_dsrl", ANY_HEAD, "rlft.algos.dsrl:load_steered_policy"),
    "dsrl_na": OnlineAlgo("rlft.algos.dsrl:finetune_dsrl", ANY_HEAD, "rlft.algos.dsrl:load_steered_policy"),
}


OFFLINE_LOADER = "rlft.algos.offline:load_offline_policy"  # runs of kind offline: EMA actor + Q selection


def entry_point(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def steering_algo(folder: str | Path) -> str | None:
    """The algorithm of a run that steers a frozen base (``dsrl``, ``dsrl_na``, ``resip``), else None."""
    from rlft.policies.policy import read_spec

    algo = read_spec(folder).get("meta", {}).get("algo")
    return algo if algo in ONLINE and ONLINE[algo].loader else None


def load_trained_policy(folder: str | Path, weights: str = "auto", checkpoint: Path | None = None, select: dict | None = None) -> Any:
    """What ``folder``'s run acts with (see the module docstring); ``weights=policy`` gives the raw trained policy.
    ``select`` ({"candidates": N, "rule": "max" | "softmax"}, None values = the run's own) changes an offline
    run's Q selection; other runs refuse it."""
    from rlft.config import ConfigError
    from rlft.policies.policy import load_policy, read_spec, resolve_policy

    meta = read_spec(folder).get("meta", {})
    algo, kind = meta.get("algo"), (meta.get("algo_config") or {}).get("kind")
    select = {k: v for k, v in (select or {}).items() if v is not None}
    if algo in ONLINE and ONLINE[algo].loader and not select:
        return entry_point(ONLINE[algo].loader)(resolve_policy(folder), checkpoint)  # type: ignore[arg-type]
    if kind == "offline" and weights in ("auto", "ema"):
        return entry_point(OFFLINE_LOADER)(resolve_policy(folder), checkpoint, select.get("candidates"), select.get("rule"))
    if select:
        what = f"weights={weights} (the raw actor)" if kind == "offline" else f"{folder} is a {algo or 'pretraining'} run"
        raise ConfigError(f"select.* applies to the Q selection of dql / ofql runs only; {what}")
    return load_policy(folder, weights=weights, checkpoint=checkpoint)
