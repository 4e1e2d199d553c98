"""The one place that knows how weights and trainer state are laid out on disk.

A run folder (``runs/<name>/``) holds::

    policy.json              the policy's architecture (``Policy.spec()``) + ``meta`` (env, algo, origin)
    checkpoints/step_<N>/    model.safetensors  weights of every module, "<module>.<param>"
                             trainer.pt         optimizer/scheduler states + torch RNG (weights_only load)
                             state.json         step, python/numpy RNG states, extra trainer state

A policy folder (what rlft ships, ``rlft/assets/policies/<name>/``) holds ``policy.json`` and
``policy.safetensors`` (the policy's own state dict). Checkpoints and policy folders are filled under a
temporary name and renamed into place, so a crash never leaves half of one. Nothing is unpickled:
weights are safetensors, trainer state loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlft.errors import CheckpointError
from rlft.io import atomic_write_dir, atomic_write_json
from rlft.paths import POLICIES_DIR
from rlft.policies.policy import Policy
from rlft.runtime.seeding import capture_rng, restore_rng

CKPT_PREFIX = "step_"
MODEL_FILE, TRAINER_FILE, STATE_FILE = "model.safetensors", "trainer.pt", "state.json"
SPEC_FILE, WEIGHTS_FILE = "policy.json", "policy.safetensors"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns; modules/optimizers were already restored in place."""

    step: int
    path: Path
    extra: dict[str, Any]


