"""Plots: rlft plot (several runs, seeds averaged into a band) and learning_curve.png at every checkpoint."""

import json

import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection
from omegaconf import OmegaConf

from rlft.cli import main
from rlft.errors import ConfigError
from rlft.runtime import trainer
from rlft.runtime.plots import curves_figure, group_runs, plot_metrics, run_curves, seed_group
from rlft.runtime.run import Run, read_metrics
from rlft.runtime.trainer import fit


def write_run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture
def runs(tmp_path):
    """Two seeds of one setting (eval at the same steps, s1 one step longer) and one other run."""
    s0 = write_run(tmp_path / "flow-s0", [{"step": s, "loss": 1.0 / s, "eval/return_mean": 10.0 * s} for s in (1, 2, 3)])
    s1 = write_run(tmp_path / "flow-s1", [{"step": s, "loss": 2.0 / s, "eval/return_mean": 20.0 * s} for s in (1, 2, 3, 4)])
    other = write_run(tmp_path / "meanflow", [{"step": s, "loss": 0.5, "eval/return_mean": 5.0} for s in (2, 4)])
    return [s0, s1, other]


@pytest.mark.parametrize(
    "name, group",
    [("flow-s0", "flow"), ("flow_seed12", "flow"), ("flow-3", "flow"), ("flow_s1", "flow"), ("hopper-v5", "hopper-v5"), ("flow-s", "flow-s"), ("7", "7")],
)
def test_seed_suffix_rule(name, group):
    assert seed_group(name) == group


def test_two_seeds_make_one_curve_with_a_band_and_the_other_run_its_own(runs, tmp_path):
    assert [(label, [r.name for r in rs]) for label, rs in group_runs(runs)] == [("flow", ["flow-s0", "flow-s1"]), ("meanflow", ["meanflow"])]
    curves = run_curves(runs)
    assert [(c.label, c.metric, len(c.runs)) for c in curves] == [("flow", "eval/return_mean", 2), ("meanflow", "eval/return_mean", 1)]
    seeds = curves[0]
    assert seeds.x.tolist() == [1, 2, 3]  # where both seeds logged
    assert seeds.mean.tolist() == [15, 30, 45] and seeds.low.tolist() == [10, 20, 30] and seeds.high.tolist() == [20, 40, 60]
    fig = curves_figure(curves)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["flow (2 seeds)", "meanflow"]


def test_plot_command_writes_the_figure_and_summarises_it(runs, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["plot", *map(str, runs), "--metric", "loss", "--out", str(out), "--json"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    result = json.loads(capsys.readouterr().out)
    assert [(c["label"], c["metric"], len(c["runs"])) for c in result["curves"]] == [("flow", "loss", 2), ("meanflow", "loss", 1)]
    assert result["curves"][0]["last"] == {"step": 3.0, "mean": 0.5, "min": pytest.approx(1 / 3), "max": pytest.approx(2 / 3)}
    assert main(["plot", *map(str, runs), "--out", str(tmp_path / "cmp.svg")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("cmp.svg: 2 curves against step") and "flow (2 seeds: flow-s0, flow-s1): eval/return_mean 45" in lines[1]


def test_plot_errors_are_one_line(runs, tmp_path, capsys):
    def error(*args):
        code = main(["plot", *args, "--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("rlft: error: ")
        return code, err

    code, err = error(str(runs[0]), str(tmp_path / "nope"))
    assert code == 1 and "nope: no such run folder" in err
    code, err = error(*map(str, runs), "--metric", "eval/success_rate")
    assert code == 2 and "none of the runs logs it; they log: eval/return_mean, loss" in err
    code, err = error(*map(str, runs), "--x", "env_steps")
    assert code == 2 and "--x env_steps: none of the runs logs it" in err
    bare = write_run(tmp_path / "bc", [{"step": 1, "loss": 1.0}])
    code, err = error(str(runs[0]), str(bare))
    assert code == 2 and "bc logs no return" in err and "--metric: loss" in err
    code, err = error(str(runs[0]), str(bare), "--metric", "eval/return_mean")
    assert code == 2 and err.endswith("bc does not log it; it logs: loss\n")
    assert main(["plot", str(runs[0]), "--out", str(runs[0] / "metrics.jsonl")]) == 2
    assert "must end in .png" in capsys.readouterr().err and read_metrics(runs[0])  # nothing was overwritten
    assert not (tmp_path / "x.png").exists()


def test_learning_curve_is_written_at_every_checkpoint(tmp_path, monkeypatch):
    cfg = OmegaConf.create({"run": {"dir": str(tmp_path), "name": "r"}})
    run = Run.start(cfg)
    model = torch.nn.Linear(2, 1)
    seen = []

    def plot(folder, panels, out):
        seen.append(read_metrics(folder)[-1]["step"])
        return plot_metrics(folder, panels, out)

    def update(step):
        if step == 25:
            raise RuntimeError("crash")
        return {"loss": 1.0 / step, "eval/return_mean": float(step)} if step % 10 == 0 else {"loss": 1.0 / step}

    monkeypatch.setattr(trainer, "plot_metrics", plot)
    with pytest.raises(RuntimeError):
        fit(run, update, 40, {"model": model}, log_every=5, checkpoint_every=10, plot=(("loss",), ("eval/return_mean",)))
    assert seen == [10, 20]  # each checkpoint, with the metrics logged so far
    assert (run.folder / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"  # a crashed run keeps its curve


def test_learning_curve_panels_skip_keys_never_logged(tmp_path):
    folder = write_run(tmp_path / "r", [{"step": s, "loss": 1.0 / s, "env_steps": 100 * s} for s in (1, 2)])
    assert plot_metrics(folder, (("eval/return_mean",),), tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    assert plot_metrics(folder, (("loss",), ("eval/return_mean",)), tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_run_curves_refuses_seeds_without_a_common_range(tmp_path):
    a = write_run(tmp_path / "x-1", [{"step": 1, "eval/return_mean": 1.0}])
    b = write_run(tmp_path / "x-2", [{"step": 5, "eval/return_mean": 2.0}])
    with pytest.raises(ConfigError, match="no common range"):
        run_curves([a, b])
    assert np.isfinite(run_curves([a])[0].mean).all()
