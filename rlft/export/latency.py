"""``rlft bench latency``: per-chunk latency of a policy at batch 1 in PyTorch eager, TorchScript and ONNX Runtime.

What the run acts with is exported to both formats in a temporary folder (with the parity check), then the
three runtimes are timed in turn in ``BLOCKS`` blocks of consecutive calls each (so a change of machine load
hits all of them alike, while each block runs with its own weights in the cache, as a robot's
controller does; ``cfg.warmup`` untimed calls start every block). Each call maps one observation and one
noise draw (none for DSRL) to one raw action chunk with K steps; ResiP runs, which act per step on a
queue, are refused:

* ``torch``: the exported forward in PyTorch (a policy's ``policy.sample(obs, noise=noise, steps=K)``;
  an offline run's candidates and pick; DSRL's actor and base) under ``torch.inference_mode`` (tensors in);
* ``torchscript`` and ``onnxruntime``: :meth:`Controller.predict` (numpy in and out, what a robot calls),
  onnxruntime with the session options of :func:`rlft.export.controller.onnx_session_options`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import torch
from omegaconf import DictConfig

from rlft.algos.registry import LoadOptions
from rlft.errors import ConfigError
from rlft.export.controller import Controller
from rlft.export.exporter import GraphModule, export_policy, graph_inputs, load_exportable

RUNTIMES = ("torch", "torchscript", "onnxruntime")
BLOCKS = 10


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"median": round(float(np.median(ms)), 4), "p99": round(float(np.percentile(ms, 99)), 4)}


def bench_latency(cfg: DictConfig) -> dict[str, Any]:
    """Median and p99 milliseconds per chunk for each runtime over ``cfg.repeats`` timed calls."""
    if not cfg.run:
        raise ConfigError("bench latency needs the policy: rlft bench latency run=runs/<name> (or a shipped policy's name)")
    if cfg.repeats < 1 or cfg.warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got repeats={cfg.repeats}, warmup={cfg.warmup}")
    load_before = os.getloadavg()[0]
    folder, acting, steps = load_exportable(cfg.run, cfg.steps, LoadOptions(select_candidates=cfg.select.candidates, select_rule=cfg.select.rule))
    spec = acting.export_spec(steps)
    if spec.residual is not None:
        raise ConfigError(
            f"{folder} is a resip run: its controller plans base actions every {spec.queue} steps and runs the residual every step; "
            "bench latency times one chunk per call"
        )
    module = GraphModule(acting, spec.chunk, sorted(spec.policy.obs_shapes))
    inputs = graph_inputs(spec, spec.chunk, 1, torch.Generator().manual_seed(cfg.seed))
    args = tuple(inputs[k] for k in module.input_names)
    obs_np, noise_np = {k: inputs[k].numpy() for k in module.obs_keys}, inputs["noise"].numpy() if spec.noise_shape else None
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        controllers = {}
        for fmt, runtime in (("torchscript", "torchscript"), ("onnx", "onnxruntime")):
            export_policy(acting, Path(tmp) / fmt, fmt, steps, {"run": str(folder)})
            controllers[runtime] = Controller(Path(tmp) / fmt, threads=cfg.threads)
        calls: dict[str, Callable[[], Any]] = {
            "torch": lambda: module(*args),
            "torchscript": lambda: controllers["torchscript"].predict(obs_np, noise_np),
            "onnxruntime": lambda: controllers["onnxruntime"].predict(obs_np, noise_np),
        }
        times: dict[str, list[float]] = {name: [] for name in RUNTIMES}
        for block in range(BLOCKS):
            timed = cfg.repeats * (block + 1) // BLOCKS - cfg.repeats * block // BLOCKS
            for name in RUNTIMES:
                for i in range(cfg.warmup + timed):
                    start = time.perf_counter()
                    calls[name]()
                    if i >= cfg.warmup:
                        times[name].append(time.perf_counter() - start)
    return {
        "policy": str(folder),
        "steps": steps,
        "batch": 1,
        "repeats": cfg.repeats,
        "latency_ms": {name: _percentiles(times[name]) for name in RUNTIMES},
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": f"{ort.__version__}, CPU, {cfg.threads} intra-op thread(s), 1 inter-op, sequential, all graph optimisations",
        "load_1min": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
    }


def summary_lines(result: dict[str, Any]) -> str:
    """The table for people: one line per runtime."""
    lines = [f"{result['policy']}: {result['steps']} steps, batch 1, {result['repeats']} calls each; load {result['load_1min']} -> {result['load_1min_after']}"]
    for name, r in result["latency_ms"].items():
        lines.append(f"  {name:<12} median {r['median']:8.3f} ms   p99 {r['p99']:8.3f} ms")
    return "\n".join(lines)
