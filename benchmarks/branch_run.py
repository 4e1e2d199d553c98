"""Branch a run: a new run folder that starts from another run's checkpoint with changed settings.

    python benchmarks/branch_run.py SRC_RUN NEW_NAME COMMAND [override ...]

The new folder ``runs/NEW_NAME`` gets the config that ``rlft COMMAND <overrides> run.name=NEW_NAME``
composes, SRC_RUN's newest checkpoint (weights, optimizer and scheduler states, RNG) and its metrics
up to that step. Continue it with the same overrides and ``--resume``, e.g. the offline benchmark's
"15k more steps at constant lr with eta 3" from a 50k-step run::

    python benchmarks/branch_run.py runs/off50k-medium-ofql eta3-ofql offline algo=ofql data=hopper_medium \
        data.path=hopper-v5-medium train.steps=65000 algo.lr_decay=false algo.eta=3 ...
    rlft offline algo=ofql ... run.name=eta3-ofql --resume

Used for the benchmarks' continuation experiments only: a branched run's curve is its source's up to the
branch step, then the new settings'.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from rlft.config import compose, to_yaml
from rlft.policies.policy import latest_checkpoint
from rlft.runtime.run import read_metrics


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit(__doc__.split("\n\n")[1])
    source, name, command, overrides = Path(argv[0]), argv[1], argv[2], argv[3:]
    cfg = compose(command, [*overrides, f"run.name={name}"])
    folder = Path(cfg.run.dir) / name
    if folder.exists():
        sys.exit(f"branch_run: {folder} exists; choose another name")
    checkpoint = Path(latest_checkpoint(source))
    step = json.loads((checkpoint / "state.json").read_text())["step"]
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(to_yaml(cfg))
    shutil.copy(source / "policy.json", folder / "policy.json")
    rows = [row for row in read_metrics(source) if row["step"] <= step]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    shutil.copytree(checkpoint, folder / "checkpoints" / checkpoint.name)
    print(f"{folder}: from {checkpoint} (step {step}); continue with: rlft {command} {' '.join(overrides)} run.name={name} --resume")


if __name__ == "__main__":
    main(sys.argv[1:])
