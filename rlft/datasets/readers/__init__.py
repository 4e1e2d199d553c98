"""Readers that import other trajectory formats into the native store.

Each reader returns :class:`Imported` (concatenated arrays, episode ends, metadata) and raises
:class:`~rlft.datasets.store.DatasetError` with a one-line message naming the file and the problem.
Native key names: ``obs`` (or ``obs/<name>`` for dict observations), ``action``, ``reward``,
``terminated``, ``truncated``; other per-step arrays keep their source names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rlft.datasets.readers.base import Imported
from rlft.datasets.readers.d4rl import read_d4rl
from rlft.datasets.readers.dppo import read_dppo_npz
from rlft.datasets.readers.lerobot import read_lerobot
from rlft.datasets.readers.minari import read_minari
from rlft.datasets.readers.robomimic import read_robomimic
from rlft.datasets.store import EpisodeStore, write_episodes
from rlft.errors import DatasetError

READERS: dict[str, Callable[[Path], Imported]] = {
    "d4rl": read_d4rl,
    "minari": read_minari,
    "robomimic": read_robomimic,
    "npz": read_dppo_npz,
    "lerobot": read_lerobot,
}


def import_dataset(src: str | Path, fmt: str, out: str | Path) -> EpisodeStore:
    """Read ``src`` in format ``fmt`` and write it as a native store at ``out``."""
    if fmt not in READERS:
        raise DatasetError(f"unknown format '{fmt}'; choose one of: {', '.join(READERS)}")
    src = Path(src)
    if not src.exists():
        raise DatasetError(f"{src}: no such file or directory")
    imported = READERS[fmt](src)
    return write_episodes(out, imported.data, imported.episode_ends, imported.meta)


__all__ = ["READERS", "Imported", "import_dataset"]
