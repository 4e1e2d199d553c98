"""Any gymnasium env id on worker processes, each stepping a share of the sub-envs (robosuite's way to use every core).

gymnasium's async vector env runs one process per sub-env; simulators as slow as robosuite (~100 steps/s per core)
want a few processes, each stepping several envs in turn. Worker ``w`` holds a :class:`GymVectorEnv` (gymnasium's
sync vector env) over sub-envs ``[offset_w, offset_w + size_w)`` seeded ``seed + offset_w + j``: the same episodes
as the ``gymnasium`` backend for the same seed. Each batched step sends every worker its rows of the actions
(numpy over a pipe), then gathers the results; workers step at the same time.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

from rlft.envs.backends.gym_vector import GymVectorEnv
from rlft.envs.base import BatchedEnv
from rlft.envs.obs import concat_numpy, to_numpy


def split(n_envs: int, workers: int) -> list[tuple[int, int]]:
    """(offset, size) of each worker's sub-envs: ``min(workers, n_envs)`` contiguous shares, sizes differing by at most 1."""
    workers = max(1, min(workers, n_envs))
    sizes = [n_envs // workers + (w < n_envs % workers) for w in range(workers)]
    return [(sum(sizes[:w]), size) for w, size in enumerate(sizes)]


def _serve(conn: Connection, gym_id: str, n_envs: int, velocity_limit: float | None, env_kwargs: dict[str, Any]) -> None:
    """A worker: build the sub-envs, then answer commands until ``close``. Errors go back as ("error", traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the main process stops the run
    torch.set_num_threads(1)
    try:
        from rlft.envs.registry import env_id

        env_id(gym_id)  # registers rlft's own tasks (and bullet-safety-gym's) in this fresh process
        env = GymVectorEnv(gym_id, n_envs, asynchronous=False, velocity_limit=velocity_limit, **env_kwargs)
        conn.send(("ok", (env.single_observation_space, env.single_action_space, env.max_episode_steps, env.has_cost)))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            command, *args = conn.recv()
            try:
                if command == "reset":
                    reply: Any = to_numpy(env._reset(args[0]))
                elif command == "step":
                    actions, active = args
                    out = env._step(torch.from_numpy(actions), None if active is None else torch.from_numpy(active))
                    reply = tuple(x if x is None or isinstance(x, np.ndarray) else to_numpy(x) for x in out)
                elif command == "render":
                    reply = env.render(args[0])
                elif command == "close":
                    break
                else:
                    raise ValueError(f"unknown command {command!r}")
                conn.send(("ok", reply))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):  # the main process went away
        pass
    finally:
        env.close()
        conn.close()


class WorkerVectorEnv(BatchedEnv):
    """``n_envs`` sub-envs of ``gym_id`` on ``workers`` processes (spawned), each a sync vector env of its share."""

    backend = "workers"

    def __init__(
        self,
        gym_id: str,
        n_envs: int,
        workers: int = 2,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        velocity_limit: float | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.shares = split(n_envs, workers)
        context = mp.get_context("spawn")  # fork after torch's thread pools start can deadlock
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        try:
            for _, size in self.shares:
                parent, child = context.Pipe()
                proc = context.Process(target=_serve, args=(child, gym_id, size, velocity_limit, env_kwargs), daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
            obs_space, act_space, max_steps, has_cost = self._gather()[0]
            self.has_cost = has_cost
            super().__init__(n_envs, obs_space, act_space, max_steps, seed, device, dtype)
        except Exception:
            self.close()
            raise

    def _gather(self) -> list[Any]:
        """Every worker's reply, in worker order; a worker's error is raised here with its traceback."""
        replies = []
        for w, conn in enumerate(self._conns):
            try:
                status, value = conn.recv()
            except EOFError:
                raise RuntimeError(f"env worker {w} died (exit code {self._procs[w].exitcode})") from None
            if status == "error":
                raise RuntimeError(f"env worker {w} failed:\n{value}")
            replies.append(value)
        return replies

    def _reset(self, seed: int | None) -> torch.Tensor:
        for (offset, _), conn in zip(self.shares, self._conns):
            conn.send(("reset", None if seed is None else seed + offset))
        return self._obs_tensor(concat_numpy(self._gather()))

    def _step(self, actions: torch.Tensor, active: torch.Tensor | None):
        actions_np = actions.to("cpu").numpy()
        active_np = None if active is None else active.cpu().numpy()
        for (offset, size), conn in zip(self.shares, self._conns):
            conn.send(("step", actions_np[offset : offset + size], None if active_np is None else active_np[offset : offset + size]))
        replies = self._gather()
        obs, reward, terminated, truncated, final_obs = (concat_numpy([r[k] for r in replies]) for k in range(5))
        successes = [r[5] for r in replies]
        if any(s is not None for s in successes):  # a worker without a finished episode has no success row
            success = np.concatenate([np.zeros(size, bool) if s is None else s for s, (_, size) in zip(successes, self.shares)])
        else:
            success = None
        cost = np.concatenate([r[6] for r in replies]) if self.has_cost else None
        return (
            self._obs_tensor(obs),
            self._tensor(reward),
            self._tensor(terminated, torch.bool),
            self._tensor(truncated, torch.bool),
            self._obs_tensor(final_obs),
            success,
            None if cost is None else self._tensor(cost),
        )

    def render(self, index: int = 0) -> np.ndarray:
        for w, (offset, size) in enumerate(self.shares):
            if offset <= index < offset + size:
                self._conns[w].send(("render", index - offset))
                status, value = self._conns[w].recv()
                if status == "error":
                    raise RuntimeError(f"env worker {w} failed to render:\n{value}")
                return value
        raise IndexError(f"sub-env {index} out of range for {self.n_envs} envs")

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []
