"""kdbts replay: a converted KITTI bag through the node's runner, outputs beside the inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import KITTI_SAMPLE, above_legend, needs_kitti, read_bag, small_config, view_panel

from kdbts_ros.commands.cli import main
from kdbts_ros.core.errors import EXIT_USER
from kdbts_ros.core.lens import Lens
from kdbts_ros.core.loading import EMBEDDED_CHECKPOINT, checkpoint_camera
from kdbts_ros.core.model.checkpoint import load_checkpoint
from kdbts_ros.data import shared_sample
from kdbts_ros.data.bags import BagWriter, CameraStream, rig_messages
from kdbts_ros.data.kitti_bag import KITTI, KITTI360, write_recording_bag
from kdbts_ros.data.sequences import input_messages, synthetic_sample
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.runtime.config import RunnerConfig, load_runner_config
from kdbts_ros.runtime.legends import legend_height
from kdbts_ros.runtime.offline import run_messages
from kdbts_ros.runtime.pictures import caption_scale
from kdbts_ros.runtime.replay import replay
from kdbts_ros.runtime.replay_pngs import PngWriter
from kdbts_ros.runtime.runner import FrameRunner

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = (
    "/kdbts/occupancy",
    "/kdbts/points",
    "/kdbts/depth/image",
    "/kdbts/depth/camera_info",
    "/kdbts/depth/confidence",
    "/kdbts/density_grid",
)


def test_presets_name_the_converted_topics_and_frames():
    for preset, conv, streams in (
        ("kitti_raw", KITTI, ("camera_color_left", "camera_color_right")),
        ("kitti_gray", KITTI, ("camera_gray_left", "camera_gray_right")),
        ("kitti360", KITTI360, ("cam_00", "cam_01")),
    ):
        cfg = load_runner_config(ROOT / "config" / f"{preset}.yaml")
        assert cfg.fixed_frame == conv.fixed_frame == "world"
        for stream, image, info in zip(streams, cfg.topics.images, cfg.topics.camera_infos, strict=True):
            assert stream in image and image.startswith(conv.image_topic.split("{")[0])
            assert info == image.rsplit("/", 1)[0] + "/camera_info"


@needs_kitti
def test_replay_of_the_real_sample_with_the_embedded_network(tmp_path, capsys):
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    write_recording_bag(rec, tmp_path / "in", KITTI, max_frames=3, progress=False)
    assert (
        main(
            [
                "replay",
                str(tmp_path / "in"),
                str(tmp_path / "out"),
                "--config",
                str(ROOT / "config/kitti_raw.yaml"),
                "--png",
                str(tmp_path / "png"),
            ]
        )
        == 0
    )
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
    depth = [m for t, _, m in outputs if t == "/kdbts/depth/image"]
    assert [d.header.stamp for d in depth] == image_stamps
    assert depth[0].header.frame_id == "camera_color_left"
    values = np.frombuffer(depth[0].data, "<f4")
    # KITTI raw's camera is narrower than the random network's KITTI-360 view: its padding has no depth
    seen = np.isfinite(values)
    assert 0.5 < seen.mean() < 1.0 and values[seen].min() >= 3.0 - 1e-3
    occupancy = next(m for t, _, m in outputs if t == "/kdbts/occupancy")
    # the planner's grid, on the bag's base_footprint (axis-aligned there, nav2's way), its band above the road
    assert occupancy.header.frame_id == "base_footprint"
    q, p = occupancy.info.origin.orientation, occupancy.info.origin.position
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0) and p.z == pytest.approx(RunnerConfig().planner.z_min)
    # per processed frame its occupancy, depth and figure, named by the frame's stamp; the depth picture at the
    # size of the depth published for that frame
    stamps = [cdr.stamp_ns(d.header.stamp) for d in depth]
    assert sorted(p.name for p in (tmp_path / "png").glob("*.png")) == sorted(
        f"{kind}_{t}.png" for kind in ("occupancy", "depth", "confidence", "figure") for t in stamps
    )
    for d, t in zip(depth, stamps, strict=True):
        for kind in ("depth", "confidence"):
            picture = above_legend(cv2.imread(str(tmp_path / "png" / f"{kind}_{t}.png")), d.width, d.height)
            assert picture.shape == (d.height, d.width, 3)
    # one figure per processed frame, showing that frame's image at its recorded size
    images = {
        cdr.stamp_ns(m.header.stamp): sensor_data.decode_image(m, cdr.IMAGE)
        for t, _, m in inputs
        if t == "/kitti/camera_color_left/image_raw"
    }
    figures = sorted((tmp_path / "png").glob("figure_*.png"))
    assert [int(f.stem.split("_")[1]) for f in figures] == sorted(images)
    # the embedded checkpoint's camera at its training size, the frame seen through it at the frame's width
    camera = checkpoint_camera(load_checkpoint(EMBEDDED_CHECKPOINT)[1])
    lens, h = Lens.pinhole(rec.frames[0].K(0), 1242, 375), round(1242 * camera.height / camera.width)
    for f in figures:
        picture = cv2.imread(str(f))
        assert picture.shape == (2 * h + legend_height(caption_scale(h)), 1242 + 2 * h, 3)
        expected = view_panel(images[int(f.stem.split("_")[1])], lens, camera, 1242)
        np.testing.assert_array_equal(picture[100:h, :1242], expected[100:])


@needs_kitti
def test_replay_refuses_a_bag_without_the_configured_topics_and_never_duplicates_outputs(tmp_path):
    rec = shared_sample.raw_sample(KITTI_SAMPLE)
    write_recording_bag(rec, tmp_path / "in", KITTI, max_frames=2, velodyne=False, progress=False)
    with pytest.raises(ValueError, match="no topic /camera/image_raw"):
        replay(small_config(), tmp_path / "in", tmp_path / "x", pick_cameras=False)
    cfg = small_config(
        **{
            "fixed_frame": "world",
            "topics.images": ["/kitti/camera_color_left/image_raw"],
            "topics.camera_infos": ["/kitti/camera_color_left/camera_info"],
        }
    )
    first = replay(cfg, tmp_path / "in", tmp_path / "out1", progress=False)
    assert first.processed == 2 and first.drops == {} and first.written["/kdbts/depth/image"] == 2
    # replaying the replay's output: its old outputs are left out, new ones written once
    second = replay(cfg, tmp_path / "out1", tmp_path / "out2", "sqlite3", progress=False)
    assert second.processed == 2 and second.written["/kdbts/depth/image"] == 2
    assert second.skipped["/kdbts/depth/image"] == 2


@needs_kitti
def test_kitti360_stereo_pair_replays_with_the_multi_view_head(tmp_path):
    rec = shared_sample.kitti360_sample(KITTI_SAMPLE)
    write_recording_bag(rec, tmp_path / "in", KITTI360, max_frames=4, velodyne=False, progress=False)
    result = replay(
        load_runner_config(ROOT / "config/kitti360.yaml"), tmp_path / "in", tmp_path / "out", progress=False
    )
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


class _Discard:
    def write(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        pass


def test_each_figure_shows_its_frame_even_when_a_corrupt_image_follows_it(tmp_path):
    cfg = small_config()
    seq = synthetic_sample(2, width=320, height=96)
    runner = FrameRunner(cfg)  # its topics fully qualified, as the stream's
    messages = []
    for item in input_messages(seq, cfg.fixed_frame, cfg.topics):
        messages.append(item)
        if item[1] == runner.cfg.topics.images[0]:  # a truncated copy right behind each image: the runner drops it
            messages.append((*item[:3], item[3][:40]))
    pngs = PngWriter(tmp_path, runner)
    run_messages(runner, pngs.watch(iter(messages)), _Discard(), pngs)
    assert runner.processed == 2 and runner.drops == {"bad_image": 2}
    figures = sorted(tmp_path.glob("figure_*.png"))
    assert len(figures) == 2 and len(pngs.files) == 8  # occupancy, depth, confidence and figure per frame
    lens, h = Lens.pinhole(seq.K, 320, 96), round(320 * 64 / 192)
    for f, rgb in zip(figures, seq.images, strict=True):
        expected = view_panel(rgb, lens, runner.stages.canonical, 320)
        np.testing.assert_array_equal(cv2.imread(str(f))[40:h, :320], expected[40:])


def _rig_bag(path: Path, frames: int = 3) -> None:
    """A bag of two cameras named as no preset names them, a camera-less debug image, TF rooted at 'map'."""
    K = np.array([[100.0, 0, 96], [0, 100, 32], [0, 0, 1]])
    T_base_optical = np.array([[0, 0, 1, 0.5], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1.0]])
    cams = [
        CameraStream(f"cam{i}_optical", T_base_optical, K, f"/rig/cam{i}/image", f"/rig/cam{i}/camera_info")
        for i in (10, 2)
    ]
    poses = [np.eye(4) for _ in range(frames)]
    for i, T in enumerate(poses):
        T[0, 3] = 0.5 * i
    rng = np.random.default_rng(0)
    images = [[rng.integers(0, 255, (64, 192, 3), np.uint8) for _ in cams] for _ in range(frames)]
    with BagWriter(path) as bag:
        for stamp, topic, msgtype, data in rig_messages(cams, poses, images, fixed_frame="map"):
            bag.write(topic, msgtype, stamp, data)
            if topic == "/rig/cam2/image":
                bag.write("/debug/image", msgtype, stamp, data)


def test_replay_takes_the_bags_cameras_and_tf_root_when_the_config_names_others(tmp_path, capsys):
    _rig_bag(tmp_path / "in")
    assert main(["replay", str(tmp_path / "in"), str(tmp_path / "out")]) == 0  # config/default.yaml's names
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("cameras: /rig/cam2/image, /rig/cam10/image (")
    assert printed[1].startswith("fixed frame: map (") and "frames processed: 3" in printed
    outputs, _ = read_bag(tmp_path / "out")
    depth = [m for t, _, m in outputs if t == "/kdbts/depth/image"]
    assert len(depth) == 3 and depth[0].header.frame_id == "cam2_optical"  # the first camera makes the outputs
    # the planner's grid in the rig's base frame
    assert {m.header.frame_id for t, _, m in outputs if t == "/kdbts/occupancy"} == {"base_link"}


def test_replay_takes_cameras_from_the_command_line(tmp_path, capsys):
    _rig_bag(tmp_path / "in", frames=2)
    assert (
        main(
            [
                "replay",
                str(tmp_path / "in"),
                str(tmp_path / "out"),
                "--images",
                "/rig/cam10/image",
                "--fixed-frame",
                "map",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "cameras:" not in printed and "fixed frame:" not in printed and "frames processed: 2" in printed
    depth = [m for t, _, m in read_bag(tmp_path / "out")[0] if t == "/kdbts/depth/image"]
    assert {d.header.frame_id for d in depth} == {"cam10_optical"}
    # named topics the bag lacks are refused, not replaced
    assert main(["replay", str(tmp_path / "in"), str(tmp_path / "x"), "--images", "/debug/image"]) == EXIT_USER
    assert "no topic /debug/camera_info" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_bag_without_a_camera_is_refused_before_the_network_is_built(tmp_path):
    with BagWriter(tmp_path / "in") as bag:
        bag.write(
            "/debug/image", cdr.IMAGE, 1, cdr.serialize(sensor_data.rgb_image(np.zeros((4, 4, 3), np.uint8), 1, "x"))
        )
    with pytest.raises(ValueError, match="no image topic with a camera_info beside it"):
        replay(small_config(), tmp_path / "in", tmp_path / "out")
