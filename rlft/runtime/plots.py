"""Learning-curve plots from a run's metrics.jsonl (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rlft.io import atomic_write
from rlft.runtime.run import read_metrics


def plot_metrics(run_folder: str | Path, keys: Sequence[str], out: str | Path, x_keys: Sequence[str] = ("step", "env_steps", "time_s")) -> Path | None:
    """One panel per x axis present (step, env steps, wall time), every key in ``keys`` on each; None if no key was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_folder)
    present = [k for k in keys if any(k in r for r in rows)]
    if not present:
        return None
    axes_keys = [x for x in x_keys if any(x in r for r in rows)]
    fig, axes = plt.subplots(1, len(axes_keys), figsize=(5 * len(axes_keys), 3.5), squeeze=False)
    for ax, x in zip(axes[0], axes_keys):
        for key in present:
            pts = [(r[x], r[key]) for r in rows if key in r and x in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None, label=key)
        ax.set_xlabel({"step": "iteration / step", "env_steps": "env steps", "time_s": "wall time (s)"}.get(x, x))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(Path(run_folder).name, fontsize=10)
    fig.tight_layout()
    path = atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path
