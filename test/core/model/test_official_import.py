"""Official checkpoints: key mapping, shape-derived architecture, refusals, same outputs."""

import pickle

import pytest
import torch
from conftest import SMALL_ARCH, official_checkpoint

from kdbts_ros.commands.cli import main
from kdbts_ros.core.lens import KITTI_360, KITTI_RAW, CanonicalCamera
from kdbts_ros.core.model.checkpoint import CheckpointError, load_checkpoint, random_model
from kdbts_ros.core.model.network import Architecture, Views
from kdbts_ros.core.model.official import import_official, official_camera
from kdbts_ros.core.model.registry import RELEASES


def _outputs(model):
    torch.manual_seed(1)
    feats = torch.randn(1, 2, model.arch.feature_dim, 8, 24)
    Kn = torch.tensor([[1.16, 0, -0.02], [0, 3.85, -0.08], [0, 0, 1]]).expand(1, 2, 3, 3)
    w2c = torch.eye(4).expand(1, 2, 4, 4).clone()
    w2c[0, 1, 0, 3] = -0.5
    pts = torch.rand(1, 100, 3) * torch.tensor([6.0, 1.0, 20.0]) + torch.tensor([-3.0, 0.0, 3.0])
    with torch.no_grad():
        return {h: model.density(pts, Views(feats, Kn, w2c), h)[0] for h in model.available_heads}


@pytest.mark.parametrize("arch", [SMALL_ARCH, Architecture(backbone="resnet34", mv_hidden=256, mv_feature_dim=32)])
def test_official_kdbts_checkpoint_imports_completely_with_same_outputs(tmp_path, arch):
    src = random_model(arch, seed=3).eval()
    official_checkpoint(tmp_path / "training_checkpoint_250000.pt", src)
    model, report = import_official(tmp_path / "training_checkpoint_250000.pt")
    assert report.missing == [] and report.unexpected == [] and report.heads == ["sv", "mv"]
    assert sorted(report.ignored) == ["renderer.renderer.iter_idx", "renderer.renderer.last_sched"]
    assert model.arch == arch  # backbone and head widths read from the shapes
    a, b = _outputs(src), _outputs(model.eval())
    for h in ("sv", "mv"):
        torch.testing.assert_close(a[h], b[h], rtol=0, atol=0)
        assert torch.all(torch.isfinite(b[h]))


def test_kdbts_import_command_writes_a_loadable_checkpoint(tmp_path, capsys):
    src = random_model(SMALL_ARCH, seed=4).eval()
    official_checkpoint(tmp_path / "bts.pt", src, bts=True)
    assert main(["import", str(tmp_path / "bts.pt"), str(tmp_path / "bts.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "heads present: sv" in out and "heads.multiviewhead3." in out
    model, info = load_checkpoint(tmp_path / "bts.safetensors")
    assert model.available_heads == ["sv"] and info["imported_from"] == "official"
    # the path names no data set: KITTI-360's camera, said so
    assert "taken as trained in KITTI-360's camera" in out
    assert info["camera"] == CanonicalCamera.from_normalised(KITTI_360, 640, 192).record()
    (tmp_path / "kitti").mkdir()
    official_checkpoint(tmp_path / "kitti" / "bts.pt", src, bts=True)
    assert main(["import", str(tmp_path / "kitti" / "bts.pt"), str(tmp_path / "raw.safetensors")]) == 0
    assert load_checkpoint(tmp_path / "raw.safetensors")[1]["camera"]["fy"] == KITTI_RAW[1]
    assert main(["import", str(tmp_path / "bts.pt"), str(tmp_path / "b.safetensors"), "--camera", "kitti-raw"]) == 0
    assert load_checkpoint(tmp_path / "b.safetensors")[1]["camera"]["fy"] == KITTI_RAW[1]
    torch.testing.assert_close(_outputs(model.eval())["sv"], _outputs(src)["sv"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="no 'mv' head"):
        model.density(
            torch.zeros(1, 1, 3),
            Views(torch.zeros(1, 1, 64, 4, 4), torch.eye(3)[None, None], torch.eye(4)[None, None]),
            "mv",
        )


def test_releases_and_checkpoint_names_say_their_official_camera():
    assert {n: r.camera for n, r in RELEASES.items()} == {n: official_camera(n) for n in RELEASES}
    assert official_camera("weights/kitti_360/kdbts/training_checkpoint_1.pt") == "kitti-360"
    assert official_camera("https://x/kdbts/kitti_raw.zip:kdbts/training_checkpoint_1.pt") == "kitti-raw"
    assert official_camera("/tmp/run/model.pt") is None


def test_unexpected_keys_are_reported_and_nothing_is_written(tmp_path, capsys):
    src = random_model(SMALL_ARCH, seed=5)
    official_checkpoint(tmp_path / "x.pt", src)
    cp = torch.load(tmp_path / "x.pt", weights_only=True)
    cp["model"]["renderer.net.heads.dft.token"] = torch.zeros(1, 1, 32)
    torch.save(cp, tmp_path / "x.pt")
    assert main(["import", str(tmp_path / "x.pt"), str(tmp_path / "x.safetensors")]) == 1
    assert "UNEXPECTED (not in the network): heads.dft.token" in capsys.readouterr().out
    assert not (tmp_path / "x.safetensors").exists()


class _Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['KDBTS_PWNED'], 'w').write('pwned')",))


def test_hostile_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("KDBTS_PWNED", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"model": {"renderer.net.x": torch.zeros(1)}, "trainer": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        import_official(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError):
        import_official(path)
