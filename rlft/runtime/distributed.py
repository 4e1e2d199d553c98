"""Data-parallel training under ``torchrun``: one process per device, each with its rows of the global batch.

``torchrun --nproc_per_node N -m rlft pretrain ...`` starts N processes with ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` set; :func:`join` makes the process group (NCCL on GPUs, gloo on CPU) and returns this
process's :class:`World`. Every rank draws the same global batch indices from the same seeded data RNG
and takes its rows (``World.rows``); the losses' own randomness is split the same way
(:mod:`rlft.policies.draws`), and DistributedDataParallel averages the gradients, so N ranks take exactly
the step one process takes on the whole batch (up to float summation order). Only rank 0 writes: the run
folder, metrics, TensorBoard, checkpoints and plots; every rank reads the checkpoint on ``--resume``
(resume needs the same world size, which the saved config records as ``train.world_size``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch

from rlft.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this rank writes the run folder."""
        return self.rank == 0

    def rows(self, global_batch: int) -> slice:
        """This rank's rows of a global batch (the batch must divide evenly)."""
        if global_batch % self.size:
            raise ConfigError(f"the batch size {global_batch} must be a multiple of the number of processes ({self.size})")
        per = global_batch // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """The mean of each scalar over the ranks (one all-reduce), so every rank logs and checks the same numbers."""
        if self.size == 1 or not values:
            return dict(values)
        keys = sorted(values)
        packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._device)
        torch.distributed.all_reduce(packed)
        return {k: v / self.size for k, v in zip(keys, packed.tolist())}

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (a stop request reaches the ranks at different moments)."""
        if self.size == 1:
            return flag
        packed = torch.tensor([1.0 if flag else 0.0], device=self._device)
        torch.distributed.all_reduce(packed)
        return bool(packed.item() > 0)

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    @property
    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def join(device: str) -> World:
    """The world torchrun started this process in (one process without it); makes the process group once."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return World(rank, size, local_rank)


def data_parallel(module: torch.nn.Module, world: World) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel when there are several ranks (its forward is what backpropagates)."""
    if world.size == 1:
        return module
    device_ids = [world.local_rank] if next(module.parameters()).is_cuda else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
