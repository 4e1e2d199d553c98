"""The step loop every gradient-based trainer uses: logging, checkpoints, exact resume, progress, learning curve.

An algorithm supplies ``update(step) -> metrics`` (one optimisation step) and the state to save;
:func:`fit` owns everything around it, so no algorithm re-implements logging or checkpointing.

Stopping: SIGTERM (what schedulers such as SLURM send before a kill) or a first Ctrl-C lets the loop
run to the next logging step, write a checkpoint there and raise :class:`StopRequested`, so
``--resume`` continues exactly; a second Ctrl-C interrupts at once (back to the last checkpoint).
"""

from __future__ import annotations

import math
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence, TextIO

import numpy as np
import torch

from rlft.errors import DivergedError, NonFiniteActionError, StopRequested
from rlft.progress import Progress
from rlft.runtime.plots import LEARNING_CURVE, plot_metrics
from rlft.runtime.run import Run


@contextmanager
def _stop_signals() -> Iterator[dict[str, bool]]:
    """While active, SIGTERM and a first SIGINT set ``flag["stop"]``; a second one raises KeyboardInterrupt.

    Signal handlers can only be set from the main thread; elsewhere the flag never turns on.
    """
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


WATCHED = ("loss", "grad_norm")  # metrics whose non-finite value means the run diverged (others, e.g. explained variance, may be nan)


def _non_finite(modules: Mapping[str, torch.nn.Module]) -> str | None:
    """The first ``<module>.<tensor>`` with a NaN or inf in a floating-point parameter or buffer, else None."""
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return f"{name}.{key}"
    return None


def _last_good(run: Run) -> str:
    found = run.checkpoints()
    where = f"the last good checkpoint, {found[-1].name}, stays resumable" if found else "no checkpoint was written"
    return f"stopped without saving; {where}; to change the learning rate, start a new run.name"


def fit(
    run: Run,
    update: Callable[[int], Mapping[str, float]],
    total_steps: int,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, Any] | None = None,
    generators: dict[str, np.random.Generator] | None = None,
    log_every: int = 100,
    checkpoint_every: int = 1000,
    desc: str = "train",
    plot: Sequence[Sequence[str]] = (),
) -> int:
    """Run ``update`` for steps 1..total_steps, resuming after the newest checkpoint if ``run.resume``.

    ``optimizers`` holds anything with ``state_dict``/``load_state_dict`` (optimizers, LR schedulers).
    Metrics are averaged over each ``log_every`` window and logged at its last step. Returns the
    number of the last step run. On SIGTERM or Ctrl-C: checkpoint at the next logging step, then
    :class:`StopRequested`. A non-finite loss or gradient norm (metrics named in :data:`WATCHED`), a
    non-finite weight at a checkpoint, or NaN actions met by a rollout inside ``update`` raises
    :class:`DivergedError`: no non-finite checkpoint is ever written, and the last good one stays resumable. With ``plot`` (panels of metric keys, see
    :func:`~rlft.runtime.plots.plot_metrics`), every checkpoint also rewrites ``learning_curve.png``.
    Progress (:class:`~rlft.progress.Progress`) is reported at every logging step. Under torchrun
    (``run.world``), every rank steps and checks; only rank 0 logs, checkpoints and plots, and the update's
    metrics should already be the ranks' mean (:meth:`~rlft.runtime.distributed.World.mean`).
    """
    if checkpoint_every % log_every:
        raise ValueError(f"checkpoint_every ({checkpoint_every}) must be a multiple of log_every ({log_every}) for exact resume")
    start = 0
    if run.resume:  # rank 0 first: it moves a damaged checkpoint aside before the others look
        ckpt = run.load_checkpoint(modules, optimizers, generators) if run.world.main else None
        run.world.barrier()
        if not run.world.main:
            ckpt = run.load_checkpoint(modules, optimizers, generators)
        start = ckpt.step if ckpt else 0
    world = run.world
    metrics = run.open_metrics(resume_step=start if run.resume else None) if world.main else None
    window: dict[str, list[float]] = {}
    try:
        with _stop_signals() as stop, _progress_stream(world.main) as stream, Progress(total_steps, desc, initial=start, stream=stream) as progress:
            for step in range(start + 1, total_steps + 1):
                try:
                    result = update(step)
                except NonFiniteActionError as e:  # a rollout inside the update acted with diverged weights
                    raise DivergedError(f"step {step}: {e}; {_last_good(run)}") from None
                for k, v in result.items():
                    if not math.isfinite(float(v)) and any(word in k for word in WATCHED):
                        raise DivergedError(f"step {step}: {k} is {float(v)}; {_last_good(run)}")
                    window.setdefault(k, []).append(float(v))
                progress.advance(1)
                if step % log_every == 0 or step == total_steps:
                    means = {k: float(np.mean(v)) for k, v in window.items()}
                    if metrics is not None:
                        metrics.log(step, means)
                    progress.report(means)
                    window.clear()
                # every rank asks at the same steps: a stop request reaches the ranks at different moments
                stopping = step % log_every == 0 and step < total_steps and world.any(stop["stop"])
                if step % checkpoint_every == 0 or step == total_steps or stopping:
                    bad = _non_finite(modules)
                    if bad:
                        raise DivergedError(f"step {step}: {bad} holds a non-finite value; {_last_good(run)}")
                    if world.main:
                        run.save_checkpoint(step, modules, optimizers, generators)
                        if plot:
                            plot_metrics(run.folder, plot, run.folder / LEARNING_CURVE)
                if stopping:
                    raise StopRequested(f"stopped at step {step} with a checkpoint there; continue with the same command and --resume")
    finally:
        if metrics is not None:
            metrics.close()
    return total_steps


@contextmanager
def _progress_stream(main: bool) -> Iterator[TextIO | None]:
    """Where progress goes: stderr for the writing rank, nowhere for the others."""
    if main:
        yield None
        return
    with open(os.devnull, "w") as devnull:
        yield devnull
