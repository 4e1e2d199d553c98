"""ADG (`rlft data repair --method adg`): windows repeat episode edges, the DDPM losses honour the ambient level
floor and the mask, detection finds large spikes in smooth trajectories, repair moves them back to the clean
values, a cut run resumes exactly, and bad input is one line."""

import json
import shutil

import numpy as np
import pytest
import torch
from test_corrupt import _image_store, smooth_store

from rlft.algos.adg import window_rows
from rlft.cli import main
from rlft.datasets.store import EpisodeStore, write_episodes
from rlft.policies.heads import Diffusion
from rlft.runtime.run import read_metrics

SMALL = ["adg.backbone.hidden=64", "adg.diffusion_steps=20", "adg.ambient_level=6", "adg.lr=0.002", "train.batch_size=128", "train.log_every=50"]


def test_windows_repeat_the_episode_edges(tmp_path):
    store = EpisodeStore(smooth_store(tmp_path / "s.zarr", episodes=2, length=4))
    rows = window_rows(store, 2)
    assert rows.shape == (8, 5)
    np.testing.assert_array_equal(rows[0], [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(rows[3], [1, 2, 3, 3, 3])
    np.testing.assert_array_equal(rows[4], [4, 4, 4, 5, 6])  # never across episodes


class _Recorder(torch.nn.Module):
    """A 'denoiser' that predicts zero noise and records the levels it was asked about."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.times: list[torch.Tensor] = []

    def forward(self, x, t, cond):
        self.times.append(t)
        return x * self.w


def test_ddpm_loss_floor_on_levels_and_mask_over_steps():
    head = Diffusion(_Recorder(), train_steps=100, steps=100, clip_x0=0.0)
    torch.manual_seed(0)
    head.loss(torch.zeros(2000, 3, 2), torch.zeros(2000, 0), min_level=30)
    levels = head.net.times[-1] * 100
    assert levels.min().item() == pytest.approx(30) and levels.max().item() == pytest.approx(99)
    x0 = torch.zeros(4, 3, 2)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1], [0, 0, 0], [0, 1, 1]], dtype=torch.bool)
    torch.manual_seed(1)
    masked = head.loss(x0, torch.zeros(4, 0), mask=mask)
    torch.manual_seed(1)
    torch.randint(0, 100, (4,))
    eps = torch.randn_like(x0)  # the zero predictor's error is the noise itself
    per_step = (eps**2).mean(2)
    expected = [per_step[0, 0], per_step[1].mean(), 0.0, per_step[3, 1:].mean()]
    np.testing.assert_allclose(masked.detach().numpy(), torch.tensor(expected).numpy(), rtol=1e-6)


@pytest.fixture(scope="module")
def spiked(tmp_path_factory):
    """Smooth trajectories with large spikes (+-4 std on both observation dims) at 4% of the steps, recorded as
    `rlft data corrupt` records its rows."""
    root = tmp_path_factory.mktemp("adg")
    clean = EpisodeStore(smooth_store(root / "clean.zarr", episodes=20, length=50))
    data = {k: clean[k].copy() for k in clean.keys}
    g = np.random.default_rng(1)
    rows = np.sort(g.choice(clean.n_steps, 40, replace=False))
    data["obs"][rows] += (4.0 * data["obs"].std(0) * g.choice([-1, 1], size=(len(rows), 2))).astype(np.float32)
    write_episodes(root / "spiked.zarr", data, clean.episode_ends, {"corruption": {"kind": "spikes", "on": "obs", "rows": {"obs": rows.tolist()}}})
    return root


def test_adg_detects_the_spikes_and_repairs_them_toward_the_clean_values(spiked, capsys):
    args = ["data", "repair", str(spiked / "spiked.zarr"), "--method", "adg", "--out", str(spiked / "repaired.zarr"), *SMALL]
    assert main([*args, "train.steps=600", "train.checkpoint_every=600", f"run.dir={spiked / 'runs'}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    clean, spikes, repaired = (EpisodeStore(spiked / f"{n}.zarr") for n in ("clean", "spiked", "repaired"))
    record = repaired.meta["repair"]
    assert printed["run"] == str(spiked / "runs" / "repair-adg-spiked") and record["detection"] == printed["detection"]
    assert printed["detection"]["precision"] >= 0.9 and printed["detection"]["recall"] >= 0.9, printed
    flagged = np.asarray(record["rows"])
    assert printed["flagged"] == len(flagged) and repaired.meta["corruption"] == spikes.meta["corruption"]
    others = np.setdiff1d(np.arange(clean.n_steps), flagged)
    for key in clean.keys:  # only flagged steps change
        np.testing.assert_array_equal(repaired[key][others], spikes[key][others])
    caught = np.intersect1d(flagged, spikes.meta["corruption"]["rows"]["obs"])
    before, after = (np.abs(s["obs"][caught] - clean["obs"][caught]).mean() for s in (spikes, repaired))
    assert after < 0.35 * before, (before, after)
    rows = read_metrics(spiked / "runs" / "repair-adg-spiked")
    assert "ambient_loss" in rows[0] and "clean_loss" in rows[-1] and rows[-1]["step"] == 1200
    assert any(r.get("recall") == printed["detection"]["recall"] for r in rows)  # logged when the clean DDPM starts


def test_a_cut_repair_resumes_exactly(spiked, tmp_path, capsys):
    def args(name: str) -> list[str]:
        out = ["data", "repair", str(spiked / "spiked.zarr"), "--method", "adg", "--out", str(tmp_path / f"{name}.zarr"), *SMALL]
        return [*out, "train.steps=40", "train.log_every=10", "train.checkpoint_every=20", f"run.dir={tmp_path}", f"run.name={name}"]

    for name in ("full", "cut"):
        assert main(args(name)) == 0
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_000000080")  # killed during the clean DDPM, after step 60
    shutil.rmtree(tmp_path / "cut.zarr")
    capsys.readouterr()
    assert main([*args("cut"), "--resume"]) == 0
    assert read_metrics(tmp_path / "cut") == read_metrics(tmp_path / "full")
    full, cut = EpisodeStore(tmp_path / "full.zarr"), EpisodeStore(tmp_path / "cut.zarr")
    for key in full.keys:
        np.testing.assert_array_equal(full[key], cut[key])
    assert main([*args("full"), "--force"]) == 2  # the run folder exists: --resume or another run.name
    assert "add --resume to continue it" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, code, words",
    [
        (["IMAGE"], 1, "corruption and ADG repair handle flat float state keys only"),
        (["EXISTS"], 2, "already exists; choose another output or add --force"),
        (["adg.ambient_level=100"], 2, "adg.ambient_level=100: must be in 0..diffusion_steps - 1 (99)"),
        (["adg.elements=[obs,next_obs]"], 2, "adg.elements=['obs', 'next_obs']: must be distinct names among obs, action, reward"),
        (["train.stepz=3"], 2, "unknown config key 'train.stepz'"),
        (["MISSING"], 1, "no such file or folder"),
    ],
)
def test_bad_repair_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, code, words):
    src = smooth_store(tmp_path / "clean.zarr", episodes=2, length=20)
    out = tmp_path / "out.zarr"
    if "IMAGE" in extra:
        src = _image_store(tmp_path / "image.zarr")
    if "EXISTS" in extra:
        out.mkdir()
    if "MISSING" in extra:
        src = tmp_path / "nowhere" / "x.zarr"
    overrides = [e for e in extra if "=" in e]
    assert main(["data", "repair", str(src), "--method", "adg", "--out", str(out), f"run.dir={tmp_path / 'runs'}", *overrides]) == code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err, err
    assert ("EXISTS" in extra) == out.exists() and not (tmp_path / "runs").exists()
