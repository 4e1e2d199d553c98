"""Environments: one batched interface (torch tensors in and out) over several backends, and wrappers.

``rlft.envs.make(name, n_envs, backend=...)`` builds a :class:`BatchedEnv`; ``rlft.envs.registry``
maps short names to gymnasium ids and holds the single-env helpers.

MuJoCo prints its warnings (e.g. "Nan, Inf or huge value in QVEL") on C stdout and appends them to
MUJOCO_LOG.TXT in the working folder; importing this package routes them to stderr instead, so
``--json`` output stays one line and no log file appears beside the user's files.
"""

import sys

import mujoco

from rlft.envs.base import BatchedEnv
from rlft.envs.factory import BACKENDS, make


def _warn_on_stderr(message: str) -> None:
    print(f"MuJoCo warning: {message}", file=sys.stderr, flush=True)


mujoco.set_mju_user_warning(_warn_on_stderr)

__all__ = ["BACKENDS", "BatchedEnv", "make"]
