"""Learning-curve plots of a run folder's ``metrics.jsonl`` (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rlft.runtime.io import atomic_write
from rlft.runtime.run import read_metrics


def plot_metrics(run_folder: str | Path, keys: Sequence[str], out: str | Path) -> Path | None:
    """One panel per metric in ``keys`` (against step) into the PNG ``out``; keys never logged are skipped.

    Returns the path written, or None when none of ``keys`` was logged.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_folder)
    curves = {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}
    curves = {k: c for k, c in curves.items() if c}
    if not curves:
        return None
    fig, axes = plt.subplots(len(curves), 1, figsize=(6, 2.2 * len(curves)), sharex=True, squeeze=False)
    for ax, (key, points) in zip(axes[:, 0], curves.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if len(points) < 20 else None, markersize=3)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(Path(run_folder).name, fontsize=9)
    fig.tight_layout()
    try:
        return atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=100))
    finally:
        plt.close(fig)
