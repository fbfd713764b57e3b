"""``kdbts weights``: released checkpoints by name, fetched from a local server laid out like the authors' webshare."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import socket
import threading
import zipfile

import pytest
import torch
from conftest import SMALL_ARCH, official_checkpoint, official_state_dict

from kdbts_ros.commands.cli import main
from kdbts_ros.core.errors import EXIT_USER
from kdbts_ros.core.loading import build_model
from kdbts_ros.core.model import registry as weights_registry
from kdbts_ros.core.model.checkpoint import CheckpointError, load_checkpoint, random_model, save_checkpoint
from kdbts_ros.core.model.network import Architecture
from kdbts_ros.core.model.registry import RELEASES, cache_dir, cached_path
from kdbts_ros.runtime.config import load_runner_config

KDBTS_MEMBER = "kdbts/training_checkpoint_250000.pt"  # where the official configs load them from
MVBTS_MEMBER = "mvbts/training_checkpoint_200000.pt"


def _zip(path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:  # stored: random weights do not compress
        for name, data in members.items():
            zf.writestr(name, data)


def _put(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(scope="module")
def source_model():
    return random_model(SMALL_ARCH, seed=7).eval()


@pytest.fixture(scope="module")
def site(tmp_path_factory, source_model):
    """Base-URL folders, each laid out like the webshare: good, and one per way a download can be wrong."""
    root = tmp_path_factory.mktemp("site")
    official_checkpoint(root / "kdbts.pt", source_model)
    official_checkpoint(root / "bts.pt", source_model, bts=True)
    kdbts = (root / "kdbts.pt").read_bytes()
    _zip(root / "good/kdbts/kitti_360.zip", {"README.txt": b"x", KDBTS_MEMBER: kdbts, MVBTS_MEMBER: kdbts})
    _put(root / "good/kitti-360/training-checkpoint.pt", (root / "bts.pt").read_bytes())
    # the same small archive with one byte of the member's data flipped: its CRC-32 no longer matches
    _zip(root / "corrupt/kdbts/kitti_360.zip", {KDBTS_MEMBER: bytes(range(256)) * 64})
    data = bytearray((root / "corrupt/kdbts/kitti_360.zip").read_bytes())
    data[data.index(bytes(range(256))) + 1000] ^= 0xFF
    (root / "corrupt/kdbts/kitti_360.zip").write_bytes(bytes(data))
    _put(root / "notzip/kdbts/kitti_360.zip", b"<html>a login page, not an archive</html>")
    _zip(root / "nockpt/kdbts/kitti_360.zip", {"README.txt": b"no weights here", "kdbts/config.yaml": b"{}"})
    sd = official_state_dict(source_model)
    del sd["renderer.net.heads.singleviewhead.lin_out.bias"]
    sd["renderer.net.heads.dft.token"] = torch.zeros(1, 1, 32)
    official_checkpoint(root / "partial.pt", sd)
    _zip(root / "partial/kdbts/kitti_360.zip", {KDBTS_MEMBER: (root / "partial.pt").read_bytes()})
    _put(root / "garbage/kitti-360/training-checkpoint.pt", b"not a torch file")
    for name in ("kdbts.pt", "bts.pt", "partial.pt"):
        (root / name).unlink()
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site; paths under /truncated/ promise more bytes than they send, then hang up."""

    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        if self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK" + bytes(30000))
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    """(base URL, list of request paths) of an http.server on 127.0.0.1, ephemeral port."""
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(weights_registry.CACHE_ENV, str(folder))
    monkeypatch.delenv(weights_registry.BASE_URL_ENV, raising=False)
    return folder


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


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


def test_list_names_each_release_its_source_and_whether_it_is_cached(cache, monkeypatch, capsys):
    monkeypatch.setenv(weights_registry.BASE_URL_ENV, "http://mirror.invalid/bts")
    cache.mkdir()
    cached_path("bts-kitti-raw").write_bytes(b"")
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name, release in RELEASES.items():
        row = next(line for line in lines if line.startswith(f"{name} "))
        assert release.model in row and release.dataset in row
        assert (str(cached_path(name)) in row) == (name == "bts-kitti-raw")
        assert f"http://mirror.invalid/bts/{release.path}" in out
    # the two archives of the KDBTS download script and the two files of the BTS one
    assert {r.url("B") for r in RELEASES.values()} == {
        "B/kdbts/kitti_360.zip",
        "B/kdbts/kitti_raw.zip",
        "B/kitti-360/training-checkpoint.pt",
        "B/kitti/training-checkpoint.pt",
    }
    assert str(cache) in lines[-1]


