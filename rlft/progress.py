"""Progress of a long loop, the one home for it: a tqdm bar on a terminal, plain lines anywhere else.

Progress goes to stderr, so stdout keeps only a command's result. When stderr is a terminal, a tqdm bar
shows the headline metrics of the latest report; otherwise (a log file, a pipe, a cluster job) a bar would
vanish, so each report prints one line::

    pretrain: 200/1000 step (20%), 512.3 step/s, ETA 0:00:02; loss=0.1234 grad_norm=0.5 eval/return_mean=1234

that is ``<desc>: <done>/<total> <unit> (<percent>%), <rate> <unit>/s, ETA <h:mm:ss>`` and, after ``; ``,
``key=value`` pairs: the run's returns first, then losses (two at most), then the latest evaluation return
(kept from the last report that had one). The rate counts the units done since this process started the
loop, so a resumed run's ETA is right; the ETA is ``?`` until one is done.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Mapping, TextIO

from tqdm import tqdm


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _is_eval_return(key: str) -> bool:
    return "eval" in key and "return" in key


def headline(metrics: Mapping[str, float], last_eval: tuple[str, float] | None) -> dict[str, float]:
    """What a report shows: up to two of ``metrics`` (returns, then losses, then the rest) and ``last_eval``."""
    own = sorted((k for k in metrics if "eval" not in k), key=lambda k: 0 if "return" in k else 1 if "loss" in k else 2)
    shown = {k: float(metrics[k]) for k in own[:2]}
    if last_eval is not None:
        shown[last_eval[0]] = last_eval[1]
    return shown


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress over ``total`` units from ``initial``: :meth:`advance` counts, :meth:`report` shows metrics.

    ``every``: off a terminal, also report whenever the count passes a multiple of it (0: only on :meth:`report`).
    ``stream``: where progress goes (default: stderr at the time of the call).
    """

    def __init__(self, total: int, desc: str, initial: int = 0, unit: str = "step", every: int = 0, stream: TextIO | None = None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.initial = self.done = initial
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self.last_eval: tuple[str, float] | None = None
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True) if _is_tty(self.stream) else None

    def advance(self, n: int = 1) -> None:
        """``n`` more units done."""
        before, self.done = self.done, self.done + n
        if self.bar is not None:
            self.bar.update(n)
        elif self.every and before // self.every != self.done // self.every:
            self.report()

    def report(self, metrics: Mapping[str, float] | None = None) -> None:
        """Show ``metrics`` (a logging step's): the bar's postfix on a terminal, else one line."""
        metrics = metrics or {}
        for k, v in metrics.items():
            if _is_eval_return(k):
                self.last_eval = (k, float(v))
                break
        shown = headline(metrics, self.last_eval)
        if self.bar is not None:
            if shown:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
            return
        print(self._line(shown), file=self.stream, flush=True)

    def _line(self, shown: Mapping[str, float]) -> str:
        elapsed = time.perf_counter() - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "?"
        percent = 100 * self.done // self.total if self.total else 100
        text = f"{self.desc}: {self.done}/{self.total} {self.unit} ({percent}%), {rate:.4g} {self.unit}/s, ETA {eta}"
        return text + ("; " + " ".join(f"{k}={v:.4g}" for k, v in shown.items()) if shown else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
