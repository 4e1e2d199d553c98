"""Exact resume: an interrupted run continued with --resume logs the same metrics as an uninterrupted one."""

import os
import signal

import pytest
import torch
from omegaconf import OmegaConf

from conftest import make_episodes
from rlft.datasets.sampler import WindowSampler
from rlft.datasets.store import EpisodeStore, write_episodes
from rlft.errors import ConfigError, StopRequested
from rlft.runtime.run import Run, read_metrics
from rlft.runtime.seeding import seed_everything
from rlft.runtime.trainer import fit


class Interrupt(Exception):
    pass


def train(tmp_path, name, resume=False, stop_at=None, total=60, signal_at=None, keep=2):
    """Tiny BC regression with dropout (uses torch RNG), an LR schedule and a sampled data stream."""
    cfg = OmegaConf.create({"run": {"dir": str(tmp_path / "runs"), "name": name, "keep_checkpoints": keep}, "seed": 3})
    run = Run.start(cfg, resume=resume)
    rng = seed_everything(cfg.seed)
    data, ends = make_episodes([20, 30, 25], seed=1)
    store_path = tmp_path / "data.zarr"
    if not store_path.exists():
        write_episodes(store_path, data, ends)
    sampler = WindowSampler(EpisodeStore(store_path), obs_horizon=2, horizon=3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 6))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)

    def update(step):
        if step == stop_at:
            raise Interrupt
        if step == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        batch = sampler.sample(16, rng)
        loss = ((model(batch["obs"]) - batch["action"].flatten(1)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item(), "lr": sched.get_last_lr()[0]}

    fit(run, update, total, {"model": model}, {"opt": opt, "sched": sched}, {"data": rng}, log_every=5, checkpoint_every=10)
    return run


def test_resume_reproduces_metrics_exactly(tmp_path):
    straight = train(tmp_path, "straight")
    with pytest.raises(Interrupt):
        train(tmp_path, "broken", stop_at=37)
    logged = read_metrics(tmp_path / "runs" / "broken")
    assert logged[-1]["step"] == 35  # metrics past the last checkpoint (30) were written before the crash
    with open(tmp_path / "runs" / "broken" / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "lo')  # a line cut short by the crash
    resumed = train(tmp_path, "broken", resume=True)
    assert read_metrics(resumed.folder) == read_metrics(straight.folder)
    assert len(read_metrics(straight.folder)) == 12
    assert [p.name for p in resumed.checkpoints()] == ["step_000000050", "step_000000060"]


def test_sigterm_checkpoints_at_the_next_log_step_and_resumes_exactly(tmp_path):
    straight = train(tmp_path, "straight")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StopRequested, match="stopped at step 25"):
        train(tmp_path, "stopped", signal_at=23)  # log_every 5, checkpoint_every 10
    assert signal.getsignal(signal.SIGTERM) == before  # fit restores the handlers
    stopped = tmp_path / "runs" / "stopped"
    assert read_metrics(stopped)[-1]["step"] == 25
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir())[-1] == "step_000000025"
    resumed = train(tmp_path, "stopped", resume=True)
    assert read_metrics(resumed.folder) == read_metrics(straight.folder)


def test_keep_checkpoints_zero_keeps_all_and_negative_is_refused(tmp_path):
    run = train(tmp_path, "all", total=30, keep=0)
    assert [p.name for p in run.checkpoints()] == ["step_000000010", "step_000000020", "step_000000030"]
    with pytest.raises(ConfigError, match=r"run.keep_checkpoints must be >= 0 \(0 keeps every checkpoint\), got -1"):
        train(tmp_path, "negative", keep=-1)


def test_checkpoint_files_and_weights(tmp_path):
    run = train(tmp_path, "r", total=10)
    ckpt = run.checkpoints()[-1]
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.safetensors", "state.json", "trainer.pt"]
    from safetensors.torch import load_file

    assert set(load_file(str(ckpt / "model.safetensors"))) == {"model.1.weight", "model.1.bias", "model.3.weight", "model.3.bias"}
    assert not list((run.folder / "checkpoints").glob(".*"))  # no temporary leftovers
    model = torch.nn.Linear(2, 2)
    run.save_checkpoint(11, {"m": model}, extra={"iteration": 4, "best": 1.5})
    fresh = torch.nn.Linear(2, 2)
    ckpt = run.load_checkpoint({"m": fresh})
    assert ckpt.step == 11 and ckpt.extra == {"iteration": 4, "best": 1.5}
    assert torch.equal(fresh.weight, model.weight)


def test_existing_run_needs_resume_and_same_config(tmp_path):
    train(tmp_path, "r", total=10)
    cfg = OmegaConf.create({"run": {"dir": str(tmp_path / "runs"), "name": "r", "keep_checkpoints": 2}, "seed": 3})
    with pytest.raises(ConfigError, match="already exists; add --resume"):
        Run.start(cfg)
    cfg.seed = 4
    with pytest.raises(ConfigError, match="differs from the saved run at seed"):
        Run.start(cfg, resume=True)
    cfg.run.name = "fresh"
    with pytest.raises(ConfigError, match="holds no run"):
        Run.start(cfg, resume=True)
