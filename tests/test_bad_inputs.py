"""Bad input, table-driven: every case below exits 1 or 2 with one ``rlft: error:`` line on stderr and
changes no file that existed before it ran.

Each case is what a new user would plausibly type. ``{r}`` stands for a folder holding a small toy dataset
(``demos.zarr``), a tiny pretrained run (``runs/pre``), a damaged copy of the dataset, and the user's own
files (``notes.txt``, ``mine/``) that no failing command may touch.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil

import pytest

from conftest import make_episodes, snapshot
from rlft.cli import main
from rlft.datasets.store import write_episodes

TINY = ["policy.backbone.hidden=16", "policy.horizon=2", "policy.act_steps=2", "train.batch_size=16", "train.warmup=2", "eval.episodes=0"]
PRE = ["pretrain", "policy=flow_mlp", "env=pointmass", "data.path={r}/demos.zarr", "data.env=pointmass", *TINY]
PRE += ["train.steps=4", "train.log_every=2", "run.dir={r}/runs"]
FT = ["finetune", "algo=reinflow", "env=pointmass", "base={r}/runs/pre", "train.iterations=1", "train.n_envs=2", "train.n_steps=4", "run.dir={r}/runs"]
OFF = ["offline", "algo=iql", "env=pointmass", "data.path={r}/demos.zarr", "data.env=pointmass", "train.steps=2", "eval.episodes=0", "run.dir={r}/runs"]
EVAL = ["eval", "run={r}/runs/pre", "n_episodes=1", "n_envs=1"]
EXPORT = ["export", "run={r}/runs/pre", "parity_batch=1"]
COLLECT = ["collect", "env=hopper", "run.dir={r}/runs", "expert.steps=2000", "expert.snapshot_every=1000", "datasets.kinds=[expert]", "datasets.steps=100"]

# (case id, argv, exit code, a phrase the error line must contain)
CASES = [
    # ---- configuration: keys, groups, values ---------------------------------------------------------
    ("unknown-key", [*PRE, "train.stepz=5"], 2, "train.stepz"),
    ("unknown-top-key", [*PRE, "sed=1"], 2, "sed"),
    ("unknown-group-option", [*PRE, "policy=nope"], 2, "nope"),
    ("unknown-env", [*PRE, "env=nope"], 2, "nope"),
    ("unknown-algo", [*FT, "algo=nope"], 2, "nope"),
    ("pretrain-algo-in-finetune", [*FT, "algo=dql"], 2, "dql"),
    ("not-a-number", [*PRE, "train.steps=abc"], 2, "train.steps"),
    ("negative-steps", [*PRE, "train.steps=-1"], 2, "train.steps"),
    ("zero-batch", [*PRE, "train.batch_size=0"], 2, "batch_size"),
    ("negative-lr", [*PRE, "train.lr=-1"], 2, "lr"),
    ("negative-seed", [*PRE, "seed=-1"], 2, "seed"),
    ("huge-seed", [*PRE, "seed=99999999999999999999"], 2, "seed"),
    ("zero-checkpoint-every", [*PRE, "train.checkpoint_every=0"], 2, "checkpoint_every"),
    ("zero-log-every", [*PRE, "train.log_every=0"], 2, "log_every"),
    ("zero-threads", [*PRE, "threads=0"], 2, "threads"),
    ("cuda-without-cuda", [*PRE, "device=cuda"], 2, "cuda"),
    ("unknown-device", [*PRE, "device=tpu"], 2, "tpu"),
    ("zero-horizon", [*PRE, "policy.horizon=0"], 2, "horizon"),
    ("act-steps-over-horizon", [*PRE, "policy.act_steps=5"], 2, "act_steps"),
    ("ema-decay-over-one", [*PRE, "ema.decay=1.5"], 2, "decay"),
    ("negative-eval-episodes", [*PRE, "eval.episodes=-1"], 2, "episodes"),
    ("override-without-value", [*PRE, "train.steps"], 2, "train.steps"),
    ("dict-for-a-number", [*PRE, "train.steps={{a: 1}}"], 2, "train.steps"),
    ("finetune-zero-iterations", [*FT, "train.iterations=0"], 2, "iterations"),
    ("finetune-zero-envs", [*FT, "train.n_envs=0"], 2, "n_envs"),
    ("finetune-cuda", [*FT, "device=cuda"], 2, "cuda"),
    ("offline-zero-checkpoint-every", [*OFF, "train.checkpoint_every=0"], 2, "checkpoint_every"),
    ("offline-negative-seed", [*OFF, "seed=-1"], 2, "seed"),
    ("offline-unknown-algo", [*OFF, "algo=bc"], 2, "bc"),
    # ---- datasets --------------------------------------------------------------------------------------
    ("missing-data-path", [*PRE, "data.path={r}/nope.zarr"], 1, "nope.zarr"),
    ("data-path-is-a-text-file", [*PRE, "data.path={r}/notes.txt"], 1, "notes.txt"),
    ("data-path-is-a-plain-folder", [*PRE, "data.path={r}/mine"], 1, "mine"),
    ("damaged-store", [*PRE, "data.path={r}/damaged.zarr"], 1, "damaged.zarr"),
    ("obs-dim-differs-from-env", [*PRE, "env=hopper", "data.env=hopper"], 2, "observations of shape (4,)"),
    ("offline-obs-dim-differs-from-env", [*OFF, "env=walker2d", "data.env=walker2d"], 2, "observations of shape (4,)"),
    ("offline-fisor-without-cost", [*OFF, "algo=fisor", "env=pointmass_safe", "data.env=pointmass_safe"], 1, "cost"),
    ("offline-missing-data", [*OFF, "data.path={r}/nope.zarr"], 1, "nope.zarr"),
    # ---- runs, checkpoints, resume ---------------------------------------------------------------------
    ("existing-run-without-resume", [*PRE, "run.name=pre"], 2, "pre"),
    ("resume-of-a-missing-run", [*PRE, "run.name=never", "--resume"], 2, "never"),
    ("resume-with-other-settings", [*PRE, "run.name=pre", "policy.backbone.hidden=32", "--resume"], 2, "hidden"),
    ("run-dir-under-a-file", [*PRE, "run.dir={r}/notes.txt/runs"], 1, "notes.txt"),
    ("finetune-missing-base", [*FT, "base={r}/runs/nope"], 2, "nope"),
    ("finetune-no-base", [*FT, "base=null"], 2, "base"),
    ("finetune-base-of-another-env", [*FT, "env=hopper"], 2, "observations of shape (4,)"),
    ("finetune-base-is-a-text-file", [*FT, "base={r}/notes.txt"], 2, "notes.txt"),
    # ---- eval ------------------------------------------------------------------------------------------
    ("eval-missing-run", ["eval", "run={r}/runs/nope"], 1, "nope"),
    ("eval-no-run", ["eval"], 2, "run"),
    ("eval-zero-episodes", [*EVAL, "n_episodes=0"], 2, "n_episodes"),
    ("eval-zero-envs", [*EVAL, "n_envs=0"], 2, "n_envs"),
    ("eval-negative-seed", [*EVAL, "seed=-1"], 2, "seed"),
    ("eval-cuda", [*EVAL, "device=cuda"], 2, "cuda"),
    ("eval-missing-checkpoint", [*EVAL, "checkpoint={r}/runs/pre/checkpoints/step_999"], 1, "step_999"),
    ("eval-unknown-key", [*EVAL, "episodes=3"], 2, "episodes"),
    ("eval-unknown-weights", [*EVAL, "weights=best"], 2, "weights"),
    ("eval-unknown-sampler", [*EVAL, "sampler=fast"], 2, "sampler"),
    ("eval-plain-folder", ["eval", "run={r}/mine"], 1, "mine"),
    ("eval-run-without-env", ["eval", "run={r}/runs/noenv", "n_episodes=1", "n_envs=1"], 1, "env"),
    ("eval-zero-steps", [*EVAL, "steps=0"], 2, "steps"),
    ("eval-negative-cost-limit", [*EVAL, "cost_limit=-1"], 2, "cost_limit"),
    # ---- export ----------------------------------------------------------------------------------------
    ("export-missing-run", ["export", "run={r}/runs/nope"], 1, "nope"),
    ("export-unknown-format", [*EXPORT, "format=tflite"], 2, "tflite"),
    ("export-over-existing-folder", [*EXPORT, "out={r}/mine"], 2, "mine"),
    ("export-zero-steps", [*EXPORT, "steps=0"], 2, "steps"),
    # ---- data commands ---------------------------------------------------------------------------------
    ("import-missing-file", ["data", "import", "{r}/nope.hdf5", "--format", "d4rl", "--out", "{r}/x.zarr"], 1, "nope.hdf5"),
    ("import-text-as-hdf5", ["data", "import", "{r}/notes.txt", "--format", "d4rl", "--out", "{r}/x.zarr"], 1, "notes.txt"),
    ("import-over-existing-folder", ["data", "import", "{r}/notes.txt", "--format", "d4rl", "--out", "{r}/mine"], 2, "mine"),
    ("import-over-existing-file", ["data", "import", "{r}/notes.txt", "--format", "d4rl", "--out", "{r}/notes.txt"], 2, "notes.txt"),
    ("import-unknown-format", ["data", "import", "{r}/notes.txt", "--format", "rlds", "--out", "{r}/x.zarr"], 2, "rlds"),
    ("import-lerobot-plain-folder", ["data", "import", "{r}/mine", "--format", "lerobot", "--out", "{r}/x.zarr"], 1, "mine"),
    ("info-missing", ["data", "info", "{r}/nope.zarr"], 1, "nope.zarr"),
    ("info-text-file", ["data", "info", "{r}/notes.txt"], 1, "notes.txt"),
    ("info-verify-damaged", ["data", "info", "--verify", "{r}/damaged.zarr"], 1, "damaged.zarr"),
    ("merge-over-existing", ["data", "merge", "--out", "{r}/mine", "{r}/demos.zarr", "{r}/demos.zarr"], 2, "mine"),
    ("merge-missing-source", ["data", "merge", "--out", "{r}/m.zarr", "{r}/demos.zarr", "{r}/nope.zarr"], 1, "nope.zarr"),
    ("export-lerobot-over-existing", ["data", "export", "{r}/demos.zarr", "--format", "lerobot", "--out", "{r}/mine"], 2, "mine"),
    ("filter-store-without-cost", ["data", "filter", "{r}/demos.zarr", "--max-cost", "1", "--out", "{r}/f.zarr"], 1, "cost"),
    ("filter-missing-source", ["data", "filter", "{r}/nope.zarr", "--max-cost", "1", "--out", "{r}/f.zarr"], 1, "nope.zarr"),
    ("corrupt-rate-over-one", ["data", "corrupt", "{r}/demos.zarr", "--kind", "random", "--on", "obs", "--rate", "1.5", "--out", "{r}/c.zarr"], 2, "rate"),
    ("corrupt-over-existing", ["data", "corrupt", "{r}/demos.zarr", "--kind", "random", "--on", "obs", "--out", "{r}/mine"], 2, "mine"),
    ("repair-missing-source", ["data", "repair", "{r}/nope.zarr", "--method", "adg", "--out", "{r}/rep.zarr"], 1, "nope.zarr"),
    # ---- collect, plot, bench ----------------------------------------------------------------------------
    ("collect-missing-expert", [*COLLECT, "expert.load={r}/nope"], 1, "nope.json"),
    ("collect-expert-is-a-text-file", [*COLLECT, "expert.load={r}/notes.txt"], 1, "notes.json"),
    ("collect-expert-garbage", [*COLLECT, "expert.load={r}/garbage"], 1, "garbage.json"),
    ("collect-expert-of-another-env", [*COLLECT, "expert.load=walker2d-v5-expert"], 2, "observations of shape (17,)"),
    ("collect-out-is-a-file", [*COLLECT, "out={r}/notes.txt"], 2, "notes.txt"),
    ("collect-unknown-kind", [*COLLECT, "datasets.kinds=[great]"], 2, "great"),
    ("collect-zero-steps", [*COLLECT, "expert.steps=0"], 2, "steps"),
    ("plot-missing-run", ["plot", "{r}/runs/nope"], 1, "nope"),
    ("plot-unknown-metric", ["plot", "{r}/runs/pre", "--metric", "eval/nope", "--out", "{r}/p.png"], 2, "eval/nope"),
    ("bench-zero-envs", ["bench", "rollout", "env=pointmass", "n_envs=0"], 2, "n_envs"),
    ("bench-unknown-backend", ["bench", "rollout", "env=pointmass", "backend=warp"], 2, "warp"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The folder every case runs against (see the module docstring)."""
    root = tmp_path_factory.mktemp("bad")
    data, ends = make_episodes([20] * 6, obs_dim=4, act_dim=2)
    write_episodes(root / "demos.zarr", data, ends, {"env": "pointmass"})
    shutil.copytree(root / "demos.zarr", root / "damaged.zarr")
    chunk = next(p for p in sorted((root / "damaged.zarr").rglob("*")) if p.is_file() and "obs" in p.parts and p.name == "0" and p.parent.name == "0")
    chunk.unlink()
    (root / "notes.txt").write_text("the user's own notes\n")
    (root / "garbage.json").write_text("{not json")
    (root / "garbage.safetensors").write_bytes(b"\x00" * 64)
    (root / "mine").mkdir()
    (root / "mine" / "keep.txt").write_text("the user's own file\n")
    args = [a.format(r=root) for a in PRE]
    assert main([*args, "run.name=pre", "train.checkpoint_every=2"]) == 0
    shutil.copytree(root / "runs" / "pre", root / "runs" / "noenv")
    spec = root / "runs" / "noenv" / "policy.json"
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "meta": {}}))  # what an older or foreign writer may leave out
    return root


