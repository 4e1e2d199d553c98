"""rlft pretrain and rlft eval end to end on the shipped Hopper data, at toy size."""

import json

import numpy as np
import pytest
import torch

from rlft.cli import main

TINY = [
    "policy=flow_mlp",
    "env=hopper",
    "data=hopper_medium",
    "policy.backbone.hidden=32",
    "train.steps=40",
    "train.log_every=10",
    "train.checkpoint_every=20",
    "train.warmup=5",
    "ema.start=10",
    "ema.every=1",
    "eval.episodes=2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["pretrain", *TINY, f"run.dir={runs}", "run.name=tiny"]) == 0
    return runs / "tiny"


def test_pretrain_writes_a_complete_run(trained):
    assert (trained / "policy.json").is_file() and (trained / "config.yaml").is_file()
    meta = json.loads((trained / "policy.json").read_text())["meta"]
    assert meta["env"] == "hopper" and meta["data"] == "hopper-v5-medium" and set(meta["ref_returns"]) == {"random", "expert"}
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert all("loss" in r and "lr" in r for r in rows)
    assert rows[-1]["eval/episodes"] == 2 and "eval/return_mean" in rows[-1] and "eval/normalized_score" in rows[-1]
    assert [p.name for p in sorted((trained / "checkpoints").iterdir())] == ["step_000000020", "step_000000040"]
    assert (trained / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"  # written at every checkpoint, pretrain included


def test_eval_prints_one_json_object_and_is_reproducible(trained, capsys):
    capsys.readouterr()
    args = ["eval", f"run={trained}", "n_episodes=3", "n_envs=2", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    for key in ("return_mean", "return_std", "normalized_score", "success_rate", "episodes", "env_steps_per_s"):
        assert key in first
    assert first["episodes"] == 3 and first["success_rate"] is None and first["steps"] == 4
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["return_mean"] == first["return_mean"]
    assert main([*args[:-1], "steps=2", "weights=policy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2


def test_eval_video(trained, capsys):
    assert main(["eval", f"run={trained}", "n_episodes=1", "--video", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    video = trained / "videos" / "eval-seed100000.mp4"
    assert out["video"] == str(video) and video.stat().st_size > 1000
    assert video.read_bytes()[4:8] == b"ftyp"  # an mp4 container


def test_resume_of_finished_run_keeps_weights(trained, capsys):
    before = (trained / "checkpoints" / "step_000000040" / "model.safetensors").read_bytes()
    assert main(["pretrain", *TINY, f"run.dir={trained.parent}", "run.name=tiny", "--resume"]) == 0
    assert (trained / "checkpoints" / "step_000000040" / "model.safetensors").read_bytes() == before


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "env=walker2d", "data=hopper_medium", f"run.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "recorded in 'hopper' but env=walker2d" in err and err.count("\n") == 1
    assert not (tmp_path / "pretrain-diffusion_mlp-hopper").exists()  # nothing written
    assert main(["pretrain", "data.path=nowhere.zarr", f"run.dir={tmp_path}"]) == 1
    assert "nowhere.zarr: no such dataset" in capsys.readouterr().err
    assert main(["pretrain", "policy.obs_keys=[pixels]", f"run.dir={tmp_path}"]) == 2
    assert "needs key(s) pixels" in capsys.readouterr().err
    assert main(["eval", f"run={tmp_path / 'gone'}"]) == 1
    assert "no such run or policy folder" in capsys.readouterr().err
    assert main(["eval", f"run={tmp_path}"]) == 1
    assert "no policy.json" in capsys.readouterr().err
    assert main(["eval", "n_episodes=3"]) == 2
    assert "eval needs the run folder" in capsys.readouterr().err


def test_pretrain_image_policy_on_camera_data(tmp_path, capsys):
    """The image preset trains end to end on a store with a uint8 camera key and proprioception."""
    from conftest import make_episodes
    from rlft.datasets.store import write_episodes
    from rlft.runtime.checkpoint import load_policy

    data, ends = make_episodes([30, 30], obs_dim=11, act_dim=3)
    data["agentview_image"] = np.random.default_rng(0).integers(0, 256, size=(60, 24, 24, 3), dtype=np.uint8)
    write_episodes(tmp_path / "cams.zarr", data, ends, {"env": "hopper"})
    args = ["pretrain", "policy=diffusion_image", f"data.path={tmp_path / 'cams.zarr'}", f"run.dir={tmp_path}", "run.name=img"]
    small = ["policy.backbone.hidden=32", "policy.encoder.features=8", "train.steps=4", "train.log_every=2", "train.checkpoint_every=4", "eval.episodes=0"]
    assert main([*args, *small]) == 0
    policy = load_policy(tmp_path / "img")
    obs = {"obs": torch.randn(2, 11), "agentview_image": torch.randint(0, 256, (2, 24, 24, 3), dtype=torch.uint8)}
    assert policy.act(obs).shape == (2, 4, 3)


def test_observation_history_policy_runs_in_eval(tmp_path, capsys):
    """diffusion_unet: history of 2 observations, chunk 8 of which 4 are executed."""
    args = ["pretrain", "policy=diffusion_unet", "policy.backbone.channels=[16,32]", "policy.head.steps=4", "train.steps=4", "train.log_every=2"]
    assert main([*args, "train.checkpoint_every=4", "eval.episodes=2", f"run.dir={tmp_path}", "run.name=h"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "h" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["eval/episodes"] == 2 and rows[-1]["eval/env_steps"] > 0


def test_a_diverging_run_stops_with_one_line_and_writes_no_non_finite_checkpoint(tmp_path, capsys):
    from safetensors.torch import load_file

    args = ["pretrain", *TINY[:-1], "eval.episodes=0", "train.lr=1.0e+6", "train.steps=500", f"run.dir={tmp_path}", "run.name=nan"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rlft: error: step ") and "stopped without saving" in err, err
    for ckpt in (tmp_path / "nan" / "checkpoints").glob("step_*"):  # whatever was saved is finite and resumable
        assert all(bool(torch.isfinite(t).all()) for t in load_file(str(ckpt / "model.safetensors")).values() if t.is_floating_point())
