"""The one place that knows how weights and trainer state are laid out on disk.

A run folder (``runs/<name>/``) holds::

    policy.json              the policy's architecture (``Policy.spec()``) + ``meta`` (env, algo, origin)
    checkpoints/step_<N>/    model.safetensors  weights of every module, "<module>.<param>"
                             trainer.pt         optimizer/scheduler states + torch RNG (weights_only load)
                             state.json         step, python/numpy RNG states, extra trainer state

A policy folder (what rlft ships, ``rlft/assets/policies/<name>/``) holds ``policy.json`` and
``policy.safetensors`` (the policy's own state dict). Checkpoints and policy folders are filled under a
temporary name and renamed into place, so a crash never leaves half of one (:func:`clean_checkpoints`
removes what a crash left at the start of a run). Nothing is unpickled: weights are safetensors, trainer
state loads with ``weights_only=True``.

Weights files record (safetensors metadata) the sha256 of their tensors, ``rlft_sha256``, so changed bytes
are an error, and the fingerprint of the ``policy.json`` they were saved with, ``rlft_spec``, so a checkpoint
loads only into the run that wrote it, and not after ``policy.json`` was edited. A file that cannot be read
is a one-line :class:`CheckpointError`; ``--resume`` then moves the damaged checkpoint aside
(``checkpoints/damaged-step_<N>``) and continues from the newest intact one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rlft.errors import CheckpointError, RlftError
from rlft.io import atomic_write_dir, atomic_write_json, remove_leftovers
from rlft.paths import POLICIES_DIR, is_bare_name
from rlft.policies.policy import Policy
from rlft.runtime.seeding import capture_rng, restore_rng

CKPT_PREFIX = "step_"
MODEL_FILE, TRAINER_FILE, STATE_FILE = "model.safetensors", "trainer.pt", "state.json"
SPEC_FILE, WEIGHTS_FILE = "policy.json", "policy.safetensors"
SPEC_KEY = "rlft_spec"  # weights-file metadata: the fingerprint of the policy.json the weights were saved with
DIGEST_KEY = "rlft_sha256"  # weights-file metadata: the sha256 of the tensors themselves
DAMAGED_PREFIX = "damaged-"


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
    found = [p for p in ckpt_dir.glob(f"{CKPT_PREFIX}*") if p.is_dir() and p.name[len(CKPT_PREFIX) :].isdigit() and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name[len(CKPT_PREFIX) :]))


def clean_checkpoints(ckpt_dir: Path) -> None:
    """Remove the temporary folders of checkpoints a crash left half-written (at the start of a run)."""
    remove_leftovers(ckpt_dir, f"{CKPT_PREFIX}*")


def latest_checkpoint(folder: Path) -> Path:
    """The newest complete checkpoint of a run folder."""
    found = checkpoints(Path(folder) / "checkpoints")
    if not found:
        raise CheckpointError(f"{folder}: no complete checkpoint yet; train longer or resume the run")
    return found[-1]


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    """sha256 of a ``policy.json``'s content (key order and layout aside)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of named tensors: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _save_weights(tensors: dict[str, torch.Tensor], path: Path, spec_folder: Path) -> None:
    """A safetensors file with the tensors' sha256 and (where ``spec_folder`` has a policy.json) its fingerprint."""
    metadata = {DIGEST_KEY: _tensors_digest(tensors)}
    if (spec_folder / SPEC_FILE).is_file():
        metadata[SPEC_KEY] = spec_fingerprint(read_spec(spec_folder))
    save_file(tensors, str(path), metadata=metadata)


def _check_spec(weights_file: Path, folder: Path) -> None:
    """Refuse weights saved with another policy.json than ``folder``'s (files written before fingerprints pass)."""
    try:
        with safe_open(str(weights_file), "pt") as f:
            saved = (f.metadata() or {}).get(SPEC_KEY)
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{weights_file}: cannot be read ({_why(e)}); the file is damaged") from None
    if saved is not None and saved != spec_fingerprint(read_spec(folder)):
        raise CheckpointError(
            f"{weights_file}: saved with another {SPEC_FILE} than {folder}'s (another run's weights, or {SPEC_FILE} was edited); "
            "load it with the run folder that wrote it"
        )


