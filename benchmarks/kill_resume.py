"""kill -9 a training run, resume it, and check its final weights and metrics equal an uninterrupted run's.

Equal means bit for bit, except wall-clock readings: the ``progress.seconds`` counter a fine-tuning run keeps
in its checkpoint and the timing entries of metrics.jsonl (``*_s``, ``*_per_s``).

For each job (pretrain, finetune, offline) one run goes through uninterrupted; then each trial starts the
same job under another run name and sends SIGKILL either while a checkpoint is being written (the moment a
``.tmp`` folder appears under ``checkpoints/``) or at a random moment mid-training, then runs the same
command with ``--resume`` until it finishes (killing again on later attempts when ``--kills`` > 1).

    OMP_NUM_THREADS=1 python benchmarks/kill_resume.py --trials 4 --out /tmp/kill-resume

prints one line per trial (``torn_writes``: kills that left a half-written checkpoint folder behind) and a
JSON summary; exit status 1 when any trial's weights differ.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

JOBS = {
    "pretrain": [
        "pretrain",
        "policy=flow_mlp",
        "data=hopper_medium",
        "policy.backbone.hidden=64",
        "train.steps=600",
        "train.checkpoint_every=100",
        "train.log_every=50",
        "eval.episodes=0",
    ],
    "finetune": [
        "finetune",
        "algo=reinflow",
        "env=hopper",
        "base=hopper-v5-medium-flow_mlp",
        "train.iterations=6",
        "train.n_envs=8",
        "train.n_steps=64",
        "train.checkpoint_every=1",
        "eval.episodes=0",
    ],
    "offline": ["offline", "algo=dql", "env=hopper", "data=hopper_medium", "train.steps=600", "train.checkpoint_every=100", "eval.episodes=0"],
}


def rlft(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "rlft", *args]


WALL_CLOCK = ("progress.seconds",)


def outcome(run: Path) -> tuple[dict, list[dict]]:
    """The newest checkpoint's tensors and the metrics rows, wall-clock readings left out."""
    steps = sorted((p for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")), key=lambda p: int(p.name.split("_")[1]))
    weights = {k: v for k, v in load_file(str(steps[-1] / "model.safetensors")).items() if k not in WALL_CLOCK}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return weights, [{k: v for k, v in row.items() if not k.endswith("_s")} for row in rows]


def kill_when(proc: subprocess.Popen, run: Path, moment: str, delay: float) -> bool:
    """SIGKILL ``proc`` at ``moment`` ("checkpoint": a temp checkpoint folder exists; "random": after ``delay`` s); False if it finished first."""
    start = time.monotonic()
    ckpts = run / "checkpoints"
    while proc.poll() is None:
        if moment == "checkpoint":
            hit = ckpts.is_dir() and any(e.name.endswith(".tmp") for e in os.scandir(ckpts))
        else:
            hit = time.monotonic() - start >= delay
        if hit:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005 if moment == "checkpoint" else 0.01)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials per job (alternating checkpoint / random kills)")
    parser.add_argument("--kills", type=int, default=2, help="kills per trial (the later ones hit resumed attempts)")
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/kill-resume"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    rows = []
    for job in args.jobs.split(","):
        base = [*JOBS[job], f"run.dir={args.out}"]
        t0 = time.monotonic()
        subprocess.run(rlft([*base, f"run.name={job}-ref"]), check=True, capture_output=True)
        duration = time.monotonic() - t0
        reference, reference_metrics = outcome(args.out / f"{job}-ref")
        for trial in range(args.trials):
            moment = "checkpoint" if trial % 2 == 0 else "random"
            name = f"{job}-kill{trial}"
            run, kills, attempts, torn = args.out / name, 0, 0, 0
            while True:
                argv = rlft([*base, f"run.name={name}", *(["--resume"] if attempts else [])])
                proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                attempts += 1
                if kills < args.kills and kill_when(proc, run, moment, rng.uniform(0.2, 0.9) * duration):
                    kills += 1
                    torn += any(e.name.endswith(".tmp") for e in os.scandir(run / "checkpoints")) if (run / "checkpoints").is_dir() else 0
                    continue
                proc.wait()
                err = proc.stderr.read().decode()
                if proc.returncode != 0:
                    raise SystemExit(f"{name}: attempt {attempts} exited {proc.returncode}: {err.strip().splitlines()[-1:]}")
                break
            got, metrics = outcome(run)
            exact = got.keys() == reference.keys() and all(bool((got[k] == reference[k]).all()) for k in reference) and metrics == reference_metrics
            rows.append({"job": job, "trial": trial, "kill_at": moment, "kills": kills, "torn_writes": torn, "attempts": attempts, "exact": exact})
            print(json.dumps(rows[-1]), flush=True)
    summary = {"trials": len(rows), **{key: sum(r[key] for r in rows) for key in ("kills", "torn_writes", "exact")}}
    print(json.dumps(summary))
    return 0 if summary["exact"] == summary["trials"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
