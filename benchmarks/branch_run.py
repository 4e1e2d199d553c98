"""Branch a run: a new run folder that starts from another run's checkpoint with changed settings.

    python benchmarks/branch_run.py SRC_RUN NEW_NAME COMMAND [override ...]

The new folder ``runs/NEW_NAME`` gets the config that ``rlft COMMAND <overrides> run.name=NEW_NAME``
composes, SRC_RUN's newest checkpoint (weights, optimizer and scheduler states, RNG) and its metrics
(``--resume`` drops the rows logged after the checkpoint). Continue it with the same overrides and
``--resume``, e.g. the offline benchmark's "15k more steps at constant lr with eta 3" from a 50k-step run::

    python benchmarks/branch_run.py runs/off50k-medium-ofql eta3-ofql offline algo=ofql data=hopper_medium \
        data.path=hopper-v5-medium train.steps=65000 algo.lr_decay=false algo.eta=3 ...
    rlft offline algo=ofql ... run.name=eta3-ofql --resume

Used for the benchmarks' continuation experiments only: a branched run's curve is its source's up to the
branch step, then the new settings'.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from rlft.config import compose, to_yaml
from rlft.io import atomic_write_text
from rlft.runtime.checkpoint import latest_checkpoint


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit(__doc__.split("\n\n")[1])
    source, name, command, overrides = Path(argv[0]), argv[1], argv[2], argv[3:]
    cfg = compose(command, [*overrides, f"run.name={name}"])
    folder = Path(cfg.run.dir) / name
    if folder.exists():
        sys.exit(f"branch_run: {folder} exists; choose another name")
    checkpoint = Path(latest_checkpoint(source))
    folder.mkdir(parents=True)
    for file_name in ("policy.json", "metrics.jsonl"):
        shutil.copy(source / file_name, folder / file_name)
    shutil.copytree(checkpoint, folder / "checkpoints" / checkpoint.name)
    atomic_write_text(folder / "config.yaml", to_yaml(cfg))  # last: a folder without it is no run
    print(f"{folder}: from {checkpoint}; continue with: rlft {command} {' '.join(overrides)} run.name={name} --resume")


if __name__ == "__main__":
    main(sys.argv[1:])
