"""mp4 video through the ffmpeg binary that imageio-ffmpeg ships (no system ffmpeg needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from rlft.io import atomic_write

CODEC = "libx264"


def pixel_format(height: int, width: int) -> str:
    """yuv420p, what every player and LeRobot's decoders read; yuv444p where an odd size rules out 4:2:0."""
    return "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"


def write_video(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float, crf: int = 25) -> Path:
    """Frames [H, W, 3] uint8 -> an H.264 mp4 (``crf``: 0 lossless ... 51 worst), written atomically."""
    import imageio_ffmpeg

    if len(frames) == 0:
        raise ValueError("no frames to write")
    height, width = frames[0].shape[:2]

    def encode(tmp: Path) -> None:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (width, height),
            fps=fps,
            codec=CODEC,
            pix_fmt_out=pixel_format(height, width),
            quality=None,
            output_params=["-crf", str(crf), "-f", "mp4"],
            macro_block_size=1,
        )
        writer.send(None)  # start ffmpeg
        for frame in frames:
            writer.send(np.ascontiguousarray(frame, dtype=np.uint8))
        writer.close()

    return atomic_write(path, encode)


def read_video(path: str | Path) -> np.ndarray:
    """Every frame of a video as uint8 [N, H, W, 3]; ffmpeg's errors (a missing or damaged file) raise OSError or RuntimeError."""
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(frames)
    width, height = meta["size"]
    data = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in frames]
    return np.stack(data) if data else np.zeros((0, height, width, 3), np.uint8)
