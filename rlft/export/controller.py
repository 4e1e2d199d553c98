"""The robot-side controller of an exported policy folder: numpy in, numpy out.

This module imports only numpy, json, onnxruntime and the standard library (TorchScript folders import
torch when they are opened), so it runs on a robot without torch or rlft's training code; copy it
next to the exported folder if rlft is not installed there.

An exported folder holds the graph (``policy.onnx`` or ``policy.ts``) and ``controller.json``. The
graph maps raw observations and the initial noise to a raw action chunk, deterministically:
``(noise [B, *noise shape], obs [B, T, ...] per key) -> action [B, H, A]``. Normalization, the sampler's K
steps (DDIM eta 0 or the flow ODE) and action clipping are inside it. By ``kind`` (controller.json):

* ``policy``: a generative policy's sampler, noise [B, H, A];
* ``q_select``: an offline run's N candidates and the critic's pick, noise [B, N, H, A];
* ``steered``: DSRL's noise actor (its mean) and the frozen base, no noise input;
* ``residual``: ResiP, two graphs around a queue the controller keeps: ``policy.*`` plans the base's next
  normalized actions (noise [B, H, A] -> base_action [B, queue, A]) when the queue is used up or an
  episode starts, ``residual.*`` turns the next queued one into this step's action every step
  (``(base_action [B, A], obs) -> action [B, 1, A]``).

* :meth:`Controller.predict` batched chunks for a batch of observation histories (draws the noise
  unless given);
* :meth:`Controller.act` one control step of one robot: keeps the observation history, executes
  ``act_steps`` actions of each chunk from a queue, or with ``ensemble=k`` queries every step and
  averages all chunks that cover the current step (ACT's temporal ensembling); ResiP's base queue.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnxruntime as ort

CONTROLLER_FILE = "controller.json"
Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def onnx_session_options(threads: int = 1) -> ort.SessionOptions:
    """Single-robot latency settings: ``threads`` intra-op threads, one inter-op thread, sequential
    execution, all graph optimisations (constant folding, fusions)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _onnx_runner(path: Path, output: str, threads: int) -> Runner:
    session = ort.InferenceSession(str(path), onnx_session_options(threads), providers=["CPUExecutionProvider"])
    return lambda feeds: session.run([output], feeds)[0]


def _torchscript_runner(path: Path, input_names: list[str]) -> Runner:
    import torch  # only TorchScript folders need torch

    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return module(*(torch.from_numpy(feeds[name]) for name in input_names)).numpy()

    return run


def _runner(folder: Path, graph: Mapping[str, Any], fmt: str, threads: int) -> Runner:
    """The callable of one graph of an exported folder: ``{input name: array} -> output array``."""
    path = folder / graph["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exported graph missing")
    return _onnx_runner(path, graph["output"], threads) if fmt == "onnx" else _torchscript_runner(path, list(graph["inputs"]))


class ActionQueue:
    """Each robot's queue of planned actions (batched): ``next`` pops one action [B, A] per robot, planning
    ``length`` new ones first for the robots whose queue is used up or whose episode ended."""

    def __init__(self, length: int, dim: int):
        self.length, self.dim = length, dim
        self.planned = np.zeros((0, length, dim), np.float32)  # [B, length, A]
        self.pos = np.zeros(0, np.int64)  # [B] index of the next action; length = plan first

    def end_episodes(self, done: np.ndarray) -> None:
        """done [B] bool: those robots plan at their next step (another B starts every queue afresh)."""
        if self.pos.shape[0] != done.shape[0]:
            self.planned = np.zeros((done.shape[0], self.length, self.dim), np.float32)
            self.pos = np.full(done.shape[0], self.length, np.int64)
        self.pos[done] = self.length

    def next(self, feeds: Mapping[str, np.ndarray], plan: Callable[[dict[str, np.ndarray]], np.ndarray]) -> np.ndarray:
        """This step's action [B, A]; ``plan(feeds of the robots that plan) -> [k, >= length, A]``."""
        n = next(iter(feeds.values())).shape[0]
        if self.pos.shape[0] != n:
            self.end_episodes(np.ones(n, bool))
        replan = np.flatnonzero(self.pos >= self.length)
        if len(replan):
            self.planned[replan] = plan({k: v[replan] for k, v in feeds.items()})[:, : self.length]
            self.pos[replan] = 0
        action = self.planned[np.arange(n), self.pos]
        self.pos += 1
        return action


