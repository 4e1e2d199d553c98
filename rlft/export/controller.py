"""The robot-side controller of an exported policy folder: numpy in, numpy out.

This module imports only numpy, json, onnxruntime and the standard library (TorchScript folders import
torch when they are opened), so it runs on a robot without torch or rlft's training code; copy it
next to the exported folder if rlft is not installed there.

An exported folder holds the graph (``policy.onnx`` or ``policy.ts``) and ``controller.json``. The
graph maps raw observations and the initial noise to a raw action chunk, deterministically:
``(noise [B, H, A], obs [B, T, ...] per key) -> action [B, H, A]``. Normalization, the sampler's K
steps (DDIM eta 0 or the flow ODE) and action clipping are inside it.

* :meth:`Controller.predict` batched chunks for a batch of observation histories (draws the noise
  unless given);
* :meth:`Controller.act` one control step of one robot: keeps the observation history, executes
  ``act_steps`` actions of each chunk from a queue, or with ``ensemble=k`` queries every step and
  averages all chunks that cover the current step (ACT's temporal ensembling).
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


def _onnx_runner(path: Path, threads: int) -> Runner:
    session = ort.InferenceSession(str(path), onnx_session_options(threads), providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(["action"], feeds)[0]


def _torchscript_runner(path: Path, input_names: list[str]) -> Runner:
    import torch  # only TorchScript folders need torch

    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return module(*(torch.from_numpy(feeds[name]) for name in input_names)).numpy()

    return run


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
        if folder.is_file():  # the graph file itself
            folder = folder.parent
        meta_path = folder / CONTROLLER_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: no {CONTROLLER_FILE}; not an exported policy folder (make one with `rlft export`)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.folder = folder
        self.obs_spec = {k: (tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in self.meta["observations"].items()}
        self.obs_horizon = int(self.meta["obs_horizon"])
        self.horizon, self.act_steps, self.action_dim = (int(self.meta["action"][k]) for k in ("horizon", "act_steps", "dim"))
        self.steps = int(self.meta["steps"])
        self.noise_clip = float(self.meta["noise"]["clip"])
        if ensemble is not None and ensemble < 0:
            raise ValueError(f"ensemble weight k must be >= 0 (got {ensemble})")
        self.ensemble = ensemble
        graph = folder / self.meta["file"]
        if not graph.is_file():
            raise FileNotFoundError(f"{graph}: exported graph missing")
        self._run = _onnx_runner(graph, threads) if self.meta["format"] == "onnx" else _torchscript_runner(graph, self.meta["inputs"])
        self.rng = np.random.default_rng(seed)
        self.reset()

    # ---- batched ----------------------------------------------------------------------------------
    def draw_noise(self, batch: int) -> np.ndarray:
        """Initial noise N(0, I) [B, H, A] float32, clipped at the policy's ``noise_clip`` std where set."""
        x = self.rng.standard_normal((batch, self.horizon, self.action_dim), dtype=np.float32)
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

    def _as_batch(self, obs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
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

    def predict(self, obs: Mapping[str, np.ndarray] | np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Raw action chunks [B, H, A] for observation histories ``{key: [B, T, ...]}`` ([B, ...] when T = 1).

        ``noise`` [B, H, A] (default: drawn by :meth:`draw_noise`); the result is a deterministic function of it.
        """
        feeds = self._as_batch(obs)
        batch = next(iter(feeds.values())).shape[0]
        noise = self.draw_noise(batch) if noise is None else np.asarray(noise, dtype=np.float32)
        if noise.shape != (batch, self.horizon, self.action_dim):
            raise ValueError(f"noise has shape {noise.shape}; expected [{batch}, {self.horizon}, {self.action_dim}]")
        return self._run({"noise": np.ascontiguousarray(noise), **feeds})

    # ---- one robot, step by step ----------------------------------------------------------------------
    def reset(self) -> None:
        """Start an episode: forget the observation history, the queued actions and the stored chunks."""
        self._history: dict[str, deque[np.ndarray]] = {}
        self._queue: deque[np.ndarray] = deque()
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
        if self.ensemble is None:
            if not self._queue:
                self._queue.extend(self._predict_one()[: self.act_steps])
            action = self._queue.popleft()
        else:
            action = self._ensembled()
        self._step += 1
        return action

    def _predict_one(self) -> np.ndarray:
        return self.predict({k: np.stack(h)[None] for k, h in self._history.items()})[0]

    def _ensembled(self) -> np.ndarray:
        """Query a chunk for this step, drop chunks that end before it, average the rest's predictions."""
        self._chunks.append((self._step, self._predict_one()))
        while self._step - self._chunks[0][0] >= self.horizon:
            self._chunks.popleft()
        predictions = np.stack([chunk[self._step - start] for start, chunk in self._chunks])  # oldest first
        weights = np.exp(-self.ensemble * np.arange(len(predictions)))
        return (weights[:, None] * predictions).sum(0) / weights.sum()
