"""The one replay buffer: a checkpointable ring of named tensors (expert SAC, DSRL's SB3 SAC, DSRL-NA).

:class:`Replay` holds fields [capacity, ...]; its ``state_dict`` is the filled part plus the write
position and size, so a checkpoint stores tensors only (safetensors, no pickle). For stable-baselines3,
:meth:`Replay.backing` makes an SB3 ``ReplayBuffer``'s numpy arrays views of the module's tensors and
reads ``pos`` / ``full`` from that buffer, so SB3 writes straight into the module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlft.errors import CheckpointError

SB3_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class Replay(nn.Module):
    """A ring buffer of named tensors [capacity, ...]; fields are allocated on their first :meth:`add` (or load)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = int(capacity)
        self.data: dict[str, torch.Tensor] = {}
        self._pos, self._size = 0, 0
        self._sb3: list[Any] = []  # the SB3 buffer this module backs (a list: it is no submodule)

    @classmethod
    def backing(cls, buffer: Any) -> "Replay":
        """A module whose tensors are the storage of SB3 ``buffer`` (rows [buffer_size, n_envs, ...]); SB3 keeps writing it."""
        replay = cls(buffer.buffer_size)
        for field in SB3_FIELDS:
            array = getattr(buffer, field)
            replay.data[field] = torch.zeros(array.shape, dtype=torch.from_numpy(array[:0]).dtype)
            setattr(buffer, field, replay.data[field].numpy())  # a view: SB3's writes land in the tensor
        replay._sb3 = [buffer]
        return replay

    @property
    def pos(self) -> int:
        """The next row written."""
        return int(self._sb3[0].pos) if self._sb3 else self._pos

    @property
    def size(self) -> int:
        """Rows filled."""
        if self._sb3:
            b = self._sb3[0]
            return int(b.buffer_size if b.full else b.pos)
        return self._size

    def _set_cursor(self, pos: int, size: int) -> None:
        if self._sb3:
            self._sb3[0].pos, self._sb3[0].full = pos, size == self.capacity
        else:
            self._pos, self._size = pos, size

    def add(self, **rows: torch.Tensor) -> None:
        """Rows [n, ...] per field (every field every time), written at the ring position."""
        n = len(next(iter(rows.values())))
        idx = (self.pos + torch.arange(n)) % self.capacity
        for key, value in rows.items():
            if key not in self.data:
                self.data[key] = torch.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype)
            self.data[key][idx] = value.detach().cpu()
        self._set_cursor(int((self.pos + n) % self.capacity), min(self.size + n, self.capacity))

    def sample(self, batch: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``batch`` rows drawn uniformly from the filled part: {field: [batch, ...]}."""
        idx = torch.randint(0, self.size, (batch,), generator=generator)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        filled = self.size
        return {k: v[:filled] for k, v in self.data.items()} | {"_pos": torch.tensor(self.pos), "_size": torch.tensor(filled)}

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        size = int(state["_size"])
        for key, rows in state.items():
            if key.startswith("_"):
                continue
            if key not in self.data:
                self.data[key] = torch.zeros((self.capacity, *rows.shape[1:]), dtype=rows.dtype)
            held = self.data[key]
            if rows.shape[1:] != held.shape[1:] or len(rows) > self.capacity or rows.dtype != held.dtype:
                raise CheckpointError(f"replay field '{key}' is {rows.dtype} {tuple(rows.shape)}; this run's buffer holds {held.dtype} {tuple(held.shape)}")
            held[: len(rows)] = rows
        self._set_cursor(int(state["_pos"]), size)

    def extra_repr(self) -> str:
        return f"capacity={self.capacity}, size={self.size}, fields={sorted(self.data)}"
