"""Export an acting policy's deterministic forward as ONNX or TorchScript graphs, checked against PyTorch.

The exporter asks the acting policy what to export (``export_spec(steps)``, an
:class:`~rlft.policies.acting.ExportSpec`): a traceable, deterministic ``(noise, raw observations) -> raw
action chunk`` at a fixed number of sampling steps K, with the observation and action normalizers inside:

* a generative :class:`~rlft.policies.policy.Policy` (pretrained, DPPO, ReinFlow):
  ``policy.sample(obs, noise=noise, steps=K, stochastic=False)``, DDIM with eta 0 for diffusion heads, the
  Euler ODE for flow, shortcut and mean-flow heads, unrolled K times;
* an offline run's Q selection (DQL, OFQL, IQL with candidates, FISOR): the N candidates from N noise
  draws and the critic's argmax (FISOR: least Q_h) in one graph; a softmax pick is refused;
* DSRL / DSRL-NA: the noise actor's mean and the frozen base in one graph, observations only;
* ResiP: the base's plan for the controller's queue and the per-step residual, two graphs (the queue,
  reset per episode, is the controller's).

Stochastic DDPM sampling (eta > 0) is not exported: its per-step noise would be K more inputs, and a robot
controller wants the deterministic map.

Every graph is traced at batch 2 with the batch dimension kept symbolic: TorchScript by
``torch.jit.trace`` + ``torch.jit.freeze``, ONNX (opset 18) by torch's TorchScript-based exporter
(``dynamo=False``). That exporter is deprecated upstream in favour of the torch.export-based one, which
exported the policies tried here as exactly and as fast, but took up to 20 s per export instead of
about 1 s; when torch drops the old path, switch to ``dynamo=True`` with ``dynamic_shapes``. The parity
check runs every written graph and its PyTorch forward on random inputs of another batch size than the
trace's, so it also catches a trace that does not generalise.
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
from rlft.export.controller import CONTROLLER_FILE, ActionQueue, Controller
from rlft.io import refuse_overwrite
from rlft.policies.acting import ExportSpec, Graph
from rlft.policies.encoders import is_image_shape
from rlft.policies.heads import Diffusion
from rlft.policies.policy import Policy, clipped_normal

EXTENSIONS = {"onnx": "onnx", "torchscript": "ts"}
FORMATS = tuple(EXTENSIONS)
PARITY_TOLERANCE = 1e-4


class GraphModule(nn.Module):
    """A :class:`~rlft.policies.acting.Graph` of ``owner`` with positional tensors, as tracing wants them: the
    graph's own inputs in order, then one raw observation history [B, T, ...] per key in ``obs_keys`` order."""

    def __init__(self, owner: nn.Module, graph: Graph, obs_keys: list[str]):
        super().__init__()
        self.owner, self.graph, self.obs_keys = owner, graph, obs_keys
        self.input_names = [*graph.inputs, *obs_keys]

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        n = len(self.graph.inputs)
        return self.graph.fn(*tensors[:n], dict(zip(self.obs_keys, tensors[n:])))


