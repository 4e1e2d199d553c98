"""Data-parallel pretraining under torchrun: the ranks together draw what one process draws, and a 2-process gloo
run takes the same steps as one process on the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import record_demos
from rlft.policies import draws
from rlft.policies.backbones import ResidualMLP
from rlft.policies.encoders import random_shift
from rlft.policies.heads import HEADS
from rlft.runtime.checkpoint import latest_checkpoint, read_weights


@pytest.mark.parametrize("head", sorted(HEADS))
def test_two_shards_draw_what_one_process_draws(head):
    n_times = HEADS[head].n_times
    torch.manual_seed(0)
    net = ResidualMLP(2, 3, 4, n_times=n_times, hidden=16, depth=3)
    opts = {"diffusion": {"train_steps": 10, "steps": 10}, "shortcut": {"max_steps": 8, "bootstrap_fraction": 0.5}}.get(head, {})
    model = HEADS[head](net, **opts)
    x0, cond = torch.randn(8, 3, 2), torch.randn(8, 4)
    state = torch.get_rng_state()
    whole = model.loss(x0, cond)
    after_whole = torch.get_rng_state()
    parts = []
    for rank in range(2):
        torch.set_rng_state(state)
        with draws.shard(rank, 2):
            parts.append(model.loss(x0[4 * rank : 4 * rank + 4], cond[4 * rank : 4 * rank + 4]))
        assert torch.equal(torch.get_rng_state(), after_whole)  # every rank's RNG moves as one process's does
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-5, atol=1e-6)


def test_random_shift_shards_like_the_whole_batch():
    images = torch.rand(6, 3, 8, 8)
    state = torch.get_rng_state()
    whole = random_shift(images, 2)
    parts = []
    for rank in range(3):
        torch.set_rng_state(state)
        with draws.shard(rank, 3):
            parts.append(random_shift(images[2 * rank : 2 * rank + 2], 2))
    assert torch.equal(torch.cat(parts), whole)


def test_two_gloo_processes_train_as_one_on_the_same_global_batch(tmp_path, capsys, monkeypatch):
    from rlft.cli import main

    record_demos(tmp_path / "demos.zarr", steps=2000)
    args = ["pretrain", "policy=shortcut_mlp", "env=pointmass", f"data.path={tmp_path / 'demos.zarr'}", "data.env=pointmass", "policy.backbone.hidden=32"]
    args += ["train.steps=30", "train.batch_size=64", "train.log_every=10", "train.checkpoint_every=30", "train.warmup=5", "eval.episodes=0"]
    args += [f"run.dir={tmp_path}"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlft"]
    two = subprocess.run([*torchrun, *args, "run.name=two"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert [json.loads(line)["run"] for line in two.stdout.splitlines()] == [str(tmp_path / "two")]  # only rank 0 speaks
    assert main([*args, "run.name=one"]) == 0
    rows = [[json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()] for name in ("one", "two")]
    assert [r["step"] for r in rows[1]] == [10, 20, 30]
    for a, b in zip(*rows):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    weights = [read_weights(latest_checkpoint(tmp_path / name)) for name in ("one", "two")]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-4, atol=1e-5)
    assert "world_size: 2" in (tmp_path / "two" / "config.yaml").read_text()
    capsys.readouterr()

    # a resume must keep the world size; the other commands run in one process
    assert main([*args, "run.name=two", "--resume"]) == 2
    assert "ran with 2 process(es), this start has 1" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["offline", "algo=iql", f"run.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rlft offline runs in one process; torchrun runs rlft pretrain" in err
