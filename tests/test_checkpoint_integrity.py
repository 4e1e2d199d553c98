"""Checkpoints load only into the run that wrote them; a damaged checkpoint or policy.json is one line, and
--resume continues from the newest intact checkpoint (saying so), after removing half-written ones."""

import json
import shutil

import pytest

from conftest import make_episodes, one_error_line, snapshot
from rlft.cli import main
from rlft.datasets.store import write_episodes
from rlft.errors import CheckpointError
from rlft.runtime.checkpoint import load_policy, read_weights, save_policy

STEP_10, STEP_20 = "checkpoints/step_000000010", "checkpoints/step_000000020"


def pretrain_args(root, name, seed=0):
    return [
        "pretrain",
        "policy=flow_mlp",
        "env=pointmass",
        f"data.path={root / 'demos.zarr'}",
        "data.env=pointmass",
        "policy.backbone.hidden=16",
        "policy.horizon=2",
        "policy.act_steps=2",
        "train.steps=20",
        "train.batch_size=16",
        "train.warmup=2",
        "train.log_every=10",
        "train.checkpoint_every=10",
        "ema.start=5",
        "eval.episodes=0",
        f"seed={seed}",
        f"run.dir={root}",
        f"run.name={name}",
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of the same architecture on the same data, seeds 0 and 1 (each with checkpoints at steps 10 and 20)."""
    root = tmp_path_factory.mktemp("ckpt")
    data, ends = make_episodes([20] * 6, obs_dim=4, act_dim=2)
    write_episodes(root / "demos.zarr", data, ends, {"env": "pointmass"})
    for name, seed in (("a", 0), ("b", 1)):
        assert main(pretrain_args(root, name, seed)) == 0
    return root


def copy_run(runs, tmp_path, name="a"):
    shutil.copytree(runs / name, tmp_path / name)
    return tmp_path / name


def test_eval_and_export_refuse_another_runs_checkpoint(runs, tmp_path, capsys):
    a, b = copy_run(runs, tmp_path, "a"), copy_run(runs, tmp_path, "b")
    before = snapshot(tmp_path)
    assert main(["eval", f"run={a}", f"checkpoint={b / STEP_20}", "n_episodes=1", "n_envs=1"]) == 1
    assert f"{b / STEP_20 / 'model.safetensors'}: saved with another policy.json than {a}'s (another run's weights" in one_error_line(capsys)
    assert main(["export", f"run={a}", f"checkpoint={b / STEP_20}"]) == 1
    assert "saved with another policy.json" in one_error_line(capsys)
    assert main(["eval", f"run={a}", f"checkpoint={a / 'checkpoints'}", "n_episodes=1", "n_envs=1"]) == 1
    assert "not a checkpoint (no model.safetensors)" in one_error_line(capsys)
    assert snapshot(tmp_path) == before
    # its own checkpoints load, with their own weights
    own = load_policy(a, weights="ema", checkpoint=a / STEP_10).state_dict()
    saved = read_weights(a / STEP_10)
    assert all((own[k] == saved[f"ema.model.{k}"]).all() for k in own)
    assert main(["eval", f"run={a}", f"checkpoint={a / STEP_10}", "n_episodes=1", "n_envs=1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 1


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate_spec", "policy.json: cannot be read (JSONDecodeError"),
        ("edit_spec", "saved with another policy.json than"),
        ("drop_spec_key", "policy.json: not a valid policy spec (KeyError: 'policy')"),
        ("corrupt_header", "model.safetensors: cannot be read ("),
        ("flip_weight_byte", "model.safetensors: the weights differ from their checksum"),
    ],
)
def test_damaged_files_are_one_line(runs, tmp_path, capsys, damage, message):
    a = copy_run(runs, tmp_path)
    spec_path, weights = a / "policy.json", a / STEP_20 / "model.safetensors"
    spec = json.loads(spec_path.read_text())
    if damage == "truncate_spec":
        spec_path.write_text(spec_path.read_text()[:40])
    elif damage == "edit_spec":
        spec["meta"]["env"] = "hopper"
        spec_path.write_text(json.dumps(spec))
    elif damage == "drop_spec_key":
        del spec["policy"]
        spec_path.write_text(json.dumps(spec))
    elif damage == "corrupt_header":
        raw = weights.read_bytes()
        weights.write_bytes(raw[:8] + b"\xff" * 16 + raw[24:])
    else:  # a byte of a tensor (the data follow the header): loads fine, with another weight
        raw = bytearray(weights.read_bytes())
        raw[-3] ^= 0x10
        weights.write_bytes(bytes(raw))
    before = snapshot(tmp_path)
    assert main(["eval", f"run={a}", "n_episodes=1", "n_envs=1"]) == 1
    assert message in one_error_line(capsys)
    assert snapshot(tmp_path) == before


def train_here(runs, tmp_path):
    """Run a's command again, in tmp_path (run c): its arguments and its folder."""
    args = pretrain_args(runs, "c")
    args[-2] = f"run.dir={tmp_path}"
    assert main(args) == 0
    return args, tmp_path / "c"


def test_resume_falls_back_to_the_newest_intact_checkpoint(runs, tmp_path, capsys):
    args, c = train_here(runs, tmp_path)
    trainer = c / STEP_20 / "trainer.pt"
    trainer.write_bytes(trainer.read_bytes()[:100])  # truncated
    leftover = c / "checkpoints" / ".step_000000030.x1y2.tmp"  # what a crash inside a checkpoint write leaves
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    (c / "checkpoints" / "notes.txt").write_text("mine")
    damaged_files = snapshot(c / STEP_20)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    err = "".join(line for line in capsys.readouterr().err.splitlines(True) if line.startswith("rlft:"))  # not the progress lines
    assert err.count("\n") == 1 and "trainer.pt: cannot be read" in err
    assert f"moved it to {c / 'checkpoints' / 'damaged-step_000000020'} and resuming from step_000000010" in err
    assert snapshot(c / "checkpoints" / "damaged-step_000000020") == damaged_files  # set aside, not lost
    assert not leftover.exists() and (c / "checkpoints" / "notes.txt").read_text() == "mine"
    # the resumed run retrained steps 11..20 exactly: the same weights as the uninterrupted run of seed 0
    resumed, straight = read_weights(c / STEP_20), read_weights(runs / "a" / STEP_20)
    assert resumed.keys() == straight.keys() and all((resumed[k] == straight[k]).all() for k in resumed)


def test_resume_without_an_intact_checkpoint_is_one_line(runs, tmp_path, capsys):
    args, c = train_here(runs, tmp_path)
    for step in (STEP_10, STEP_20):
        (c / step / "state.json").write_text("{")
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main([*args, "--resume"]) == 1
    err = one_error_line(capsys)
    assert "state.json: cannot be read" in err and "no checkpoint of" in err and "is intact (2 damaged)" in err
    assert snapshot(tmp_path) == before


def test_policy_folders_are_tied_to_their_policy_json_too(runs, tmp_path, capsys):
    packed = tmp_path / "packed"
    save_policy(load_policy(runs / "a"), packed, {"env": "pointmass"})
    assert main(["eval", f"run={packed}", f"checkpoint={runs / 'a' / STEP_10}", "n_episodes=1", "n_envs=1"]) == 1
    assert "is a policy folder, which holds one set of weights" in one_error_line(capsys)
    spec = json.loads((packed / "policy.json").read_text())
    spec["meta"]["env"] = "hopper"
    (packed / "policy.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match=r"packed/policy.safetensors: saved with another policy.json"):
        load_policy(packed)


def test_exported_controllers_take_no_checkpoint(runs, tmp_path, capsys):
    from rlft.export.controller import CONTROLLER_FILE

    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / CONTROLLER_FILE).write_text("{}")  # is_exported: the checkpoint is refused before the controller is read
    assert main(["eval", f"run={tmp_path / 'exp'}", f"checkpoint={runs / 'a' / STEP_10}"]) == 2
    assert "is an exported controller, which holds one set of weights" in one_error_line(capsys)
