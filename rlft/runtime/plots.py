"""Plots from run folders' metrics.jsonl (matplotlib, no display needed).

* :func:`plot_metrics`: one run's ``learning_curve.png``, which :func:`rlft.runtime.trainer.fit` rewrites at
  every checkpoint;
* :func:`plot_runs`: ``rlft plot``, one metric of several runs on one figure, seeds of one setting averaged.

Seeds: runs whose folder names are equal once a trailing seed suffix is removed (:data:`SEED_SUFFIX`: ``-`` or
``_``, then ``s`` or ``seed`` or nothing, then digits; ``hopper-s0``, ``hopper_seed1`` and ``hopper-2`` are all
seeds of ``hopper``) are one setting: their mean is drawn as a line and their min-max range as a band, over the
x values any of them logged within the range all of them cover (linear interpolation between logged points).
A run that shares its name with no other is drawn as it is, under its full name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rlft.errors import CheckpointError, ConfigError
from rlft.io import atomic_write
from rlft.runtime.run import read_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LEARNING_CURVE = "learning_curve.png"
SEED_SUFFIX = re.compile(r"[-_](?:seed|s)?\d+$")
RETURNS = ("eval/return_mean", "expert/eval_return", "train/return_mean")  # rlft plot's default metric: the first a run logs
X_KEYS = ("step", "env_steps", "time_s")
X_LABELS = {"step": "iteration / step", "env_steps": "env steps", "time_s": "wall time (s)"}
FORMATS = (".png", ".pdf", ".svg")


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def points(rows: Sequence[dict[str, float]], x: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, value) arrays of the rows that logged both ``x`` and ``key``."""
    pts = [(r[x], r[key]) for r in rows if key in r and x in r]
    return np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)


def _save(fig: "Figure", out: str | Path) -> Path:
    fmt = Path(out).suffix.lstrip(".") or "png"
    path = atomic_write(out, lambda tmp: fig.savefig(tmp, format=fmt, dpi=100))
    _pyplot().close(fig)
    return path


def plot_metrics(run_folder: str | Path, panels: Sequence[Sequence[str]], out: str | Path) -> Path | None:
    """A grid: a row per panel (its logged keys overlaid), a column per x axis logged (step, env steps, wall time).

    Panels none of whose keys were logged are left out; None (nothing written) if no key was logged.
    """
    rows = read_metrics(run_folder)
    present = [[k for k in keys if any(k in r for r in rows)] for keys in panels]
    present = [keys for keys in present if keys]
    if not present:
        return None
    x_keys = [x for x in X_KEYS if any(x in r for r in rows)]
    width, height = 5.0 * len(x_keys), 0.45 + 2.8 * len(present)
    fig, axes = _pyplot().subplots(len(present), len(x_keys), figsize=(width, height), squeeze=False)
    for row, keys in zip(axes, present):
        for ax, x in zip(row, x_keys):
            for key in keys:
                xs, ys = points(rows, x, key)
                ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=key)
            ax.set_xlabel(X_LABELS[x])
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    fig.suptitle(Path(run_folder).name, fontsize=10)
    # fixed margins in inches: tight_layout would draw the figure an extra time, at every checkpoint
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.5 / height, wspace=0.3, hspace=0.5)
    return _save(fig, out)


# ---- rlft plot: several runs on one figure ----------------------------------------------------------------
@dataclass
class Curve:
    """One line of :func:`plot_runs`: a run, or the seeds of one setting (mean, min and max over them)."""

    label: str
    runs: list[Path]
    metric: str
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def seed_group(name: str) -> str:
    """The setting a run's name belongs to: the name without a trailing seed suffix (:data:`SEED_SUFFIX`)."""
    return SEED_SUFFIX.sub("", name) or name


def group_runs(folders: Sequence[Path]) -> list[tuple[str, list[Path]]]:
    """(label, runs) in the order first given: runs sharing a :func:`seed_group` together, others alone."""
    groups: dict[str, list[Path]] = {}
    for folder in folders:
        groups.setdefault(seed_group(folder.name), []).append(folder)
    return [(name if len(runs) > 1 else runs[0].name, runs) for name, runs in groups.items()]


