"""`kdbts demo` end to end: the bag it writes decodes and holds every output; the PNGs and the figure exist."""

import cv2
import numpy as np
import pytest
from conftest import KITTI_SAMPLE as KITTI
from conftest import above_legend, needs_kitti, small_config, view_panel
from rosbags.rosbag2 import Reader

from kdbts_ros.commands.cli import main
from kdbts_ros.core.lens import Lens
from kdbts_ros.core.loading import EMBEDDED_CHECKPOINT, checkpoint_camera
from kdbts_ros.core.model.checkpoint import load_checkpoint
from kdbts_ros.data.sequences import KITTI_DRIVE, kitti_sample, synthetic_sample
from kdbts_ros.messages import cdr
from kdbts_ros.runtime.demo import run_demo
from kdbts_ros.runtime.legends import UNKNOWN_BGR, legend_height
from kdbts_ros.runtime.pictures import caption_scale

pytestmark = pytest.mark.integration


def test_demo_on_a_procedural_street_writes_a_decodable_bag(tmp_path):
    cfg = small_config()
    seq = synthetic_sample(3, width=320, height=96)
    result = run_demo(cfg, tmp_path, seq)
    assert result["frames"] == 3 and result["drops"] == {}
    # the network's view of the last frame (192 x 64) at the frame's width over its depth, the profile as a
    # square of their height
    h = round(320 * 64 / 192)
    bar = legend_height(caption_scale(h))  # each column over its colour bar
    assert cv2.imread(str(result["files"]["figure_png"])).shape == (2 * h + bar, 320 + 2 * h, 3)
    np.testing.assert_array_equal(
        cv2.imread(str(result["files"]["input_png"])), cv2.cvtColor(seq.images[-1], cv2.COLOR_RGB2BGR)
    )
    seen: dict[str, int] = {}
    last: dict[str, object] = {}
    with Reader(result["files"]["bag"]) as reader:
        assert list(result["files"]["bag"].glob("*.mcap"))
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
        for conn, _, data in reader.messages():
            msg = cdr.deserialize(data, conn.msgtype)
            seen[conn.topic] = seen.get(conn.topic, 0) + 1
            last[conn.topic] = msg
    assert seen["/kdbts/occupancy"] == seen["/kdbts/points"] == seen["/kdbts/depth/image"] == 3
    assert seen[cfg.topics.depth_confidence] == 3
    assert seen["/kdbts/density_grid"] == 3 and seen["/tf_static"] == 1
    assert "TRANSIENT_LOCAL" in str(qos["/tf_static"][0].durability)
    # the PNGs show the last frame's outputs, as they went into the bag: depth as magma on normalised inverse
    # depth, occupancy 4 pixels a cell, far at the top, unknown cells grey
    d, c = last["/kdbts/depth/image"], last[cfg.topics.depth_confidence]
    depth = np.frombuffer(d.data, "<f4").reshape(d.height, d.width)
    confidence = np.frombuffer(c.data, "<f4").reshape(c.height, c.width)
    # NaN where no more than render.min_opacity of a ray's light is stopped (the demo camera sees all its pixels)
    nan = np.isnan(depth)
    assert np.array_equal(nan, confidence < cfg.render.min_opacity) and nan.mean() < 0.5
    near, far = cfg.model.z_near, cfg.model.z_far
    assert depth[~nan].min() >= near
    inv = (1.0 / np.clip(np.where(nan, far, depth), near, far) - 1.0 / far) / (1.0 / near - 1.0 / far)
    expected = cv2.applyColorMap((inv * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
    expected[nan] = UNKNOWN_BGR
    np.testing.assert_array_equal(
        above_legend(cv2.imread(str(result["files"]["depth_png"])), d.width, d.height), expected
    )
    grey = np.rint(confidence * 255).astype(np.uint8)
    confidence_png = cv2.imread(str(result["files"]["confidence_png"]), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(above_legend(confidence_png, c.width, c.height), grey)
    # the grid is the planner's, in base_link (rows along y, left; columns along x, forward): the picture
    # shows forward up and left on the left
    grid = last["/kdbts/occupancy"]
    assert grid.header.frame_id == "base_link"
    cells = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
    occupancy = above_legend(
        cv2.imread(str(result["files"]["occupancy_png"])), 4 * grid.info.height, 4 * grid.info.width
    )
    np.testing.assert_array_equal((occupancy[::4, ::4] == UNKNOWN_BGR).all(-1), (cells == -1).T[::-1, ::-1])
    assert (cells == -1).any() and (cells >= 0).any()


@needs_kitti
def test_demo_command_on_the_real_kitti_sample(tmp_path, capsys):
    seq = kitti_sample(KITTI, 2)
    assert len(seq.images) == 2 and seq.images[0].shape == (375, 1242, 3)
    assert seq.K[0, 0] == pytest.approx(721.5377)
    # ORB-SLAM: about 1 m of forward travel over the first frames of drive 0052
    assert 0.05 < np.linalg.norm(seq.T_fixed_cam[1, :3, 3] - seq.T_fixed_cam[0, :3, 3]) < 2.0
    cfg_file = tmp_path / "small.yaml"
    cfg_file.write_text(
        "kdbts_node:\n  ros__parameters:\n    model: {backbone: resnet18, image_height: 64, "
        "image_width: 192}\n    render: {samples: 16, depth_scale: 0.25}\n"
    )
    assert (
        main(
            ["demo", "--config", str(cfg_file), "--out", str(tmp_path / "out"), "--frames", "2", "--kitti", str(KITTI)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert KITTI_DRIVE in out and "frames processed: 2" in out and "occupancy_bev.png" in out
    figure = cv2.imread(str(tmp_path / "out" / "figure.png"))
    h = round(1242 * 64 / 192)  # the network's view (192 x 64) at the frame's width
    bar = legend_height(caption_scale(h))
    assert figure.shape == (2 * h + bar, 1242 + 2 * h, 3) and str(tmp_path / "out" / "figure.png") in out
    # the input panel is the frame seen through the embedded checkpoint's camera, its padding grey
    camera = checkpoint_camera(load_checkpoint(EMBEDDED_CHECKPOINT)[1], (64, 192))
    expected = view_panel(seq.images[1], Lens.pinhole(seq.K, 1242, 375), camera, 1242)
    np.testing.assert_array_equal(figure[100:h, :1242], expected[100:])


def test_demo_and_replay_with_the_map_on_write_the_map_topics_and_files(tmp_path):
    import open3d as o3d

    from kdbts_ros.runtime.replay import replay

    cfg = small_config(**{"map.enabled": True, "map.publish_rate": 100.0})
    result = run_demo(cfg, tmp_path / "demo", synthetic_sample(3, width=320, height=96))
    assert result["frames"] == 3 and "map" in result["timings"]
    assert result["messages"]["/kdbts/map"] == result["messages"]["/kdbts/map_points"] == 3
    assert len(o3d.io.read_point_cloud(str(result["files"]["map_cloud"])).points) > 0
    assert cv2.imread(str(result["files"]["map_pgm"]), cv2.IMREAD_UNCHANGED).ndim == 2
    # the demo's bag replayed: its map topics left out, the same maps made again at the same stamps
    cfg = small_config(**{"map.publish_rate": 100.0, "fixed_frame": cfg.fixed_frame})
    again = replay(cfg, result["files"]["bag"], tmp_path / "replayed", progress=False, save_map=tmp_path / "m" / "map")
    assert again.processed == 3 and again.written["/kdbts/map"] == 3 and again.skipped["/kdbts/map"] == 3
    assert [f.name for f in again.map_files] == ["map.pcd", "map.pgm", "map.yaml"]
    assert all(f.exists() for f in again.map_files)
    demo_points = np.asarray(o3d.io.read_point_cloud(str(result["files"]["map_cloud"])).points)
    replay_points = np.asarray(o3d.io.read_point_cloud(str(again.map_files[0])).points)
    np.testing.assert_array_equal(replay_points, demo_points)  # the same frames and settings: the same map
    demo_pgm, replay_pgm = (
        cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in (result["files"]["map_pgm"], again.map_files[1])
    )
    np.testing.assert_array_equal(replay_pgm, demo_pgm)
