"""Environments: one batched interface (torch tensors in and out) over several backends, and wrappers.

``rlft.envs.make(name, n_envs, backend=...)`` builds a :class:`BatchedEnv`; ``rlft.envs.registry``
maps short names to gymnasium ids and holds the single-env helpers.
"""

from rlft.envs.base import BatchedEnv
from rlft.envs.factory import BACKENDS, make

__all__ = ["BACKENDS", "BatchedEnv", "make"]