class Controller:
    """Run an exported policy folder.

    ``ensemble``: None executes ``act_steps`` actions of each chunk before querying again; a number
    k >= 0 queries every step and averages the actions that all stored chunks predict for the current
    step with weights exp(-k * i), i = 0 for the oldest chunk (ACT's convention: k > 0 favours older
    predictions, k = 0 is a plain mean; ACT uses k = 0.01). ``seed`` seeds the noise draws;
    ``threads`` is onnxruntime's intra-op thread count (TorchScript uses torch's global setting).
    """

    def __init__(self, folder: str | Path, ensemble: float | None = None, seed: int | None = None, threads: int = 1):
        folder = Path(folder)
        if folder.is_file():  # a graph file itself
            folder = folder.parent
        meta_path = folder / CONTROLLER_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: no {CONTROLLER_FILE}; not an exported policy folder (make one with `rlft export`)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.folder = folder
        self.kind = self.meta.get("kind", "policy")
        self.obs_spec = {k: (tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in self.meta["observations"].items()}
        self.obs_horizon = int(self.meta["obs_horizon"])
        self.horizon, self.act_steps, self.action_dim = (int(self.meta["action"][k]) for k in ("horizon", "act_steps", "dim"))
        self.steps = int(self.meta["steps"])
        noise = self.meta["noise"]
        self.noise_shape = tuple(noise["shape"]) if noise else None  # None: the graph takes no noise (DSRL)
        self.noise_clip = float(noise["clip"]) if noise else 0.0
        if ensemble is not None and ensemble < 0:
            raise ValueError(f"ensemble weight k must be >= 0 (got {ensemble})")
        residual = self.meta.get("residual")
        if ensemble is not None and residual:
            raise ValueError("a ResiP controller acts every step on its queue of base actions; temporal ensembling does not apply (ensemble=None)")
        self.ensemble = ensemble
        self._run = _runner(folder, self.meta, self.meta["format"], threads)
        self._run_residual = _runner(folder, residual, self.meta["format"], threads) if residual else None
        self.queue_length = int(residual["queue"]) if residual else self.act_steps
        self.rng = np.random.default_rng(seed)
        self.reset()

    # ---- batched ----------------------------------------------------------------------------------
    def draw_noise(self, batch: int) -> np.ndarray:
        """Initial noise N(0, I) [B, *noise shape] float32, clipped at the policy's ``noise_clip`` std where set."""
        if self.noise_shape is None:
            raise ValueError(f"this controller ({self.kind}) takes no noise")
        x = self.rng.standard_normal((batch, *self.noise_shape), dtype=np.float32)
        return np.clip(x, -self.noise_clip, self.noise_clip) if self.noise_clip else x

    def _named(self, obs: Mapping[str, np.ndarray] | np.ndarray) -> Mapping[str, np.ndarray]:
        """A dict with every observation key (a plain array is the single key's)."""
        if not isinstance(obs, Mapping):
            if len(self.obs_spec) != 1:
                raise ValueError(f"this controller takes a dict of observations with keys {', '.join(sorted(self.obs_spec))}")
            obs = {next(iter(self.obs_spec)): obs}
        missing = [k for k in self.obs_spec if k not in obs]
        if missing:
            raise ValueError(f"observation key '{missing[0]}' missing (got {', '.join(sorted(obs))})")
        return obs

    def feeds(self, obs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Observation histories as the graphs take them: ``{key: [B, T, ...]}`` of the exported dtypes
        ([B, ...] is accepted when T = 1); ValueError naming a wrong shape."""
        obs = self._named(obs)
        feeds = {}
        for key, (shape, dtype) in self.obs_spec.items():
            x = np.asarray(obs[key], dtype=dtype)
            if x.shape[1:] == shape and self.obs_horizon == 1:
                x = x[:, None]  # [B, ...] -> [B, 1, ...]
            if x.shape[1:] != (self.obs_horizon, *shape):
                raise ValueError(f"observation '{key}' has shape {x.shape}; expected [B, {self.obs_horizon}, {', '.join(map(str, shape))}]")
            feeds[key] = np.ascontiguousarray(x)
        return feeds

    def plan(self, obs: Mapping[str, np.ndarray] | np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """The ``policy`` graph on observation histories: raw action chunks [B, H, A]; for a ResiP controller the
        base's next normalized actions [B, queue, A] (what :meth:`correct` takes). ``noise`` [B, *noise shape]
        (default: drawn by :meth:`draw_noise`; none for a ``steered`` controller); deterministic given it."""
        feeds = self.feeds(obs)
        if self.noise_shape is None:
            if noise is not None:
                raise ValueError(f"this controller ({self.kind}) takes no noise: its actor chooses the base's noise")
            return self._run(feeds)
        batch = next(iter(feeds.values())).shape[0]
        noise = self.draw_noise(batch) if noise is None else np.asarray(noise, dtype=np.float32)
        if noise.shape != (batch, *self.noise_shape):
            raise ValueError(f"noise has shape {noise.shape}; expected [{batch}, {', '.join(map(str, self.noise_shape))}]")
        return self._run({"noise": np.ascontiguousarray(noise), **feeds})

    def predict(self, obs: Mapping[str, np.ndarray] | np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Raw action chunks [B, H, A] for observation histories ``{key: [B, T, ...]}`` ([B, ...] when T = 1).

        ``noise`` as for :meth:`plan`. A ResiP controller has state (its queue of base actions): use :meth:`act`.
        """
        if self._run_residual is not None:
            raise ValueError("a ResiP controller keeps a queue of base actions across steps: call act() every step (plan() and correct() are its parts)")
        return self.plan(obs, noise)

    def correct(self, obs: Mapping[str, np.ndarray] | np.ndarray, base_action: np.ndarray) -> np.ndarray:
        """ResiP's step: the normalized base action [B, A] (from :meth:`plan`) and this step's observation
        histories -> the raw action to apply [B, 1, A]."""
        if self._run_residual is None:
            raise ValueError(f"this controller ({self.kind}) has no residual")
        return self._run_residual({"base_action": np.ascontiguousarray(base_action, dtype=np.float32), **self.feeds(obs)})

    # ---- one robot, step by step ----------------------------------------------------------------------
    def reset(self) -> None:
        """Start an episode: forget the observation history, the queued actions and the stored chunks."""
        self._history: dict[str, deque[np.ndarray]] = {}
        self._queue = ActionQueue(self.queue_length, self.action_dim)
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (step the chunk starts at, chunk [H, A])
        self._step = 0

    def act(self, obs: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        """The action [A] to apply now, given this step's observation ``{key: per-step array}``.

        The history repeats the episode's first observation until T steps have been seen (as training's
        windows do).
        """
        obs = self._named(obs)
        for key in self.obs_spec:
            if key not in self._history:
                self._history[key] = deque([np.array(obs[key])] * self.obs_horizon, maxlen=self.obs_horizon)
            else:
                self._history[key].append(np.array(obs[key]))  # a copy: robots often refill one buffer in place
        feeds = self.feeds({k: np.stack(h)[None] for k, h in self._history.items()})
        if self.ensemble is not None:
            action = self._ensembled(feeds)
        elif self._run_residual is not None:
            action = self.correct(feeds, self._queue.next(feeds, self.plan))[0, 0]
        else:
            action = self._queue.next(feeds, self.plan)[0]
        self._step += 1
        return action

    def _ensembled(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Query a chunk for this step, drop chunks that end before it, average the rest's predictions."""
        self._chunks.append((self._step, self.plan(feeds)[0]))
        while self._step - self._chunks[0][0] >= self.horizon:
            self._chunks.popleft()
        predictions = np.stack([chunk[self._step - start] for start, chunk in self._chunks])  # oldest first
        weights = np.exp(-self.ensemble * np.arange(len(predictions)))
        return (weights[:, None] * predictions).sum(0) / weights.sum()