def random_inputs(
    policy: Policy, batch: int, generator: torch.Generator, noise_shape: tuple[int, ...] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Noise [B, *noise_shape] (default: the policy's [H, A]) drawn as the policy draws it, and raw observations
    spread over the data's range (state keys: center + scale * N(0, 1) per the policy's normalizer; images: uniform uint8)."""
    noise = clipped_normal((batch, *(noise_shape or (policy.horizon, policy.action_dim))), policy.noise_clip, generator)
    obs = {}
    for key, shape in policy.obs_shapes.items():
        full = (batch, policy.obs_horizon, *shape)
        if is_image_shape(shape):
            obs[key] = torch.randint(0, 256, full, generator=generator, dtype=torch.uint8)
        else:
            norm = policy.obs_norm[key]
            obs[key] = norm.center + norm.scale * torch.randn(full, generator=generator)
    return noise, obs


def graph_inputs(spec: ExportSpec, graph: Graph, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random inputs of one graph by name: its noise (as drawn at acting time), normalized base actions
    (uniform in [-1, 1]) and observations."""
    noise, obs = random_inputs(spec.policy, batch, generator, spec.noise_shape)
    extra = {"noise": noise, "base_action": 2 * torch.rand(batch, spec.policy.action_dim, generator=generator) - 1}
    return {name: extra[name] for name in graph.inputs} | obs


def _write_graph(module: GraphModule, fmt: str, path: Path, example: tuple[torch.Tensor, ...]) -> None:
    names = module.input_names
    with warnings.catch_warnings():  # tracer warnings about shape checks that hold for every batch size; the exporter's deprecation
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            output = module.graph.output
            dynamic_batch = {name: {0: "batch"} for name in [*names, output]}
            torch.onnx.export(module, example, str(path), dynamo=False, input_names=names, output_names=[output], dynamic_axes=dynamic_batch, opset_version=18)
        else:
            traced = torch.jit.trace(module, example, check_trace=False)
            torch.jit.freeze(traced).save(str(path))


def parity(modules: Mapping[str, GraphModule], spec: ExportSpec, controller: Controller, batch: int = 8, seed: int = 0) -> float:
    """Max abs difference between every exported graph (run by ``controller``) and its PyTorch forward on random inputs."""
    generator = torch.Generator().manual_seed(seed)
    diff = 0.0
    for name, module in modules.items():
        inputs = graph_inputs(spec, module.graph, batch, generator)
        with torch.inference_mode():
            expected = module(*(inputs[k] for k in module.input_names)).numpy()
        obs = {k: inputs[k].numpy() for k in module.obs_keys}
        if name == "residual":
            got = controller.correct(obs, inputs["base_action"].numpy())
        else:
            got = controller.plan(obs, inputs["noise"].numpy() if spec.noise_shape else None)
        diff = max(diff, float(np.abs(got - expected).max()))
    return diff


def export_policy(
    acting: nn.Module, out: str | Path, fmt: str, steps: int, source: Mapping[str, Any], control_dt: float | None = None, parity_batch: int = 8
) -> dict[str, Any]:
    """Write ``out/`` = the graph(s) of ``acting.export_spec(steps)`` + ``controller.json``, atomically; returns the metadata.

    ``acting``: any acting policy with ``export_spec`` (a Policy, an offline run's Q selection, DSRL's steered
    policy, ResiP's base + residual). ``source``: where it came from (run folder, name, env, its
    ``policy.json`` meta); it goes into the metadata. Raises :class:`ExportError` (nothing written) when an
    exported graph differs from PyTorch by more than ``PARITY_TOLERANCE`` on a batch of ``parity_batch`` random inputs.
    """
    from rlft.io import atomic_write_dir, atomic_write_json

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    acting = acting.eval()
    spec = acting.export_spec(steps)
    policy = spec.policy
    obs_keys = sorted(policy.obs_shapes)
    graphs = {"policy": spec.chunk} | ({"residual": spec.residual} if spec.residual else {})
    clash = sorted({name for g in graphs.values() for name in g.inputs} & set(obs_keys))
    if clash:
        raise ValueError(f"an observation key named '{clash[0]}' would clash with the graph's input of that name; rename it")
    modules = {name: GraphModule(acting, graph, obs_keys).eval() for name, graph in graphs.items()}
    files = {name: f"{name}.{EXTENSIONS[fmt]}" for name in modules}
    head = policy.head
    meta: dict[str, Any] = {
        "format": fmt,
        "kind": spec.kind,
        "file": files["policy"],
        "inputs": modules["policy"].input_names,
        "output": spec.chunk.output,
        "observations": {k: {"shape": list(s), "dtype": "uint8" if is_image_shape(s) else "float32"} for k, s in sorted(policy.obs_shapes.items())},
        "obs_horizon": policy.obs_horizon,
        "noise": {"shape": list(spec.noise_shape), "clip": policy.noise_clip} if spec.noise_shape else None,
        "action": {"horizon": spec.horizon, "act_steps": spec.act_steps, "dim": policy.action_dim},
        "control_dt": control_dt,
        "steps": steps,
        "head": type(head).__name__,
        "sampler": "DDIM, eta 0 (deterministic)" if isinstance(head, Diffusion) else "Euler ODE (deterministic)",
        **spec.meta,
    }
    if spec.residual is not None:
        meta["residual"] = {"file": files["residual"], "inputs": modules["residual"].input_names, "output": spec.residual.output, "queue": spec.queue}
    meta |= {
        "source": dict(source),
        "rlft_version": __version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def fill(tmp: Path) -> None:
        generator = torch.Generator().manual_seed(1)
        for name, module in modules.items():
            example = graph_inputs(spec, module.graph, 2, generator)
            _write_graph(module, fmt, tmp / files[name], tuple(example[k] for k in module.input_names))
        atomic_write_json(tmp / CONTROLLER_FILE, meta)
        diff = parity(modules, spec, Controller(tmp), batch=parity_batch)
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

    ``sample`` draws the initial noise from the torch ``generator`` exactly as the PyTorch policy does
    (:meth:`Policy.initial_noise`; one draw per candidate, row by row, for a Q selection; for the ResiP queue's
    sub-envs that plan, in order), so with the same seed the exported graphs get the noise that the PyTorch
    policy's deterministic sampler gets; the graphs' step count is fixed. A ResiP folder keeps the queue of
    base actions per sub-env (:class:`~rlft.export.controller.ActionQueue`), as the PyTorch policy does.
    """

    def __init__(self, folder: str | Path, threads: int = 1):
        self.controller = c = Controller(folder, threads=threads)
        self.obs_horizon, self.act_steps, self.steps = c.obs_horizon, c.act_steps, c.steps
        self.default_steps, self.default_stochastic, self.device = self.steps, False, torch.device("cpu")
        self.queue = ActionQueue(c.queue_length, c.action_dim) if c.kind == "residual" else None

    def end_episodes(self, done: torch.Tensor) -> None:
        """ResiP: those sub-envs plan anew at their next step; the other kinds keep no memory across chunks."""
        if self.queue is not None:
            self.queue.end_episodes(done.cpu().numpy())

    def sample(
        self, obs: Mapping[str, torch.Tensor] | torch.Tensor, steps: int | None = None, stochastic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Raw action chunks [B, H, A] from the exported graphs."""
        if steps not in (None, self.steps):
            raise ValueError(f"this controller was exported with {self.steps} sampling steps (got steps={steps}); export again with steps={steps}")
        if stochastic:
            raise ValueError("exported controllers sample deterministically (DDIM eta 0 / the flow ODE)")
        c = self.controller
        feeds = c.feeds({k: v.cpu().numpy() for k, v in obs.items()} if isinstance(obs, Mapping) else obs.cpu().numpy())

        def plan(feeds: dict[str, np.ndarray]) -> np.ndarray:
            batch = next(iter(feeds.values())).shape[0]
            return c.plan(feeds, None if c.noise_shape is None else clipped_normal((batch, *c.noise_shape), c.noise_clip, generator).numpy())

        if self.queue is not None:
            return torch.from_numpy(c.correct(feeds, self.queue.next(feeds, plan)))
        return torch.from_numpy(plan(feeds))


def default_out(folder: Path, fmt: str, steps: int) -> Path:
    """``<run>/export/<format>-<K>steps``; for a policy shipped with rlft ``exports/<name>/<format>-<K>steps``
    (the package's assets stay untouched)."""
    from rlft.runtime.checkpoint import is_shipped

    base = Path("exports") / folder.name if is_shipped(folder) else folder / "export"
    return base / f"{fmt}-{steps}steps"


def load_exportable(run: str, steps: int | None, options: Any, checkpoint: str | None = None) -> tuple[Path, nn.Module, int]:
    """(folder, what the run acts with, the step count K to export it at: ``steps`` or its own) for ``rlft
    export`` and ``rlft bench latency``; ConfigError (one line) for a K or a Q selection that cannot be exported."""
    from rlft.algos.registry import load_acting_policy
    from rlft.errors import ConfigError
    from rlft.runtime.checkpoint import resolve_policy

    folder = resolve_policy(run)
    acting = load_acting_policy(folder, Path(checkpoint) if checkpoint else None, options).eval()
    steps = int(steps or acting.default_steps)
    try:
        acting.export_spec(steps)
    except ConfigError:
        raise
    except ValueError as e:  # a step count the head cannot sample with
        raise ConfigError(f"steps={steps}: {e}") from None
    return folder, acting, steps


def export_run(cfg: Any) -> dict[str, Any]:
    """``rlft export``: what the run in ``cfg.run`` (run folder, policy folder or shipped name) acts with -> exported folder."""
    from rlft.algos.registry import LoadOptions
    from rlft.errors import ConfigError
    from rlft.runtime.checkpoint import read_spec

    if not cfg.run:
        raise ConfigError("export needs the policy: rlft export run=runs/<name> (or a shipped policy's name) format=onnx steps=<K>")
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format}: choose one of: {', '.join(FORMATS)}")
    if cfg.weights not in ("auto", "ema", "policy"):
        raise ConfigError(f"weights={cfg.weights}: choose auto, ema or policy")
    folder, acting, steps = load_exportable(cfg.run, cfg.steps, LoadOptions(cfg.weights, cfg.select.candidates, cfg.select.rule), cfg.checkpoint)
    out = Path(cfg.out) if cfg.out else default_out(folder, cfg.format, steps)
    refuse_overwrite(out, cfg.force, "force=true")
    spec_meta = read_spec(folder).get("meta", {})
    source = {"run": str(folder), "name": folder.name, "env": spec_meta.get("env"), "weights": cfg.weights, "checkpoint": cfg.checkpoint, "meta": spec_meta}
    meta = export_policy(acting, out, cfg.format, steps, source, control_dt=control_dt(spec_meta.get("env")), parity_batch=cfg.parity_batch)
    result = {"out": str(out), "format": cfg.format, "kind": meta["kind"], "steps": steps, "parity_max_abs_diff": meta["parity"]["max_abs_diff"]}
    return result | {"control_dt": meta["control_dt"]}


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` is an exported controller folder or a graph file in one."""
    path = Path(path)
    return (path.parent if path.is_file() else path).joinpath(CONTROLLER_FILE).is_file()
