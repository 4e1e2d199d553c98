"""A path that does not exist is an error; a name means a shipped asset only when it has no folder in it."""

import pytest

from conftest import one_error_line, snapshot
from rlft.cli import main
from rlft.datasets.store import EpisodeStore, resolve_path
from rlft.paths import DATASETS_DIR, EXPERTS_DIR, POLICIES_DIR, is_bare_name
from rlft.policies.expert import ExpertPolicy
from rlft.runtime.checkpoint import resolve_policy


def test_bare_names_and_paths():
    assert is_bare_name("hopper-v5-medium") and is_bare_name("hopper-v5-medium.zarr.zip")
    assert not is_bare_name("runs/hopper-v5-medium") and not is_bare_name("./hopper-v5-medium") and not is_bare_name("/data/x.zarr")


SHORT = {  # were the path taken for the shipped dataset, the run would be short
    "pretrain": ["train.steps=1", "eval.episodes=0"],
    "offline": ["train.steps=1", "eval.episodes=0"],
    "finetune": ["train.iterations=1", "eval.episodes=0"],
}


@pytest.mark.parametrize("command", sorted(SHORT))
def test_a_missing_data_path_is_an_error_not_the_shipped_dataset_of_its_basename(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("keep")
    for path in (tmp_path / "hopper-v5-medium.zarr.zip", "data/hopper-v5-medium"):
        before = snapshot(tmp_path)
        assert main([command, f"data.path={path}", f"run.dir={tmp_path / 'runs'}", *SHORT[command]]) == 1
        assert f"{path}: no such file or folder (a shipped dataset is named without a folder" in one_error_line(capsys)
        assert snapshot(tmp_path) == before and not (tmp_path / "runs").exists()


def test_dataset_names_without_a_folder_are_the_shipped_ones():
    assert resolve_path("hopper-v5-medium") == DATASETS_DIR / "hopper-v5-medium.zarr.zip"
    assert EpisodeStore("hopper-v5-medium.zarr.zip").path == DATASETS_DIR / "hopper-v5-medium.zarr.zip"
    assert main(["pretrain", "data.path=hopper-v5-medium", "--print-config"]) == 0  # the check passes, nothing is written


def test_eval_of_a_missing_run_folder_is_an_error_not_the_shipped_policy(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    for run in ("runs/hopper-v5-medium-flow_mlp", str(tmp_path / "hopper-v5-medium-flow_mlp")):
        assert main(["eval", f"run={run}", "n_episodes=1", "n_envs=1"]) == 1
        assert f"{run}: no such run or policy folder; shipped policies (named without a folder): hopper-v5-medium-diffusion_mlp" in one_error_line(capsys)
        assert main(["export", f"run={run}"]) == 1
        assert "no such run or policy folder" in one_error_line(capsys)
    assert main(["finetune", "base=runs/hopper-v5-medium-flow_mlp", f"run.dir={tmp_path / 'runs'}"]) == 2
    assert "base=runs/hopper-v5-medium-flow_mlp: runs/hopper-v5-medium-flow_mlp: no such run or policy folder" in one_error_line(capsys)
    assert snapshot(tmp_path) == before and not (tmp_path / "runs").exists()
    assert resolve_policy("hopper-v5-medium-flow_mlp") == POLICIES_DIR / "hopper-v5-medium-flow_mlp"


def test_expert_paths_with_a_folder_are_not_the_shipped_expert(tmp_path):
    with pytest.raises(FileNotFoundError, match="hopper-v5-expert.json: expert file missing"):
        ExpertPolicy.load(tmp_path / "hopper-v5-expert")
    assert (EXPERTS_DIR / "hopper-v5-expert.json").exists()
    assert ExpertPolicy.load("hopper-v5-expert").actor is not None
