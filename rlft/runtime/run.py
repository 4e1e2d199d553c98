"""The run folder every command writes: ``runs/<name>/``.

    config.yaml          fully resolved config of the run
    metrics.jsonl        one JSON object per logged step ({"step": ..., "<metric>": ...})
    events.out.tfevents* TensorBoard events (the same scalars)
    checkpoints/step_<N>/  model.safetensors  weights of every module, "<module>.<param>"
                           trainer.pt         optimizer/scheduler states + torch RNG (weights_only load)
                           state.json         step counters, python/numpy RNG states, extra trainer state

A checkpoint directory is filled under a temporary name and renamed into place, so a crash never
leaves a half-written checkpoint; ``--resume`` loads the newest one and truncates metrics logged after
it, so the resumed run writes the same metrics an uninterrupted run would.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from rlft.config import ConfigError, to_yaml
from rlft.runtime.io import atomic_write_dir, atomic_write_json, atomic_write_text
from rlft.runtime.seeding import capture_rng, restore_rng

CKPT_PREFIX = "step_"


@dataclass
class Checkpoint:
    """What :meth:`Run.load_checkpoint` returns; modules/optimizers were already restored in place."""

    step: int
    path: Path
    extra: dict[str, Any]


class MetricsLogger:
    """Scalars to metrics.jsonl and TensorBoard at once."""

    def __init__(self, folder: Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.path = folder / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [row for row in read_metrics(folder) if row["step"] <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        self._file = open(self.path, "a")
        self._tb = SummaryWriter(str(folder), purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        for k, v in metrics.items():
            self._tb.add_scalar(k, float(v), int(step))

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def read_metrics(folder: str | Path) -> list[dict[str, float]]:
    """The rows of ``metrics.jsonl``; a last line cut short by a crash is skipped."""
    path = Path(folder) / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model it is loaded into; the message says which weights."""


class Run:
    """A run folder: config, metrics, checkpoints. Create it with :meth:`Run.start`."""

    def __init__(self, folder: Path, cfg: DictConfig, resume: bool, keep_checkpoints: int = 3):
        self.folder = folder
        self.cfg = cfg
        self.resume = resume
        self.keep_checkpoints = keep_checkpoints
        self.ckpt_dir = folder / "checkpoints"

    @classmethod
    def start(cls, cfg: DictConfig, resume: bool = False, may_change: tuple[str, ...] = ()) -> "Run":
        """Open ``<cfg.run.dir>/<cfg.run.name>``: new (refusing to overwrite) or resumed.

        A resumed run must have the saved config, except under the top-level keys in ``may_change``
        (settings of a stage that runs after everything the checkpoints hold, such as what
        ``rlft collect`` records after training); the saved config.yaml is then updated.
        """
        folder = Path(cfg.run.dir) / cfg.run.name
        saved = folder / "config.yaml"
        if resume:
            if not saved.exists():
                raise ConfigError(f"--resume: {folder} holds no run (no config.yaml); start it without --resume")
            old = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
            new = OmegaConf.to_container(cfg, resolve=True)
            diff = sorted(k for k in _diff_keys(old, new) if k.split(".")[0] not in may_change)
            if diff:
                raise ConfigError(f"--resume: the config differs from the saved run at {', '.join(diff[:5])}; resume with the same overrides")
        elif saved.exists():
            raise ConfigError(f"run folder {folder} already exists; add --resume to continue it or choose run.name=<new name>")
        keep = int(cfg.run.get("keep_checkpoints", 3))
        if keep < 0:
            raise ConfigError(f"run.keep_checkpoints must be >= 0 (0 keeps every checkpoint), got {keep}")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, to_yaml(cfg))
        return cls(folder, cfg, resume, keep_checkpoints=keep)

    def open_metrics(self, resume_step: int | None = None) -> MetricsLogger:
        """The run's metrics logger; with ``resume_step``, rows logged after that step are dropped first."""
        return MetricsLogger(self.folder, resume_step)

    # ---- checkpoints -------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.ckpt_dir.is_dir():
            return []
        found = [p for p in self.ckpt_dir.glob(f"{CKPT_PREFIX}*") if p.is_dir() and (p / "state.json").exists()]
        return sorted(found, key=lambda p: int(p.name[len(CKPT_PREFIX) :]))

    def save_checkpoint(
        self,
        step: int,
        modules: Mapping[str, torch.nn.Module],
        optimizers: Mapping[str, Any] | None = None,
        generators: dict[str, np.random.Generator] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``checkpoints/step_<step>/`` atomically; keep the newest ``keep_checkpoints`` (0: all)."""
        weights = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()}
        rng_state, torch_rng = capture_rng(generators)
        trainer = {"optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()}, "torch_rng": torch_rng}
        state = {"step": int(step), "rng": rng_state, "extra": dict(extra or {})}

        def fill(tmp: Path) -> None:
            save_file(_dedupe_shared(weights), str(tmp / "model.safetensors"))
            torch.save(trainer, tmp / "trainer.pt")
            atomic_write_json(tmp / "state.json", state)

        path = atomic_write_dir(self.ckpt_dir / f"{CKPT_PREFIX}{int(step):09d}", fill)
        if self.keep_checkpoints:
            for old in self.checkpoints()[: -self.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def load_checkpoint(
        self,
        modules: Mapping[str, torch.nn.Module],
        optimizers: Mapping[str, Any] | None = None,
        generators: dict[str, np.random.Generator] | None = None,
    ) -> Checkpoint | None:
        """Restore the newest checkpoint in place (modules, optimizers, every RNG); None if there is none."""
        found = self.checkpoints()
        if not found:
            return None
        path = found[-1]
        load_weights(path / "model.safetensors", modules)
        trainer = torch.load(path / "trainer.pt", weights_only=True)
        for k, o in (optimizers or {}).items():
            o.load_state_dict(trainer["optimizers"][k])
        state = json.loads((path / "state.json").read_text())
        restore_rng(state["rng"], trainer["torch_rng"], generators)
        return Checkpoint(step=state["step"], path=path, extra=state["extra"])


def load_weights(path: Path, modules: Mapping[str, torch.nn.Module]) -> None:
    """Load ``<module>.<param>`` tensors from a safetensors file into ``modules`` (strict)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint weights missing; the checkpoint is incomplete")
    tensors = load_file(str(path))
    for name, m in modules.items():
        prefix = f"{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing = set(m.state_dict()) - set(sd)
        if missing:
            raise CheckpointError(f"{path}: no weights for {name}.{sorted(missing)[0]} (and {len(missing) - 1} more); wrong checkpoint for this model")
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


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
