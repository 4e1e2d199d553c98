"""Writes tests/data/lerobot_v30/ with the lerobot package itself (0.4.4; it needs torch<2.11, so it runs in its own venv).

    python tests/data/make_lerobot_v30.py   # in a venv with lerobot==0.4.4 and PyAV

Three episodes (6, 9 and 5 frames, 10 fps) of a 3-d state, a 2-d action, rewards, done flags, one camera
stored as an AV1 video (LeRobot's default codec) and one stored as PNG images in the parquet, two tasks.
The values follow formulas that tests/test_lerobot.py repeats (``expected``), so the test needs no lerobot.
"""

import shutil
from pathlib import Path

import lerobot.datasets.lerobot_dataset as lerobot_dataset
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

OUT = Path(__file__).parent / "lerobot_v30"
LENGTHS, TASKS = (6, 9, 5), ("pick the cube", "push the cube")


def frame(e: int, t: int) -> dict:
    yy, xx = np.mgrid[0:48, 0:64]
    video = np.stack([xx * 3 + 10 * t, yy * 4 + 20 * e, np.full_like(xx, 60 + 5 * t)], -1).clip(0, 255).astype(np.uint8)
    image = np.stack([yy * 5 + t, xx * 2 + e, np.full_like(xx, 200)], -1)[:16, :16].clip(0, 255).astype(np.uint8)
    return {
        "observation.state": np.array([e, t, e * t], np.float32) / 10,
        "observation.images.front": video,
        "observation.images.wrist": image,
        "action": np.array([t, -e], np.float32) / 4,
        "next.reward": np.array([float(t == LENGTHS[e] - 1)], np.float32),
        "next.done": np.array([t == LENGTHS[e] - 1 and e != 1]),
        "task": TASKS[e % 2],
    }


def validate_then_squeeze(frame: dict, features: dict) -> None:
    """LeRobot checks shape (1,) values, then hands them to datasets, which needs scalars on numpy >= 2.4."""
    validate_frame(frame, features)
    frame.update({k: v[0] for k, v in frame.items() if isinstance(v, np.ndarray) and v.shape == (1,)})


validate_frame = lerobot_dataset.validate_frame
lerobot_dataset.validate_frame = validate_then_squeeze

if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    features = {
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]},
        "observation.images.front": {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]},
        "observation.images.wrist": {"dtype": "image", "shape": (16, 16, 3), "names": ["height", "width", "channels"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["vx", "vy"]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    }
    ds = LeRobotDataset.create("rlft/fixture", fps=10, features=features, root=OUT, robot_type="point", use_videos=True)
    for e, n in enumerate(LENGTHS):
        for t in range(n):
            ds.add_frame(frame(e, t))
        ds.save_episode()
    ds.finalize()
