"""The safe offline RL table from the runs of benchmarks/safe_offline.sh: per task and method, the final
evaluation's normalized reward and normalized cost (20 episodes), mean over seeds with each seed's value.

    python benchmarks/safe_table.py [RUNS_DIR]
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path


def main(root: Path) -> None:
    cells: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for metrics in sorted(root.glob("safe-*-s*/metrics.jsonl")):
        match = re.fullmatch(r"safe-(.+)-(fisor|bc-all|bc-safe|ofql)-s(\d+)", metrics.parent.name)
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if "eval/cost_mean" in line]
        if match and rows:
            cells[match.group(1), match.group(2)].append((rows[-1]["eval/normalized_reward"], rows[-1]["eval/normalized_cost"]))
    methods = ["bc-all", "bc-safe", "ofql", "fisor"]
    print("| task | " + " | ".join(f"{m} reward / cost" for m in methods) + " |")
    print("| --- |" + " --- |" * len(methods))
    for task in sorted({t for t, _ in cells}):
        out = []
        for m in methods:
            values = cells.get((task, m), [])
            if not values:
                out.append("")
                continue
            r, c = (sum(v[i] for v in values) / len(values) for i in (0, 1))
            seeds = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in values)
            out.append(f"{r:.2f} / {c:.2f}{' *' if c >= 1 else ''} ({seeds})")
        print(f"| {task} | " + " | ".join(out) + " |")
    print("\n(* unsafe: normalized cost >= 1; per-seed values in brackets)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs"))