def test_the_table_is_large_and_its_ids_unique():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case,argv,code,phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, capsys, case, argv, code, phrase):
    before = snapshot(world)
    try:
        got = main([a.format(r=world) for a in argv])
    except SystemExit as e:  # argparse's own errors (one line, see rlft.cli._Parser)
        got = e.code
    out = capsys.readouterr()
    assert got == code, (got, out.err)
    assert out.err.startswith("rlft") and ": error: " in out.err and out.err.count("\n") == 1, out.err
    assert phrase in out.err, out.err
    after = snapshot(world)
    assert {k: v for k, v in after.items() if k in before} == before, "a pre-existing file changed"
    assert sorted(after) == sorted(before), f"a failing command left files behind: {sorted(set(after) - set(before))[:5]}"


def test_no_case_left_stray_arrays(world):
    """The table's failing writes left no half-written store behind."""
    assert not any(world.rglob("*.tmp*"))


LOCKED = [
    ("pretrain-into-a-locked-folder", [*PRE, "run.dir={r}/locked/runs"]),
    ("merge-into-a-locked-folder", ["data", "merge", "--out", "{r}/locked/m.zarr", "{r}/demos.zarr", "{r}/demos.zarr"]),
    ("collect-into-a-locked-folder", [*COLLECT, "run.dir={r}/locked/runs"]),
]