def test_get_downloads_once_imports_and_then_answers_from_the_cache(cache, server, source_model, capsys):
    base, requests = server
    before = len(requests)
    assert main(["weights", "get", "kitti-360", "mvbts-kitti-360", "--url", f"{base}/good"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(cached_path("kitti-360")), str(cached_path("mvbts-kitti-360"))]
    assert requests[before:] == ["/good/kdbts/kitti_360.zip"]  # one archive, both networks
    assert "kitti_360.zip" in err and "100%" in err  # the tqdm bar
    assert _leftovers(cache) == ["kitti-360.safetensors", "mvbts-kitti-360.safetensors"]
    for name, member in (("kitti-360", KDBTS_MEMBER), ("mvbts-kitti-360", MVBTS_MEMBER)):
        model, info = load_checkpoint(name)
        assert model.available_heads == ["sv", "mv"] and model.arch == source_model.arch
        assert info["source"] == f"{base}/good/kdbts/kitti_360.zip:{member}"
        expected = source_model.state_dict()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0)

    stamp = cached_path("kitti-360").stat().st_mtime_ns
    assert main(["weights", "get", "kitti-360", "--url", f"{base}/good"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(cached_path("kitti-360"))] and "cached" in err
    assert len(requests) == before + 1 and cached_path("kitti-360").stat().st_mtime_ns == stamp


def test_bts_release_is_a_bare_checkpoint_without_multi_view_head(cache, server, source_model, monkeypatch, capsys):
    base, _ = server
    monkeypatch.setenv(weights_registry.BASE_URL_ENV, f"{base}/good")  # the environment instead of --url
    assert main(["weights", "get", "bts-kitti-360"]) == 0
    assert capsys.readouterr().out.strip() == str(cached_path("bts-kitti-360"))
    model, info = load_checkpoint("bts-kitti-360")
    assert model.available_heads == ["sv"] and info["source"] == f"{base}/good/kitti-360/training-checkpoint.pt"
    torch.testing.assert_close(
        model.heads["singleviewhead"].lin_in.weight, source_model.heads["singleviewhead"].lin_in.weight, rtol=0, atol=0
    )
    assert _leftovers(cache) == ["bts-kitti-360.safetensors"]


def test_a_release_name_works_wherever_a_checkpoint_is_configured(cache, capsys):
    cache.mkdir()
    small = random_model(Architecture(backbone="resnet18_half", feature_dim=16), seed=2)
    save_checkpoint(cached_path("kitti-raw"), small, {"image_height": 96, "image_width": 320})
    cfg = load_runner_config(overrides={"model.checkpoint": "kitti-raw"})  # node, demo, replay, viz, bench, soak
    model, info = build_model(cfg)
    assert model.arch == small.arch and info["weights"] == "kitti-raw" and info["image_width"] == 320
    with pytest.raises(CheckpointError, match="run 'kdbts weights get bts-kitti-raw'"):
        build_model(load_runner_config(overrides={"model.checkpoint": "bts-kitti-raw"}))
    assert not cached_path("bts-kitti-raw").exists()  # resolving never downloads
    assert main(["eval", str(cache), "--model", "KDBTS=mvbts-kitti-raw"]) == EXIT_USER
    err = capsys.readouterr().err
    assert "mvbts-kitti-raw" in err and "kdbts weights get mvbts-kitti-raw" in err


def _free_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "name,folder,reason",
    [
        ("kitti-360", None, "cannot connect"),
        ("kitti-360", "missing", "HTTP 404"),
        ("kitti-raw", "truncated", "broken off: 30002 of 100000 bytes"),
        ("kitti-360", "corrupt", "corrupt zip archive"),
        ("kitti-360", "notzip", "corrupt zip archive"),
        ("kitti-360", "nockpt", "no member *kdbts/training_checkpoint_*.pt in the archive"),
        ("kitti-360", "partial", "refusing a partially loaded network"),
        ("bts-kitti-360", "garbage", "not the expected checkpoint"),
    ],
)
def test_a_broken_download_fails_in_one_line_and_leaves_nothing(cache, server, capsys, name, folder, reason):
    base = f"{server[0]}/{folder}" if folder else f"http://127.0.0.1:{_free_port()}"
    assert main(["weights", "get", name, "--url", base]) == EXIT_USER
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("kdbts weights:")]
    assert out == "" and len(errors) == 1 and reason in errors[0] and "Traceback" not in err
    assert _leftovers(cache) == []


def test_a_failed_refetch_keeps_the_cached_weights(cache, server, capsys):
    cache.mkdir()
    cached_path("kitti-raw").write_bytes(b"complete weights")
    assert main(["weights", "get", "kitti-raw", "--force", "--url", f"{server[0]}/truncated"]) == EXIT_USER
    assert cached_path("kitti-raw").read_bytes() == b"complete weights"
    assert _leftovers(cache) == ["kitti-raw.safetensors"]


@pytest.mark.parametrize("field,wrong", [("sha256", False), ("sha256", True), ("size", False), ("size", True)])
def test_a_published_size_or_hash_is_checked_before_the_archive_is_opened(
    cache, server, site, monkeypatch, capsys, field, wrong
):
    data = (site / "corrupt/kdbts/kitti_360.zip").read_bytes()
    value = hashlib.sha256(data + b"x" * wrong).hexdigest() if field == "sha256" else len(data) + wrong
    monkeypatch.setitem(RELEASES, "kitti-360", dataclasses.replace(RELEASES["kitti-360"], **{field: value}))
    assert main(["weights", "get", "kitti-360", "--url", f"{server[0]}/corrupt"]) == EXIT_USER
    err = capsys.readouterr().err
    # a matching value lets the download through to the archive check, which this archive fails
    assert ("the release's" in err) == wrong and ("corrupt zip archive" in err) != wrong
    assert _leftovers(cache) == []