# ---- checkpoints -------------------------------------------------------------------------------
def checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints in ``ckpt_dir`` (a run's ``checkpoints/``), oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.glob(f"{CKPT_PREFIX}*") if p.is_dir() and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name[len(CKPT_PREFIX) :]))


def latest_checkpoint(folder: Path) -> Path:
    """The newest complete checkpoint of a run folder."""
    found = checkpoints(Path(folder) / "checkpoints")
    if not found:
        raise FileNotFoundError(f"{folder}: no complete checkpoint yet; train longer or resume the run")
    return found[-1]


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, Any] | None = None,
    generators: dict[str, np.random.Generator] | None = None,
    extra: Mapping[str, Any] | None = None,
    keep: int = 0,
) -> Path:
    """Write ``ckpt_dir/step_<step>/`` atomically; keep the newest ``keep`` checkpoints (0: all)."""
    weights = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()}
    rng_state, torch_rng = capture_rng(generators)
    trainer = {"optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()}, "torch_rng": torch_rng}
    state = {"step": int(step), "rng": rng_state, "extra": dict(extra or {})}

    def fill(tmp: Path) -> None:
        save_file(_dedupe_shared(weights), str(tmp / MODEL_FILE))
        torch.save(trainer, tmp / TRAINER_FILE)
        atomic_write_json(tmp / STATE_FILE, state)

    path = atomic_write_dir(ckpt_dir / f"{CKPT_PREFIX}{int(step):09d}", fill)
    if keep:
        for old in checkpoints(ckpt_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(
    ckpt_dir: Path,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, Any] | None = None,
    generators: dict[str, np.random.Generator] | None = None,
) -> Checkpoint | None:
    """Restore the newest checkpoint in place (modules, optimizers, every RNG); None if there is none."""
    found = checkpoints(ckpt_dir)
    if not found:
        return None
    path = found[-1]
    load_weights(path, modules)
    trainer = torch.load(path / TRAINER_FILE, weights_only=True)
    for k, o in (optimizers or {}).items():
        o.load_state_dict(trainer["optimizers"][k])
    state = json.loads((path / STATE_FILE).read_text())
    restore_rng(state["rng"], trainer["torch_rng"], generators)
    return Checkpoint(step=state["step"], path=path, extra=state["extra"])


def read_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, ``"<module>.<param>"``."""
    path = Path(checkpoint) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint weights missing; the checkpoint is incomplete")
    return load_file(str(path))


def load_weights(checkpoint: Path, modules: Mapping[str, torch.nn.Module]) -> None:
    """Load the ``<name>.<param>`` tensors of a checkpoint folder into ``modules`` (every parameter must be there).

    A name may be dotted (``provider.residual``) to load part of a saved module.
    """
    tensors = read_weights(checkpoint)
    for name, m in modules.items():
        prefix = f"{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing = set(m.state_dict()) - set(sd)
        if missing:
            raise CheckpointError(f"{checkpoint}: no weights for {name}.{sorted(missing)[0]} (and {len(missing) - 1} more); wrong checkpoint for this model")
        m.load_state_dict(sd, strict=False)


def _dedupe_shared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory; store clones instead."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


# ---- policy folders ----------------------------------------------------------------------------
def resolve_policy(path: str | Path) -> Path:
    """A run or policy folder as given, or the name of a policy shipped with rlft."""
    p = Path(path)
    if p.exists():
        return p
    if (POLICIES_DIR / p.name).is_dir():
        return POLICIES_DIR / p.name
    shipped = sorted(d.name for d in POLICIES_DIR.iterdir() if d.is_dir()) if POLICIES_DIR.is_dir() else []
    raise FileNotFoundError(f"{path}: no such run or policy folder; shipped policies: {', '.join(shipped) or 'none'}")


def is_shipped(folder: Path) -> bool:
    """Whether ``folder`` is one of the policies inside the installed package (never written to)."""
    return Path(folder).resolve().is_relative_to(POLICIES_DIR)


def write_spec(folder: str | Path, policy: Policy, meta: Mapping[str, Any]) -> None:
    """``policy.json``: the architecture plus ``meta`` (``env``, ``ref_returns``, ``algo``, where it came from)."""
    atomic_write_json(Path(folder) / SPEC_FILE, {**policy.spec(), "meta": dict(meta)})


def read_spec(folder: str | Path) -> dict[str, Any]:
    """The ``policy.json`` of a run or policy folder (or shipped policy name)."""
    folder = resolve_policy(folder)
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{folder}: no {SPEC_FILE}; not a policy run folder (train one with `rlft pretrain`)")
    return json.loads(spec_path.read_text())


def save_policy(policy: Policy, folder: str | Path, meta: Mapping[str, Any]) -> Path:
    """A self-contained policy folder: ``policy.json`` + ``policy.safetensors`` (what rlft ships), atomically."""

    def fill(tmp: Path) -> None:
        write_spec(tmp, policy, meta)
        save_file({k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}, str(tmp / WEIGHTS_FILE))

    return atomic_write_dir(folder, fill)


def load_policy(path: str | Path, weights: str = "auto", checkpoint: Path | None = None) -> Policy:
    """The policy of a policy folder, or of a run folder with the weights of a checkpoint (newest by default).

    ``weights``: ``ema`` (the averaged weights of pretraining), ``policy`` (the raw ones; what fine-tuning
    trains) or ``auto`` (ema where the checkpoint has it, else policy); a policy folder holds one set.
    """
    folder = resolve_policy(path)
    policy = Policy.from_spec(read_spec(folder))
    if (folder / WEIGHTS_FILE).is_file():
        source, tensors, prefix = folder / WEIGHTS_FILE, load_file(str(folder / WEIGHTS_FILE)), ""
    else:
        source = Path(checkpoint or latest_checkpoint(folder))
        tensors = read_weights(source)
        if weights == "auto":
            weights = "ema" if any(k.startswith("ema.model.") for k in tensors) else "policy"
        prefix = {"ema": "ema.model.", "policy": "policy."}[weights]
    sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not sd:
        raise CheckpointError(f"{source}: no '{weights}' weights in this checkpoint (it has: {', '.join(sorted({k.split('.')[0] for k in tensors}))})")
    missing = set(policy.state_dict()) - set(sd)
    if missing:
        raise CheckpointError(f"{source}: no weights for {sorted(missing)[0]} (and {len(missing) - 1} more); the checkpoint does not match {SPEC_FILE}")
    policy.load_state_dict(sd, strict=True)
    return policy.eval()
