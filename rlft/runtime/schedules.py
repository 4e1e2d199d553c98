"""Learning-rate and noise schedules shared by the trainers."""

from __future__ import annotations

import math
from typing import Callable


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def hold_then_cosine(progress: float, start: float, end: float, hold: float, decay_end: float) -> float:
    """``start`` until ``hold`` (a fraction of training), cosine to ``end`` at ``decay_end``, then ``end``."""
    if progress <= hold:
        return start
    if progress >= decay_end:
        return end
    phase = (progress - hold) / (decay_end - hold)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * phase))
