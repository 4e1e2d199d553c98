"""Export a policy's deterministic sampler as an ONNX or TorchScript graph, checked against PyTorch.

What is exported is the policy's ``noise -> action chunk`` map at a fixed number of steps K:
``policy.sample(obs, noise=noise, steps=K, stochastic=False)``: DDIM with eta 0 for diffusion heads,
the Euler ODE for flow, shortcut and mean-flow heads, unrolled K times, with the observation and
action normalizers inside. Stochastic DDPM sampling (eta > 0) is not exported: its per-step noise
would be K more inputs, and a robot controller (and DSRL's and ResiP's frozen bases) wants the
deterministic map. Anything with that ``sample``, a ``head`` with ``time_grid(steps)`` and the Policy's
shape attributes (``obs_shapes``, ``obs_horizon``, ``horizon``, ``act_steps``, ``action_dim``,
``noise_clip``, ``obs_norm``) exports the same way, so combined policies (fine-tuned, DSRL, ResiP) only
provide that function.

Both formats come from tracing at batch 2 with the batch dimension kept symbolic: TorchScript by
``torch.jit.trace`` + ``torch.jit.freeze``, ONNX (opset 18) by torch's TorchScript-based exporter
(``dynamo=False``). That exporter is deprecated upstream in favour of the torch.export-based one, which
exported the policies tried here as exactly and as fast, but took up to 20 s per export instead of
about 1 s; when torch drops the old path, switch to ``dynamo=True`` with ``dynamic_shapes``. The parity
check catches a trace that does not generalise (it runs another batch size than the trace's).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from rlft import __version__
from rlft.errors import ExportError
from rlft.export.controller import CONTROLLER_FILE, Controller
from rlft.io import refuse_overwrite
from rlft.policies.encoders import is_image_shape
from rlft.policies.heads import Diffusion
from rlft.policies.policy import Policy, clipped_normal

FILES = {"onnx": "policy.onnx", "torchscript": "policy.ts"}
PARITY_TOLERANCE = 1e-4


class SamplerGraph(nn.Module):
    """``policy.sample(obs, noise, steps=K)`` with positional tensors: noise [B, H, A], then one raw
    observation history [B, T, ...] per key in ``obs_keys`` order (sorted) -> raw actions [B, H, A]."""

    def __init__(self, policy: Policy, steps: int):
        super().__init__()
        self.policy = policy
        self.steps = steps
        self.obs_keys = sorted(policy.obs_shapes)

    def forward(self, noise: torch.Tensor, *obs: torch.Tensor) -> torch.Tensor:
        return self.policy.sample(dict(zip(self.obs_keys, obs)), noise=noise, steps=self.steps)


def random_inputs(policy: Policy, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Noise [B, H, A] as the policy draws it, and raw observations spread over the data's range
    (state keys: center + scale * N(0, 1) per the policy's normalizer; images: uniform uint8)."""
    noise = clipped_normal((batch, policy.horizon, policy.action_dim), policy.noise_clip, generator)
    obs = {}
    for key, shape in policy.obs_shapes.items():
        full = (batch, policy.obs_horizon, *shape)
        if is_image_shape(shape):
            obs[key] = torch.randint(0, 256, full, generator=generator, dtype=torch.uint8)
        else:
            norm = policy.obs_norm[key]
            obs[key] = norm.center + norm.scale * torch.randn(full, generator=generator)
    return noise, obs


def _write_graph(graph: SamplerGraph, fmt: str, path: Path, example: tuple[torch.Tensor, ...]) -> None:
    names = ["noise", *graph.obs_keys]
    with warnings.catch_warnings():  # tracer warnings about shape checks that hold for every batch size; the exporter's deprecation
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            dynamic_batch = {name: {0: "batch"} for name in [*names, "action"]}
            torch.onnx.export(graph, example, str(path), dynamo=False, input_names=names, output_names=["action"], dynamic_axes=dynamic_batch, opset_version=18)
        else:
            traced = torch.jit.trace(graph, example, check_trace=False)
            torch.jit.freeze(traced).save(str(path))