def _sorted(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(xs, kind="stable")
    return xs[order], ys[order]


def _logged(rows: Sequence[dict[str, float]]) -> list[str]:
    return sorted({k for r in rows for k in r} - {"step"})


def _require(folders: Sequence[Path], logs: dict[Path, list[dict[str, float]]], key: str, flag: str) -> None:
    """One line unless each of ``folders`` logs ``key`` (``flag``: the option that named it)."""
    lacking = [f for f in folders if not any(key in r for r in logs[f])]
    if len(lacking) == len(folders) > 1:
        union = sorted({k for f in folders for k in _logged(logs[f])})
        raise ConfigError(f"{flag} {key}: none of the runs logs it; they log: {', '.join(union)}")
    if lacking:
        raise ConfigError(f"{flag} {key}: {lacking[0]} does not log it; it logs: {', '.join(_logged(logs[lacking[0]]))}")


def _default_metric(folders: Sequence[Path], logs: dict[Path, list[dict[str, float]]]) -> str:
    """The first of :data:`RETURNS` that each of ``folders`` logs; else one line listing what they log."""
    for key in RETURNS:
        if all(any(key in r for r in logs[f]) for f in folders):
            return key
    bare = next((f for f in folders if not any(k in r for r in logs[f] for k in RETURNS)), None)
    if bare is None:
        raise ConfigError(f"{', '.join(str(f) for f in folders)} log no return in common ({', '.join(RETURNS)}); choose a metric with --metric")
    raise ConfigError(f"{bare} logs no return ({', '.join(RETURNS)}); choose a metric with --metric: {', '.join(_logged(logs[bare]))}")


def run_curves(folders: Sequence[str | Path], metric: str | None = None, x: str = "step") -> list[Curve]:
    """The curves of ``rlft plot``: one per setting (see the module docstring), of ``metric`` against ``x``.

    ``metric`` None: each setting's return (the first of :data:`RETURNS` its runs log). A folder without
    metrics.jsonl is a :class:`CheckpointError`; a metric or x axis that a run does not log a :class:`ConfigError`.
    """
    paths = [Path(f) for f in folders]
    for p in paths:
        if not (p / "metrics.jsonl").is_file():
            raise CheckpointError(f"{p}: no such run folder" if not p.is_dir() else f"{p} holds no metrics.jsonl; is it a run folder?")
    logs = {p: read_metrics(p) for p in paths}
    for p, rows in logs.items():
        if not rows:
            raise CheckpointError(f"{p} has logged no metrics yet")
    if metric is not None:
        _require(paths, logs, metric, "--metric")
    _require(paths, logs, x, "--x")
    curves = []
    for label, runs in group_runs(paths):
        key = metric or _default_metric(runs, logs)
        series = [_sorted(*points(logs[r], x, key)) for r in runs]
        lo, hi = max(xs.min() for xs, _ in series), min(xs.max() for xs, _ in series)
        grid = np.unique(np.concatenate([xs[(xs >= lo) & (xs <= hi)] for xs, _ in series]))
        if not grid.size:
            raise ConfigError(f"the runs {', '.join(r.name for r in runs)} (seeds of {label}) logged {key} over no common range of {x}; rename one")
        values = np.stack([np.interp(grid, xs, ys) for xs, ys in series])
        curves.append(Curve(label, runs, key, grid, values.mean(0), values.min(0), values.max(0)))
    return curves


def curves_figure(curves: Sequence[Curve], x: str = "step") -> "Figure":
    """One axes: each curve's mean as a line, and for several seeds their min-max range as a band."""
    fig, ax = _pyplot().subplots(figsize=(7, 4.2))
    metrics = sorted({c.metric for c in curves})
    for c in curves:
        label = c.label + (f" ({len(c.runs)} seeds)" if len(c.runs) > 1 else "") + (f" [{c.metric}]" if len(metrics) > 1 else "")
        (line,) = ax.plot(c.x, c.mean, marker="." if len(c.x) < 50 else None, label=label)
        if len(c.runs) > 1:
            ax.fill_between(c.x, c.low, c.high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(X_LABELS.get(x, x))
    ax.set_ylabel(metrics[0] if len(metrics) == 1 else "value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_runs(folders: Sequence[str | Path], out: str | Path, metric: str | None = None, x: str = "step") -> list[Curve]:
    """Write ``out`` (.png, .pdf or .svg, atomically) with the :func:`run_curves` of ``folders``; returns them."""
    if Path(out).suffix not in FORMATS:
        raise ConfigError(f"--out {out}: the file name must end in {', '.join(FORMATS)}")
    curves = run_curves(folders, metric, x)
    _save(curves_figure(curves, x), out)
    return curves
