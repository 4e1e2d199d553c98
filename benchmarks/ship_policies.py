"""Pack pretrained runs into the self-contained policy folders rlft ships (rlft/assets/policies/<name>).

Each run's EMA policy is evaluated (50 episodes, the eval seed) and saved with that result in its
policy.json, so `rlft eval run=<name>` and fine-tuning can start from it by name.

    python benchmarks/ship_policies.py runs/pretrain-diffusion_mlp-hopper runs/pretrain-flow_mlp-hopper ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from rlft.runtime.checkpoint import POLICIES_DIR, load_policy, read_spec, save_policy
from rlft.runtime.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100000)
    args = parser.parse_args()
    for run in args.runs:
        cfg = OmegaConf.load(run / "config.yaml")
        meta = read_spec(run)["meta"]
        policy = load_policy(run)
        refs = (meta["ref_returns"]["random"], meta["ref_returns"]["expert"]) if meta.get("ref_returns") else None
        result = evaluate(policy, meta["env"], args.episodes, args.seed, refs=refs)
        name = f"{Path(str(cfg.data.path)).name.removesuffix('.zarr.zip')}-{cfg.policy.name}"
        meta = meta | {
            "source": f"rlft pretrain {' '.join(f'{k}={v}' for k, v in cfg.choices.items())}, {int(cfg.train.steps)} steps, EMA weights",
            "eval": {
                "episodes": args.episodes,
                "seed": args.seed,
                "steps": policy.head.steps,
                **{k: result[k] for k in ("return_mean", "return_std", "normalized_score")},
            },
        }
        save_policy(policy, POLICIES_DIR / name, meta)
        print(json.dumps({"policy": name, **meta["eval"]}))


if __name__ == "__main__":
    main()
