"""Progress: plain, parseable lines off a terminal; a tqdm bar with the latest return on one."""

import io
import re
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

from rlft.progress import Progress, headline
from rlft.runtime.run import Run
from rlft.runtime.trainer import fit

LINE = re.compile(r"^(?P<desc>.+): (?P<done>\d+)/(?P<total>\d+) step \((?P<pct>\d+)%\), (?P<rate>[\d.e+]+) step/s, ETA (?P<eta>\d+:\d\d:\d\d)(; (?P<kv>.*))?$")


def parse(text):
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, line
        out.append((int(m["done"]), int(m["total"]), float(m["rate"]), dict(kv.split("=") for kv in (m["kv"] or "").split())))
    return out


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_fit_off_a_terminal_prints_one_parseable_line_per_logging_step(tmp_path, capsys):
    run = Run.start(OmegaConf.create({"run": {"dir": str(tmp_path), "name": "r"}}))

    def update(step):
        metrics = {"lr": 0.1, "loss": 1.0 / step, "train/return_mean": float(step)}
        return metrics | ({"eval/return_mean": 100.0 + step} if step == 20 else {})

    fit(run, update, 50, {"model": torch.nn.Linear(1, 1)}, log_every=10, checkpoint_every=50, desc="pretrain")
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout keeps only a command's result
    lines = parse(captured.err)
    assert [(done, total) for done, total, _, _ in lines] == [(10, 50), (20, 50), (30, 50), (40, 50), (50, 50)]
    assert all(rate > 0 for _, _, rate, _ in lines)
    assert captured.err.splitlines()[0].startswith("pretrain: 10/50 step (20%)")
    assert list(lines[0][3]) == ["train/return_mean", "loss"]  # the return first, then the loss; no eval yet
    assert lines[0][3]["train/return_mean"] == "5.5" and lines[0][3]["loss"] == f"{sum(1 / s for s in range(1, 11)) / 10:.4g}"
    assert [kv.get("eval/return_mean") for *_, kv in lines] == [None, "120", "120", "120", "120"]  # the latest eval stays shown


def test_eta_and_resumed_rate(monkeypatch):
    clock = iter([0.0, 10.0])
    monkeypatch.setattr("rlft.progress.time", SimpleNamespace(perf_counter=lambda: next(clock)))
    out = io.StringIO()
    progress = Progress(1000, "finetune reinflow", initial=400, stream=out)  # resumed at 400
    progress.advance(100)
    progress.report({})
    [(done, total, rate, kv)] = parse(out.getvalue())
    assert (done, total, rate, kv) == (500, 1000, 10.0, {}) and out.getvalue().rstrip().endswith("ETA 0:00:50")


def test_every_reports_when_the_count_passes_a_multiple():
    out = io.StringIO()
    with Progress(30, "medium data", every=10, stream=out) as progress:
        for n in (7, 7, 7, 7, 2):
            progress.advance(n)
    assert [done for done, *_ in parse(out.getvalue())] == [14, 21, 30]


def test_on_a_terminal_the_bar_shows_the_latest_return():
    term = Terminal()
    with Progress(10, "finetune reinflow", stream=term) as progress:
        progress.advance(1)
        progress.report({"ppo/pg_loss": 0.01, "env_steps": 500.0, "train/return_mean": 12.5, "eval/return_mean": 30.0})
        assert progress.bar is not None and progress.bar.postfix == "train/return_mean=12.5, ppo/pg_loss=0.01, eval/return_mean=30"
        progress.advance(1)
        progress.report({"ppo/pg_loss": 0.02, "train/return_mean": 14.0})
        assert progress.bar.postfix == "train/return_mean=14, ppo/pg_loss=0.02, eval/return_mean=30"
    assert "finetune reinflow" in term.getvalue()
    assert not LINE.search(term.getvalue())  # a bar, not plain lines


def test_headline_prefers_returns_then_losses():
    assert headline({"lr": 1.0, "critic_loss": 2.0, "bc_loss": 3.0}, None) == {"critic_loss": 2.0, "bc_loss": 3.0}
    assert headline({"lr": 1.0}, ("expert/eval_return", 5.0)) == {"lr": 1.0, "expert/eval_return": 5.0}
