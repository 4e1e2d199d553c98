"""Compare fine-tuning runs: evaluation return vs env steps and vs wall time, one line per run.

    python benchmarks/plot_finetune.py runs/bench-reinflow-hopper runs/bench-dppo-hopper --out benchmarks/finetune_hopper.png
    python benchmarks/plot_finetune.py runs/bench-{reinflow,dsrl,dsrl_na,resip}-hopper --logx --out benchmarks/steering_hopper.png

Also prints, per run, the first and last evaluation return, iterations, env steps and env steps/s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlft.runtime.run import read_metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--key", default="eval/return_mean")
    parser.add_argument("--logx", action="store_true", help="env steps on a log scale (runs that differ 10x in sample use)")
    args = parser.parse_args()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run in args.runs:
        rows = read_metrics(run)
        pts = [r for r in rows if args.key in r]
        for ax, x in zip(axes, ("env_steps", "time_s")):
            ax.plot([r[x] / (1e6 if x == "env_steps" else 60) for r in pts], [r[args.key] for r in pts], marker=".", label=run.name)
        last = rows[-1]
        print(
            json.dumps(
                {
                    "run": run.name,
                    "iterations": last["step"],
                    "env_steps": last["env_steps"],
                    "minutes": round(last["time_s"] / 60, 1),
                    "env_steps_per_s": round(last["env_steps"] / last["time_s"]),
                    "first": round(pts[0][args.key], 1),
                    "last": round(pts[-1][args.key], 1),
                }
            )
        )
    axes[0].set_xlabel("env steps (millions)")
    if args.logx:
        axes[0].set_xscale("log")
    axes[1].set_xlabel("wall time (minutes)")
    for ax in axes:
        ax.set_ylabel(args.key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)


if __name__ == "__main__":
    main()
