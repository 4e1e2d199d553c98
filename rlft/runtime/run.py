"""The run folder every command writes: ``runs/<name>/``.

    config.yaml          fully resolved config of the run
    metrics.jsonl        one JSON object per logged step ({"step": ..., "<metric>": ...})
    events.out.tfevents* TensorBoard events (the same scalars)
    policy.json, checkpoints/   see :mod:`rlft.runtime.checkpoint`, the one module that knows their layout

``--resume`` loads the newest intact checkpoint and truncates metrics logged after it, so the resumed run
writes the same metrics an uninterrupted run would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlft.errors import ConfigError
from rlft.io import atomic_write_text
from rlft.runtime.checkpoint import Checkpoint, checkpoints, clean_checkpoints, load_checkpoint, save_checkpoint
from rlft.runtime.distributed import World

WORLD_SIZE = "world_size"  # the key of config.yaml that records the data-parallel process count


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


class Run:
    """A run folder: config, metrics, checkpoints. Create it with :meth:`Run.start`.

    ``world``: this process's data-parallel rank (:mod:`rlft.runtime.distributed`); only rank 0 writes.
    """

    def __init__(self, folder: Path, cfg: DictConfig, resume: bool, keep_checkpoints: int = 3, world: World = World()):
        self.folder = folder
        self.cfg = cfg
        self.resume = resume
        self.keep_checkpoints = keep_checkpoints
        self.ckpt_dir = folder / "checkpoints"
        self.world = world

    @classmethod
    def start(cls, cfg: DictConfig, resume: bool = False, may_change: tuple[str, ...] = (), world: World = World()) -> "Run":
        """Open ``<cfg.run.dir>/<cfg.run.name>``: new (refusing to overwrite) or resumed.

        A resumed run must have the saved config, except under the top-level keys in ``may_change``
        (settings of a stage that runs after everything the checkpoints hold, such as what
        ``rlft collect`` records after training); the saved config.yaml is then updated. config.yaml also
        records the number of data-parallel processes (``world_size``), which a resume must keep. Every rank
        checks; rank 0 writes.
        """
        folder = Path(cfg.run.dir) / cfg.run.name
        saved = folder / "config.yaml"
        record = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True) | {WORLD_SIZE: world.size}) if world.size > 1 else cfg
        if resume:
            if not saved.exists():
                raise ConfigError(f"--resume: {folder} holds no run (no config.yaml); start it without --resume")
            old = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
            if old.get(WORLD_SIZE, 1) != world.size:
                raise ConfigError(f"--resume: {folder} ran with {old.get(WORLD_SIZE, 1)} process(es), this start has {world.size}; resume with as many")
            new = OmegaConf.to_container(record, resolve=True)
            diff = sorted(k for k in _diff_keys(old, new) if k.split(".")[0] not in may_change)
            if diff:
                raise ConfigError(f"--resume: the config differs from the saved run at {', '.join(diff[:5])}; resume with the same overrides")
        elif saved.exists():
            raise ConfigError(f"run folder {folder} already exists; add --resume to continue it or choose run.name=<new name>")
        keep = int(cfg.run.get("keep_checkpoints", 3))
        if keep < 0:
            raise ConfigError(f"run.keep_checkpoints must be >= 0 (0 keeps every checkpoint), got {keep}")
        world.barrier()  # every rank has checked before rank 0 writes
        run = cls(folder, cfg, resume, keep_checkpoints=keep, world=world)
        if world.main:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(saved, OmegaConf.to_yaml(record, resolve=True))
            clean_checkpoints(run.ckpt_dir)  # half-written checkpoints of a crashed earlier start
        world.barrier()
        return run

    def open_metrics(self, resume_step: int | None = None) -> MetricsLogger:
        """The run's metrics logger; with ``resume_step``, rows logged after that step are dropped first."""
        return MetricsLogger(self.folder, resume_step)

    # ---- checkpoints -------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return checkpoints(self.ckpt_dir)

    def save_checkpoint(
        self,
        step: int,
        modules: Mapping[str, torch.nn.Module],
        optimizers: Mapping[str, Any] | None = None,
        generators: dict[str, np.random.Generator] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``checkpoints/step_<step>/``; keep the newest ``keep_checkpoints`` (0: all)."""
        return save_checkpoint(self.ckpt_dir, step, modules, optimizers, generators, extra, keep=self.keep_checkpoints)

    def load_checkpoint(
        self,
        modules: Mapping[str, torch.nn.Module],
        optimizers: Mapping[str, Any] | None = None,
        generators: dict[str, np.random.Generator] | None = None,
    ) -> Checkpoint | None:
        """Restore the newest checkpoint in place (modules, optimizers, every RNG); None if there is none."""
        return load_checkpoint(self.ckpt_dir, modules, optimizers, generators)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