def parity(policy: Policy, controller: Controller, steps: int, batch: int = 8, seed: int = 0) -> float:
    """Max abs difference between the exported graph and ``policy.sample`` on random observations and noise."""
    noise, obs = random_inputs(policy, batch, torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = policy.sample(obs, noise=noise, steps=steps).numpy()
    got = controller.predict({k: v.numpy() for k, v in obs.items()}, noise.numpy())
    return float(np.abs(got - expected).max())


def export_policy(
    policy: Policy, out: str | Path, fmt: str, steps: int, source: Mapping[str, Any], control_dt: float | None = None, parity_batch: int = 8
) -> dict[str, Any]:
    """Write ``out/`` = the graph + ``controller.json``, atomically; returns the metadata.

    ``source``: where the policy came from (run folder, name, env, its ``policy.json`` meta); it goes
    into the metadata. Raises :class:`ExportError` (nothing written) when the exported graph differs
    from PyTorch by more than ``PARITY_TOLERANCE`` on a batch of ``parity_batch`` random inputs.
    """
    from rlft.io import atomic_write_dir, atomic_write_json

    if fmt not in FILES:
        raise ValueError(f"unknown export format '{fmt}'; choose one of: {', '.join(FILES)}")
    if "noise" in policy.obs_shapes:
        raise ValueError("an observation key named 'noise' would clash with the graph's noise input; rename it")
    policy.head.time_grid(steps)  # refuses step counts the head cannot sample with
    policy = policy.eval()
    graph = SamplerGraph(policy, steps).eval()
    noise, obs = random_inputs(policy, 2, torch.Generator().manual_seed(1))
    head = policy.head
    meta: dict[str, Any] = {
        "format": fmt,
        "file": FILES[fmt],
        "inputs": ["noise", *graph.obs_keys],
        "output": "action",
        "observations": {k: {"shape": list(s), "dtype": "uint8" if is_image_shape(s) else "float32"} for k, s in sorted(policy.obs_shapes.items())},
        "obs_horizon": policy.obs_horizon,
        "noise": {"shape": [policy.horizon, policy.action_dim], "clip": policy.noise_clip},
        "action": {"horizon": policy.horizon, "act_steps": policy.act_steps, "dim": policy.action_dim},
        "control_dt": control_dt,
        "steps": steps,
        "head": type(head).__name__,
        "sampler": "DDIM, eta 0 (deterministic)" if isinstance(head, Diffusion) else "Euler ODE (deterministic)",
        "source": dict(source),
        "rlft_version": __version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def fill(tmp: Path) -> None:
        _write_graph(graph, fmt, tmp / FILES[fmt], (noise, *(obs[k] for k in graph.obs_keys)))
        atomic_write_json(tmp / CONTROLLER_FILE, meta)
        diff = parity(policy, Controller(tmp), steps, batch=parity_batch)
        meta["parity"] = {"max_abs_diff": diff, "tolerance": PARITY_TOLERANCE, "batch": parity_batch}
        if not diff <= PARITY_TOLERANCE:  # also catches NaN
            raise ExportError(f"exported {fmt} graph differs from PyTorch by {diff:.3g} (> {PARITY_TOLERANCE:g}) on random inputs; nothing written")
        atomic_write_json(tmp / CONTROLLER_FILE, meta)

    atomic_write_dir(out, fill)
    return meta


def control_dt(env_name: str | None) -> float | None:
    """Seconds per env step (one action) of a gymnasium task, None when unknown (Hopper-v5: 0.008)."""
    if not env_name:
        return None
    import gymnasium as gym

    from rlft.envs.registry import env_id

    env = gym.make(env_id(env_name))
    try:
        return float(env.unwrapped.dt) if hasattr(env.unwrapped, "dt") else None
    finally:
        env.close()


class ExportedPolicy:
    """An exported folder as an :class:`~rlft.policies.acting.ActingPolicy` (what ``rlft eval`` runs).

    ``sample`` draws the initial noise from the torch ``generator`` exactly as :meth:`Policy.initial_noise`
    does, so with the same seed it feeds the exported graph the noise that the PyTorch policy's
    deterministic sampler gets; the graph's step count is fixed.
    """

    def __init__(self, folder: str | Path, threads: int = 1):
        self.controller = Controller(folder, threads=threads)
        self.obs_horizon, self.act_steps, self.steps = self.controller.obs_horizon, self.controller.act_steps, self.controller.steps
        self.default_steps, self.default_stochastic, self.device = self.steps, False, torch.device("cpu")

    def end_episodes(self, done: torch.Tensor) -> None:
        """No memory across chunks."""

    def sample(
        self, obs: Mapping[str, torch.Tensor] | torch.Tensor, steps: int | None = None, stochastic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Raw action chunks [B, H, A] from the exported graph."""
        if steps not in (None, self.steps):
            raise ValueError(f"this controller was exported with {self.steps} sampling steps (got steps={steps}); export again with steps={steps}")
        if stochastic:
            raise ValueError("exported controllers sample deterministically (DDIM eta 0 / the flow ODE)")
        obs_np = {k: v.cpu().numpy() for k, v in obs.items()} if isinstance(obs, Mapping) else obs.cpu().numpy()
        batch = next(iter(obs.values())).shape[0] if isinstance(obs, Mapping) else obs.shape[0]
        c = self.controller
        noise = clipped_normal((batch, c.horizon, c.action_dim), c.noise_clip, generator)
        return torch.from_numpy(c.predict(obs_np, noise.numpy()))


def default_out(folder: Path, fmt: str, steps: int) -> Path:
    """``<run>/export/<format>-<K>steps``; for a policy shipped with rlft ``exports/<name>/<format>-<K>steps``
    (the package's assets stay untouched)."""
    from rlft.runtime.checkpoint import is_shipped

    base = Path("exports") / folder.name if is_shipped(folder) else folder / "export"
    return base / f"{fmt}-{steps}steps"


def export_run(cfg: Any) -> dict[str, Any]:
    """``rlft export``: the policy of ``cfg.run`` (run folder, policy folder or shipped name) -> exported folder."""
    from rlft.algos.registry import run_algo
    from rlft.errors import ConfigError
    from rlft.runtime.checkpoint import load_policy, read_spec, resolve_policy

    if not cfg.run:
        raise ConfigError("export needs the policy: rlft export run=runs/<name> (or a shipped policy's name) format=onnx steps=<K>")
    if cfg.format not in FILES:
        raise ConfigError(f"format={cfg.format}: choose one of: {', '.join(FILES)}")
    if cfg.weights not in ("auto", "ema", "policy"):
        raise ConfigError(f"weights={cfg.weights}: choose auto, ema or policy")
    folder = resolve_policy(cfg.run)
    algo = run_algo(folder)
    if algo.steers:
        raise ExportError(f"{folder}: a {algo.name} run steers a frozen base policy; rlft export handles plain policies only (evaluate it with rlft eval)")
    spec_meta = read_spec(folder).get("meta", {})
    policy = load_policy(folder, weights=cfg.weights, checkpoint=Path(cfg.checkpoint) if cfg.checkpoint else None)
    steps = int(cfg.steps or policy.head.steps)
    try:
        policy.head.time_grid(steps)
    except ValueError as e:
        raise ConfigError(f"steps={steps}: {e}") from None
    out = Path(cfg.out) if cfg.out else default_out(folder, cfg.format, steps)
    refuse_overwrite(out, cfg.force, "force=true")
    source = {"run": str(folder), "name": folder.name, "env": spec_meta.get("env"), "weights": cfg.weights, "checkpoint": cfg.checkpoint, "meta": spec_meta}
    meta = export_policy(policy, out, cfg.format, steps, source, control_dt=control_dt(spec_meta.get("env")), parity_batch=cfg.parity_batch)
    return {"out": str(out), "format": cfg.format, "steps": steps, "parity_max_abs_diff": meta["parity"]["max_abs_diff"], "control_dt": meta["control_dt"]}


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` is an exported controller folder or the graph file in one."""
    path = Path(path)
    return (path.parent if path.is_file() else path).joinpath(CONTROLLER_FILE).is_file()
