"""Released checkpoints by name: the cache folder and name resolution wherever a checkpoint is loaded."""
from __future__ import annotations

import pytest

from kdbts_ros import weights_registry
from kdbts_ros.cli import main
from kdbts_ros.config import load_config
from kdbts_ros.core.model.checkpoint import CheckpointError, random_model, save_checkpoint
from kdbts_ros.core.model.network import Architecture
from kdbts_ros.core.pipeline import build_model
from kdbts_ros.weights_registry import cache_dir, cached_path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(weights_registry.CACHE_ENV, str(folder))
    monkeypatch.delenv(weights_registry.BASE_URL_ENV, raising=False)
    return folder


def test_cache_folder_follows_xdg_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv(weights_registry.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home/.cache/kdbts_ros"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/invalid")
    assert cache_dir() == tmp_path / "home/.cache/kdbts_ros"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cached_path("kitti-360") == tmp_path / "xdg/kdbts_ros/kitti-360.safetensors"
    monkeypatch.setenv(weights_registry.CACHE_ENV, str(tmp_path / "mine"))
    assert cached_path("kitti-360") == tmp_path / "mine/kitti-360.safetensors"


def test_a_release_name_works_wherever_a_checkpoint_is_configured(cache, capsys):
    cache.mkdir()
    small = random_model(Architecture(backbone="resnet18_half", feature_dim=16), seed=2)
    save_checkpoint(cached_path("kitti-raw"), small, {"image_height": 96, "image_width": 320})
    cfg = load_config(overrides={"model.checkpoint": "kitti-raw"})  # node, demo, replay, viz, bench, soak
    model, info = build_model(cfg)
    assert model.arch == small.arch and info["weights"] == "kitti-raw" and info["image_width"] == 320
    with pytest.raises(CheckpointError, match="run 'kdbts weights get bts-kitti-raw'"):
        build_model(load_config(overrides={"model.checkpoint": "bts-kitti-raw"}))
    assert not cached_path("bts-kitti-raw").exists()  # resolving never downloads
    assert main(["eval", str(cache), "--model", "KDBTS=mvbts-kitti-raw"]) == 1
    err = capsys.readouterr().err
    assert "mvbts-kitti-raw" in err and "kdbts weights get mvbts-kitti-raw" in err