def run_checkpoint(folder: Path, checkpoint: Path | None = None) -> Path:
    """The checkpoint a run folder's policy loads from: ``checkpoint`` or the newest, refused unless its weights
    were saved with ``folder``'s policy.json (so another run's weights never load into this run's policy)."""
    path = latest_checkpoint(folder) if checkpoint is None else Path(checkpoint)
    if not (path / MODEL_FILE).is_file():
        raise CheckpointError(f"{path}: not a checkpoint (no {MODEL_FILE}); a run's checkpoints are <run>/checkpoints/{CKPT_PREFIX}<N>")
    _check_spec(path / MODEL_FILE, Path(folder))
    return path


def _why(e: BaseException) -> str:
    """An exception in a few words: its type and the first line of its message."""
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__


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
        _save_weights(_dedupe_shared(weights), tmp / MODEL_FILE, ckpt_dir.parent)  # the run folder's policy.json
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
    """Restore the newest intact checkpoint in place (modules, optimizers, every RNG); None if there is none.

    A newer checkpoint whose files cannot be read is moved aside to ``damaged-step_<N>`` (so it is neither
    loaded nor counted among the kept ones), saying so on stderr; CheckpointError if none is intact.
    """
    found = checkpoints(ckpt_dir)
    damaged: list[tuple[Path, str]] = []
    for path in reversed(found):
        try:
            tensors, trainer, state = _read_checkpoint(path)
        except CheckpointError as e:
            damaged.append((path, str(e)))
            continue
        for bad, why in damaged:
            aside = _set_aside(bad)
            print(f"rlft: {why}; moved it to {aside} and resuming from {path.name}", file=sys.stderr)
        try:
            _load_tensors(path, tensors, modules)
            for k, o in (optimizers or {}).items():
                o.load_state_dict(trainer["optimizers"][k])
            restore_rng(state["rng"], trainer["torch_rng"], generators)
        except CheckpointError:
            raise
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: does not fit this run ({_why(e)}); resume with the command that wrote it") from None
        return Checkpoint(step=int(state["step"]), path=path, extra=state["extra"])
    if damaged:
        raise CheckpointError(f"{damaged[0][1]}; no checkpoint of {ckpt_dir} is intact ({len(damaged)} damaged), so the run cannot resume")
    return None


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Weights, trainer state and state.json of a checkpoint folder, or CheckpointError naming the damaged file."""
    tensors = read_weights(path)
    try:
        trainer = torch.load(path / TRAINER_FILE, weights_only=True)
    except Exception as e:  # a truncated or overwritten file: pickle, zip and EOF errors of every kind
        raise CheckpointError(f"{path / TRAINER_FILE}: cannot be read ({_why(e)}); the checkpoint is damaged") from None
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path / STATE_FILE}: cannot be read ({_why(e)}); the checkpoint is damaged") from None
    if not isinstance(state, dict) or not {"step", "rng", "extra"} <= set(state) or not isinstance(state["step"], int):
        raise CheckpointError(f"{path / STATE_FILE}: not rlft checkpoint state; the checkpoint is damaged")
    if not isinstance(trainer, dict) or not {"optimizers", "torch_rng"} <= set(trainer):
        raise CheckpointError(f"{path / TRAINER_FILE}: not rlft trainer state; the checkpoint is damaged")
    return tensors, trainer, state


def _set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint folder to ``damaged-<name>`` (``-2``, ``-3``, ... if taken); returns the new path."""
    aside, n = path.with_name(f"{DAMAGED_PREFIX}{path.name}"), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{DAMAGED_PREFIX}{path.name}-{n}")
    path.rename(aside)
    return aside


def read_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, ``"<module>.<param>"``."""
    path = Path(checkpoint) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint weights missing; the checkpoint is incomplete")
    return _load_file(path)


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, checked against their recorded sha256 (files written before it pass)."""
    try:
        with safe_open(str(path), "pt") as f:
            expected = (f.metadata() or {}).get(DIGEST_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path}: cannot be read ({_why(e)}); the file is damaged") from None
    if expected is not None and _tensors_digest(tensors) != expected:
        raise CheckpointError(f"{path}: the weights differ from their checksum (changed since they were saved); the file is damaged")
    return tensors