@pytest.mark.parametrize("case,argv", LOCKED, ids=[c[0] for c in LOCKED])
def test_a_folder_without_write_permission_is_one_line_naming_it(world, capsys, monkeypatch, case, argv):
    """Permission errors (faked: root ignores chmod) give the OS's words and the path, and leave nothing behind."""
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if "locked" in self.parts:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    before = snapshot(world)
    assert main([a.format(r=world) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rlft: error: Permission denied: ") and "locked" in err and err.count("\n") == 1, err
    assert snapshot(world) == before


def test_mujoco_warnings_go_to_stderr_not_stdout_or_a_log_file(tmp_path, monkeypatch, capfd):
    """An unstable simulation's warning leaves stdout (``--json``) clean and writes no MUJOCO_LOG.TXT."""
    import torch

    from rlft.envs import make

    monkeypatch.chdir(tmp_path)
    env = make("hopper", 2, backend="native", seed=0)
    env.reset()
    for data in env.datas:
        data.qvel[:] = 1e30
    env.step(torch.zeros(2, 3))
    out, err = capfd.readouterr()
    assert out == "" and "MuJoCo warning: Nan, Inf or huge value in QVEL" in err, (out, err)
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


DIVERGING = [
    ("finetune", [*FT, "train.iterations=3", "algo.actor_lr=1.0e+12", "algo.critic_lr=1.0e+12"]),
    ("offline", [*OFF, "algo.lr=1.0e+12", "train.steps=200", "train.log_every=10", "train.checkpoint_every=50"]),
]


@pytest.mark.parametrize("command,argv", DIVERGING, ids=[c[0] for c in DIVERGING])
def test_a_diverging_finetune_or_offline_run_stops_with_one_line(world, capsys, command, argv):
    """As pretrain (tests/test_pretrain.py): one line naming the step, and no non-finite checkpoint on disk."""
    from safetensors.torch import load_file

    assert main([a.format(r=world) for a in argv] + [f"run.name=diverge-{command}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rlft: error: step ") and err.count("\n") == 1, err
    for ckpt in (world / "runs" / f"diverge-{command}" / "checkpoints").glob("step_*"):
        assert all(bool(t.isfinite().all()) for t in load_file(str(ckpt / "model.safetensors")).values() if t.is_floating_point())
