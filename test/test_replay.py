"""kdbts replay: a converted KITTI bag through the node's runner, outputs beside the inputs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import KITTI_SAMPLE, needs_kitti, small_config
from test_kitti_bag import read_bag
from kdbts_ros.cli import main
from kdbts_ros.config import load_config
from kdbts_ros.data import shared_sample
from kdbts_ros.data.kitti_bag import KITTI, KITTI360, write_recording_bag
from kdbts_ros.replay import replay

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("/kdbts/occupancy", "/kdbts/points", "/kdbts/depth", "/kdbts/depth/camera_info", "/kdbts/density_grid")


def test_presets_name_the_converted_topics_and_frames():
    for preset, conv, streams in (("kitti_raw", KITTI, ("camera_color_left", "camera_color_right")),
                                  ("kitti360", KITTI360, ("cam_00", "cam_01"))):
        cfg = load_config(ROOT / "config" / f"{preset}.yaml")
        assert cfg.fixed_frame == conv.fixed_frame == "world"
        for stream, image, info in zip(streams, cfg.topics.images, cfg.topics.camera_infos, strict=True):
            assert stream in image and image.startswith(conv.image_topic.split("{")[0])
            assert info == image.rsplit("/", 1)[0] + "/camera_info"


@needs_kitti
def test_replay_of_the_real_sample_with_the_embedded_network(tmp_path, capsys):
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    write_recording_bag(rec, tmp_path / "in", KITTI, max_frames=3, progress=False)
    assert main(["replay", str(tmp_path / "in"), str(tmp_path / "out"), "--config",
                 str(ROOT / "config/kitti_raw.yaml"), "--png", str(tmp_path / "png")]) == 0
    printed = capsys.readouterr().out
    assert "frames processed: 3" in printed and "dropped: none" in printed
    inputs, _ = read_bag(tmp_path / "in")
    outputs, _ = read_bag(tmp_path / "out")
    count = lambda msgs, topic: sum(t == topic for t, _, _ in msgs)  # noqa: E731
    for topic in {t for t, _, _ in inputs}:
        assert count(outputs, topic) == count(inputs, topic), topic
    for topic in OUTPUTS:
        assert count(outputs, topic) == 3, topic
    assert count(outputs, "/diagnostics") >= 1
    image_stamps = [m.header.stamp for t, _, m in inputs if t.endswith("image_raw")]
    depth = [m for t, _, m in outputs if t == "/kdbts/depth"]
    assert [d.header.stamp for d in depth] == image_stamps
    assert depth[0].header.frame_id == "camera_color_left"
    values = np.frombuffer(depth[0].data, "<f4")
    assert np.all(np.isfinite(values)) and values.min() >= 3.0 - 1e-3
    occupancy = [m for t, _, m in outputs if t == "/kdbts/occupancy"][0]
    assert occupancy.header.frame_id == "world"
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 6 and all(cv2.imread(str(p)) is not None for p in pngs)


@needs_kitti
def test_replay_refuses_a_bag_without_the_configured_topics_and_never_duplicates_outputs(tmp_path):
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    write_recording_bag(rec, tmp_path / "in", KITTI, max_frames=2, velodyne=False, progress=False)
    with pytest.raises(ValueError, match="no topic /camera/image_raw"):
        replay(small_config(), tmp_path / "in", tmp_path / "x")
    cfg = small_config(**{"fixed_frame": "world", "topics.images": ["/kitti/camera_color_left/image_raw"],
                          "topics.camera_infos": ["/kitti/camera_color_left/camera_info"]})
    first = replay(cfg, tmp_path / "in", tmp_path / "out1", progress=False)
    assert first.processed == 2 and first.drops == {} and first.written["/kdbts/depth"] == 2
    # replaying the replay's output: its old outputs are left out, new ones written once
    second = replay(cfg, tmp_path / "out1", tmp_path / "out2", "sqlite3", progress=False)
    assert second.processed == 2 and second.written["/kdbts/depth"] == 2
    assert second.skipped["/kdbts/depth"] == 2


@needs_kitti
def test_kitti360_stereo_pair_replays_with_the_multi_view_head(tmp_path):
    rec = shared_sample.kitti360_sample(KITTI_SAMPLE)
    write_recording_bag(rec, tmp_path / "in", KITTI360, max_frames=4, velodyne=False, progress=False)
    result = replay(load_config(ROOT / "config/kitti360.yaml"), tmp_path / "in", tmp_path / "out", progress=False)
    posed = sum(f.T_world_base is not None for f in rec.frames[:4])
    # the unposed rig frame waits for TF that never comes: its left image is counted as such, its
    # right one as superseded by the next rig frame; the others use both cameras
    assert result.processed == posed and result.drops == {"tf_unknown_frame": 4 - posed, "superseded": 4 - posed}
    assert result.faults == {}
    outputs, _ = read_bag(tmp_path / "out")
    grids = [m for t, _, m in outputs if t == "/kdbts/density_grid"]
    assert len(grids) == posed and all(g.head == "mv" for g in grids)
    # the pair now, plus the keyframes of earlier rig frames that see the grid (the sample's frames are far apart)
    assert all(g.num_views >= 2 for g in grids)