def load_weights(checkpoint: Path, modules: Mapping[str, torch.nn.Module]) -> None:
    """Load the ``<name>.<param>`` tensors of a checkpoint folder into ``modules`` (every parameter must be there).

    A name may be dotted (``provider.residual``) to load part of a saved module.
    """
    _load_tensors(checkpoint, read_weights(checkpoint), modules)


def _load_tensors(checkpoint: Path, tensors: Mapping[str, torch.Tensor], modules: Mapping[str, torch.nn.Module]) -> None:
    for name, m in modules.items():
        prefix = f"{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing = set(m.state_dict()) - set(sd)
        if missing:
            raise CheckpointError(f"{checkpoint}: no weights for {name}.{sorted(missing)[0]} (and {len(missing) - 1} more); wrong checkpoint for this model")
        try:
            m.load_state_dict(sd, strict=False)
        except RuntimeError as e:  # a tensor of another shape
            raise CheckpointError(f"{checkpoint}: the weights of {name} do not fit this model ({_why(e)}); wrong checkpoint for this model") from None


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
    """A run or policy folder as given, or (a name without a folder) the name of a policy shipped with rlft."""
    p = Path(path)
    if p.exists():
        return p
    if is_bare_name(path) and (POLICIES_DIR / p.name).is_dir():
        return POLICIES_DIR / p.name
    shipped = sorted(d.name for d in POLICIES_DIR.iterdir() if d.is_dir()) if POLICIES_DIR.is_dir() else []
    raise CheckpointError(f"{path}: no such run or policy folder; shipped policies (named without a folder): {', '.join(shipped) or 'none'}")


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
        raise CheckpointError(f"{folder}: no {SPEC_FILE}; not a policy run folder (train one with `rlft pretrain`)")
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{spec_path}: cannot be read ({_why(e)}); the file was edited or damaged") from None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{spec_path}: not a policy spec (a JSON object); the file was edited or damaged")
    return spec


def policy_from_spec(spec: Mapping[str, Any], folder: Path) -> Policy:
    """``Policy.from_spec`` of ``folder``'s policy.json, or CheckpointError if the spec does not describe a policy."""
    try:
        return Policy.from_spec(spec)
    except RlftError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{Path(folder) / SPEC_FILE}: not a valid policy spec ({_why(e)}); the file was edited or damaged") from None


def save_policy(policy: Policy, folder: str | Path, meta: Mapping[str, Any]) -> Path:
    """A self-contained policy folder: ``policy.json`` + ``policy.safetensors`` (what rlft ships), atomically."""

    def fill(tmp: Path) -> None:
        write_spec(tmp, policy, meta)
        _save_weights({k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}, tmp / WEIGHTS_FILE, tmp)

    return atomic_write_dir(folder, fill)


def load_policy(path: str | Path, weights: str = "auto", checkpoint: Path | None = None) -> Policy:
    """The policy of a policy folder, or of a run folder with the weights of a checkpoint (newest by default).

    ``weights``: ``ema`` (the averaged weights of pretraining), ``policy`` (the raw ones; what fine-tuning
    trains) or ``auto`` (ema where the checkpoint has it, else policy); a policy folder holds one set.
    """
    folder = resolve_policy(path)
    policy = policy_from_spec(read_spec(folder), folder)
    if (folder / WEIGHTS_FILE).is_file():
        if checkpoint is not None:
            raise CheckpointError(f"{folder} is a policy folder, which holds one set of weights; a checkpoint is chosen only for a run folder")
        source = folder / WEIGHTS_FILE
        _check_spec(source, folder)
        tensors, prefix = _load_file(source), ""
    else:
        source = run_checkpoint(folder, checkpoint)
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
    try:
        policy.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # unexpected keys or tensors of another shape
        raise CheckpointError(f"{source}: the weights do not match {SPEC_FILE} ({_why(e)})") from None
    return policy.eval()
