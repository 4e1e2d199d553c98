"""IQL through the registry: it learns the good mode of the two-mode bandit, a zero temperature is plain BC,
its run evaluates through `rlft eval`, and an interrupted run resumes exactly."""

import numpy as np
import pytest
import torch
from test_offline import bandit  # noqa: F401  (the two-mode bandit fixture)

from rlft.algos.iql import awr_weights, reward_scale
from rlft.cli import main
from rlft.datasets.store import EpisodeStore
from rlft.runtime.checkpoint import load_policy
from rlft.runtime.run import read_metrics

SMALL = ["algo=iql", "data.env=null", "algo.policy.backbone.hidden=64", "algo.critic.hidden=32", "algo.lr=0.002", "train.batch_size=128", "train.log_every=50"]


def test_awr_weights_and_reward_scale(bandit):  # noqa: F811
    w = awr_weights(torch.tensor([1.0, 0.0, 50.0]), torch.tensor([0.5, 0.5, 0.0]), temperature=3.0, max_weight=100.0)
    assert w.tolist() == pytest.approx([np.exp(1.5), np.exp(-1.5), 100.0])
    assert reward_scale(EpisodeStore(bandit)) == pytest.approx(1000.0)  # one-step episodes with returns 0 and 1


@pytest.mark.parametrize("temperature, expect", [(3.0, "good"), (0.0, "both")])
def test_iql_picks_the_good_mode_and_zero_temperature_is_bc(bandit, tmp_path, temperature, expect):  # noqa: F811
    args = [*SMALL, f"data.path={bandit}", f"algo.temperature={temperature}", "train.steps=300", "train.checkpoint_every=300", "eval.episodes=0"]
    assert main(["offline", *args, f"run.dir={tmp_path}", "run.name=b"]) == 0
    policy = load_policy(tmp_path / "b")
    torch.manual_seed(0)
    actions = policy.sample(torch.zeros(1000, 2), stochastic=True)[:, 0, 0]
    good, bad = (actions > 0.3).float().mean().item(), (actions < -0.3).float().mean().item()
    if expect == "good":
        assert good > 0.8 and bad < 0.1, (good, bad)
    else:  # equal weights: imitates both modes
        assert 0.2 < bad < 0.6 and good < 0.6, (good, bad)


def test_iql_run_acts_with_q_selection_and_resumes_exactly(bandit, tmp_path, capsys):  # noqa: F811
    import shutil

    from rlft.algos.offline import QSelect
    from rlft.algos.registry import LoadOptions, load_acting_policy

    args = [*SMALL, f"data.path={bandit}", "algo.select.candidates=4", "train.steps=100", "train.checkpoint_every=50", "eval.episodes=0"]
    for name in ("full", "cut"):
        assert main(["offline", *args, f"run.dir={tmp_path}", f"run.name={name}"]) == 0
    expected = read_metrics(tmp_path / "full")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_000000100")  # killed after the checkpoint at step 50
    assert main(["offline", *args, f"run.dir={tmp_path}", "run.name=cut", "--resume"]) == 0
    assert read_metrics(tmp_path / "cut") == expected
    acting = load_acting_policy(tmp_path / "full")
    assert isinstance(acting, QSelect) and acting.candidates == 4 and acting.rule == "max"
    assert not isinstance(load_acting_policy(tmp_path / "full", options=LoadOptions(select_candidates=1)), QSelect)
    capsys.readouterr()
    assert main(["eval", f"run={tmp_path / 'full'}", "n_episodes=1", "weights=ema"]) == 2
    assert "keeps no EMA weights" in capsys.readouterr().err
