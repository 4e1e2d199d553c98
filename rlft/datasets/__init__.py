"""Trajectory data: the native episode store, readers of other formats, window sampling, collection.

Import it as ``rlft.datasets``; nothing here is importable as a top-level ``datasets`` module.
"""

from rlft.datasets.store import EpisodeStore, write_episodes

__all__ = ["EpisodeStore", "write_episodes"]
