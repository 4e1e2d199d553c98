"""Pack a small safety dataset to ship (rlft/assets/data/<name>.zarr.zip): every k-th episode of a mixed store.

The mixed stores of the safe offline benchmark (``runs/safe-data/<task>-mixed.zarr.zip``, see
``benchmarks/safe_offline.sh``) concatenate the recordings of experts trained under different Lagrangian
weights, one source after another, so every k-th episode keeps each source's share. The reference returns
(the full store's min / max episode return) are kept, so normalized rewards match runs on the full store.

    python benchmarks/ship_safe_data.py runs/safe-data/hopper_vel-mixed.zarr.zip rlft/assets/data/hopper-vel-v5-mixed.zarr.zip --every 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rlft.datasets.store import EpisodeStore, write_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--every", type=int, default=4, help="keep episodes 0, k, 2k, ...")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; remove it first")
    store = EpisodeStore(args.source)
    keep = np.arange(0, store.n_episodes, args.every)
    starts, ends = store.episode_starts[keep], store.episode_ends[keep]
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)])
    meta = {k: v for k, v in store.meta.items() if k not in ("stats", "merged_from")}
    meta |= {"source": "every k-th episode of a mixed store (benchmarks/ship_safe_data.py)", "every": args.every, "sources": store.meta.get("merged_from", [])}
    sub = write_episodes(args.out, {k: store[k][rows] for k in store.keys}, np.cumsum(ends - starts), meta)
    s = sub.summary()
    print(json.dumps({"path": str(args.out), "episodes": s["episodes"], "steps": s["steps"], "return_mean": s["return"]["mean"], "cost": s["cost"]}))


if __name__ == "__main__":
    main()
