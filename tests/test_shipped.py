"""The shipped datasets and experts are what the README says they are."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rlft.cli import main
from rlft.datasets.store import EpisodeStore
from rlft.paths import DATASETS_DIR as ASSETS_DIR
from rlft.policies.expert import ExpertPolicy

ROOT = Path(__file__).resolve().parent.parent


def readme_rows() -> list[list[str]]:
    """Rows of the README table under '## Shipped data' whose first cell is a dataset name."""
    text = (ROOT / "README.md").read_text().split("## Shipped data", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("| `")]
    return [r for r in rows if r[0].endswith(("-medium", "-expert", "-medium-replay", "-mixed"))]


def test_readme_lists_every_shipped_dataset():
    shipped = sorted(p.name.removesuffix(".zarr.zip") for p in ASSETS_DIR.glob("*.zarr.zip"))
    assert sorted(r[0] for r in readme_rows()) == shipped
    assert {"hopper-v5-medium", "hopper-v5-expert", "walker2d-v5-medium", "walker2d-v5-expert"} <= set(shipped)
    assert sum(p.stat().st_size for p in ASSETS_DIR.glob("*.zarr.zip")) < 40 * 2**20  # the wheel stays small


@pytest.mark.parametrize("row", readme_rows(), ids=lambda r: r[0])
def test_data_info_prints_the_readme_numbers(row, capsys):
    name, episodes, steps, ret = row[0], int(row[1]), int(row[2]), float(row[3])
    assert main(["data", "info", name]) == 0
    out = capsys.readouterr().out
    assert f"{episodes} episodes, {steps} steps" in out
    assert re.search(rf"return: mean {ret:.1f}\b", out)


@pytest.mark.parametrize("env", ["hopper", "walker2d"])
def test_shipped_safety_data_spans_safe_and_unsafe(env):
    """DSRL's recipe: some episodes within the cost limit of 10, many far above it, in the task the config names."""
    store = EpisodeStore(f"{env}-vel-v5-mixed")
    costs = store.episode_costs()
    assert store.meta["env"] == f"{env}_vel" and (costs <= 10).sum() >= 10 and (costs > 100).sum() >= 10
    assert main(["offline", "algo=fisor", f"data={env}_vel_mixed", f"env={env}_vel", "--print-config"]) == 0


@pytest.mark.parametrize("env", ["hopper", "walker2d"])
def test_shipped_expert_is_better_than_medium(env):
    expert, medium = EpisodeStore(f"{env}-v5-expert"), EpisodeStore(f"{env}-v5-medium")
    ref = expert.meta["ref_returns"]
    assert ref == medium.meta["ref_returns"]
    assert np.mean(medium.episode_returns()) < np.mean(expert.episode_returns())
    # D4RL's medium policies reach about a third to a half of the expert's return
    assert 30 < medium.normalized_score(np.mean(medium.episode_returns())) < 60
    pol = ExpertPolicy.load(f"{env}-v5-expert")
    assert pol.sample(torch.as_tensor(expert["obs"][:4]).unsqueeze(1)).shape == (4, 1, expert.keys["action"][0])


def readme_policy_rows() -> list[list[str]]:
    """Rows of the README table under '## Shipped policies'."""
    text = (ROOT / "README.md").read_text().split("## Shipped policies", 1)[1].split("\n## ", 1)[0]
    return [[c.strip().strip("`") for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("| `")]


def test_shipped_policies_are_the_readme_ones_and_load():

    from rlft.runtime.checkpoint import POLICIES_DIR, load_policy, read_spec

    rows = readme_policy_rows()
    shipped = sorted(d.name for d in POLICIES_DIR.iterdir() if d.is_dir())
    assert sorted(r[0] for r in rows) == shipped and len(shipped) >= 3
    for row in rows:
        meta = read_spec(row[0])["meta"]
        assert meta["env"] == "hopper" and meta["data"] == "hopper-v5-medium"
        assert int(row[2]) == meta["eval"]["steps"] and float(row[3]) == round(meta["eval"]["return_mean"], 1)
        policy = load_policy(row[0])
        assert policy.act(torch.zeros(2, 11)).shape == (2, policy.act_steps, 3)
    assert sum(p.stat().st_size for p in POLICIES_DIR.rglob("*") if p.is_file()) < 10 * 2**20
