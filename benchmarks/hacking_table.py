"""The reward-hacking table (benchmarks/hacking.sh): for each task and method, the last evaluation's proxy
return, true return, data loss (and the base's), state distance and jerk, mean over seeds (and each seed).

    python benchmarks/hacking_table.py [RUNS_DIR]   (default runs)
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

COLUMNS = ("eval/return_mean", "eval/true_return_mean", "diag/data_loss", "diag/data_loss_base", "diag/state_distance", "diag/jerk")


def last_eval(run: Path) -> dict[str, float] | None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in rows if "diag/state_distance" in r]
    return evals[-1] if evals else None


def main(root: Path) -> None:
    table: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for run in sorted(root.glob("hack-*-s*")):
        match = re.fullmatch(r"hack-(.+)-(none|reg|ddrl)-s(\d+)", run.name)
        row = last_eval(run) if match and (run / "metrics.jsonl").exists() else None
        if row:
            table[match.group(1), match.group(2)].append(row)
    print("| task | method | seeds | iteration | " + " | ".join(c.split("/")[1] for c in COLUMNS) + " |")
    print("|" + " --- |" * (4 + len(COLUMNS)))
    for (task, method), rows in sorted(table.items()):
        means = [sum(r[c] for r in rows) / len(rows) if all(c in r for r in rows) else float("nan") for c in COLUMNS]
        steps = ",".join(str(r["step"]) for r in rows)
        print(f"| {task} | {method} | {len(rows)} | {steps} | " + " | ".join(f"{m:.4g}" for m in means) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs"))
