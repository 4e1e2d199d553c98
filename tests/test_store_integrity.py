"""Damaged stores are errors, never different numbers: checksums written with every store, checked on open
(chunk files and sizes) and on every read (sha256 of the values); `rlft data info --verify` and training read all."""

import json
import shutil
import zipfile

import numpy as np
import pytest
import zarr

from conftest import make_episodes, one_error_line, snapshot
from rlft.cli import main
from rlft.datasets.store import EpisodeStore, merge_stores, write_episodes
from rlft.errors import DatasetError

SHIPPED = ["hopper-v5-expert", "hopper-v5-medium", "walker2d-v5-expert", "walker2d-v5-medium"]


def write(path, reward_scale=1.0):
    data, ends = make_episodes([20, 30, 25], obs_dim=4, seed=1)
    data["reward"] = data["reward"] * reward_scale
    return write_episodes(path, data, ends, {"env": "pointmass"}, chunk_steps=32)


def drop_member(zip_path, member):
    """Rewrite a zip store without one of its files (what deleting a chunk is for a directory store)."""
    with zipfile.ZipFile(zip_path) as zf:
        kept = {i.filename: zf.read(i.filename) for i in zf.infolist() if i.filename != member}
    assert len(kept) == len(zipfile.ZipFile(zip_path).infolist()) - 1
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, raw in kept.items():
            zf.writestr(name, raw)


@pytest.mark.parametrize("name", ["s.zarr", "s.zarr.zip"])
def test_written_stores_verify(tmp_path, capsys, name):
    write(tmp_path / name)
    assert main(["data", "info", str(tmp_path / name), "--verify", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checksums"] is True and info["verified"] is True and info["steps"] == 75
    assert main(["data", "info", str(tmp_path / name), "--verify"]) == 0
    assert "checksums: every array verified" in capsys.readouterr().out


@pytest.mark.parametrize("chunk", ["data/obs/c/0/0", "data/reward/c/1", "meta/episode_ends/c/0"])
@pytest.mark.parametrize("name", ["s.zarr", "s.zarr.zip"])
def test_a_missing_chunk_is_an_error_not_fill_values(tmp_path, capsys, name, chunk):
    path = tmp_path / name
    write(path)
    if path.is_dir():
        (path / chunk).unlink()
    else:
        drop_member(path, chunk)
    before = snapshot(tmp_path)
    assert main(["data", "info", str(path)]) == 1
    assert f"chunk {chunk} is missing; the store is damaged" in one_error_line(capsys)
    assert snapshot(tmp_path) == before


def test_changed_chunk_bytes_are_an_error_when_read(tmp_path, capsys):
    write(tmp_path / "a.zarr")
    write(tmp_path / "b.zarr", reward_scale=0.5)
    chunk = "data/reward/c/1"  # a valid chunk of the same size with other values (rewards 0.5, not 1)
    assert (tmp_path / "a.zarr" / chunk).stat().st_size == (tmp_path / "b.zarr" / chunk).stat().st_size
    shutil.copyfile(tmp_path / "b.zarr" / chunk, tmp_path / "a.zarr" / chunk)
    before = snapshot(tmp_path)
    assert main(["data", "info", str(tmp_path / "a.zarr")]) == 1  # info reads the rewards (for returns)
    assert "data/reward differs from its checksum" in one_error_line(capsys)
    assert snapshot(tmp_path) == before


def test_a_flipped_byte_is_found_by_verify(tmp_path, capsys):
    path = tmp_path / "s.zarr"
    write(path)
    chunk = path / "data/obs/c/1/0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    assert main(["data", "info", str(path)]) == 0  # the fast check (files and sizes) passes: obs is not read
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main(["data", "info", str(path), "--verify"]) == 1
    err = one_error_line(capsys)
    assert "data/obs" in err and "damaged" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["pretrain", "offline"])
def test_training_refuses_a_damaged_store_before_writing_anything(tmp_path, capsys, command):
    path = tmp_path / "s.zarr"
    write(path)
    write(tmp_path / "other.zarr", reward_scale=0.5)
    shutil.copyfile(tmp_path / "other.zarr/data/reward/c/0", path / "data/reward/c/0")
    before = snapshot(tmp_path)
    args = [command, "env=pointmass", f"data.path={path}", "data.env=pointmass", f"run.dir={tmp_path / 'runs'}", "eval.episodes=0"]
    assert main(args) == 1
    assert "data/reward differs from its checksum" in one_error_line(capsys)
    assert snapshot(tmp_path) == before and not (tmp_path / "runs").exists()


def test_stores_without_checksums_open_and_verify_says_so(tmp_path, capsys):
    root = zarr.open_group(str(tmp_path / "pusht.zarr"), mode="w", zarr_format=2)  # Diffusion Policy's layout, no checksums
    root.create_array("data/state", data=np.arange(14, dtype=np.float32).reshape(7, 2))
    root.create_array("meta/episode_ends", data=np.array([3, 7]))
    store = EpisodeStore(tmp_path / "pusht.zarr")
    assert not store.has_checksums and store["state"][6, 1] == 13
    before = snapshot(tmp_path)
    assert main(["data", "info", str(tmp_path / "pusht.zarr"), "--verify"]) == 1
    assert "no checksums to verify against" in one_error_line(capsys)
    assert snapshot(tmp_path) == before


def test_shipped_stores_carry_checksums():
    for name in SHIPPED:
        store = EpisodeStore(name)
        assert store.has_checksums and "checksums" not in store.meta
        store.verify()


def test_malformed_checksums_or_an_added_array_are_errors(tmp_path):
    path = tmp_path / "s.zarr"
    write(path)
    root = zarr.open_group(str(path), mode="a")
    root.create_array("data/extra", data=np.zeros(75, np.float32))
    with pytest.raises(DatasetError, match="data/extra has no checksum"):
        EpisodeStore(path)
    root.attrs["checksums"] = {"data/obs": "0" * 64}
    with pytest.raises(DatasetError, match="'checksums' attribute is malformed"):
        EpisodeStore(path)


def test_merge_writes_its_own_checksums(tmp_path):
    write(tmp_path / "a.zarr")
    write(tmp_path / "b.zarr.zip", reward_scale=2.0)
    merged = merge_stores([tmp_path / "a.zarr", tmp_path / "b.zarr.zip"], tmp_path / "m.zarr")
    EpisodeStore(merged.path).verify()
    assert EpisodeStore(merged.path).episode_returns()[-1] == 50.0  # the last episode (25 steps) came from b, rewards 2
