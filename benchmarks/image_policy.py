"""An untrained `diffusion_image` policy folder for `rlft bench latency` (latency does not depend on training).

DPPO's pixel policy shape: one 96 x 96 camera through the small ResNet, 9-d proprioception, 7-d actions
(robomimic's Panda), chunk 4, DDIM 5 steps.

    python benchmarks/image_policy.py runs/bench-diffusion_image-96
    rlft bench latency run=runs/bench-diffusion_image-96 --json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from rlft.paths import CONFIG_DIR
from rlft.policies.policy import Policy
from rlft.runtime.checkpoint import save_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=96, help="camera height and width")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = OmegaConf.load(CONFIG_DIR / "policy" / "diffusion_image.yaml")
    shapes = {"obs": (9,), "agentview_image": (args.size, args.size, 3)}
    stats = {k: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)} for k, d in {"obs": 9, "action": 7}.items()}
    policy = Policy(cfg, shapes, 7, stats)
    save_policy(policy, args.out, {"source": f"untrained diffusion_image preset, {args.size}x{args.size} camera (latency benchmark)"})
    print(args.out)


if __name__ == "__main__":
    main()
