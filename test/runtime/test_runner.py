"""The runner: multi-camera rig frames, keyframes, and every counted way an input can fail.

The inputs are serialized as a driver and a localiser publish them and go through
``FrameRunner.handle``, the dispatch the node's subscriptions and replay share.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL_ARCH, slab_model, small_config

from kdbts_ros.core.model.checkpoint import random_model
from kdbts_ros.core.stages import Stages, mode_problem
from kdbts_ros.core.tf_buffer import TfBuffer, TfError
from kdbts_ros.data.rig import RigCamera
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.runtime.runner import FrameRunner

W, H = 120, 40
K = np.array([[60.0, 0, 60], [0, 60, 20], [0, 0, 1]])
IMAGES = ["/left/image_raw", "/right/image_raw/compressed"]
INFOS = ["/left/camera_info", "/right/camera_info"]
RIG = [RigCamera("left", 0.0, 0.0, (0.0, 0.25, 1.5)), RigCamera("right", 0.0, 0.0, (0.0, -0.25, 1.5))]
S = 10**9


def _config(cameras: int = 2, **overrides):
    return small_config(
        **{
            "topics.images": IMAGES[:cameras],
            "topics.camera_infos": INFOS[:cameras],
            "mode": "auto",
            "tf_timeout": 0.5,
            **overrides,
        }
    )


def _base(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


class Rig:
    """Feeds a runner like a two-camera driver plus a localiser, in message time."""

    def __init__(self, runner: FrameRunner):
        self.r = runner
        self.r.handle(
            "/tf_static",
            cdr.serialize(sensor_data.tf_message([("base_link", c.name, 0, c.T_base_cam()) for c in RIG])),
            0,
        )

    def info(self, cam: int, stamp: int, K_: np.ndarray = K, size=(W, H)) -> None:
        self.r.handle(INFOS[cam], cdr.serialize(sensor_data.camera_info(K_, *size, stamp, RIG[cam].name)), stamp)

    def pose(self, stamp: int, x: float) -> None:
        self.r.handle("/tf", cdr.serialize(sensor_data.tf_message([("odom", "base_link", stamp, _base(x))])), stamp)

    def image(self, cam: int, stamp: int, arrival: int | None = None, value: int = 90, **kw) -> None:
        rgb = np.full((H, W, 3), value, np.uint8)
        rgb[:, : W // 2, 0] = 200  # not uniform, so colour order matters
        msg = (
            sensor_data.compressed_image(rgb, stamp, RIG[cam].name, "png")
            if IMAGES[cam].endswith("compressed")
            else sensor_data.rgb_image(rgb, stamp, RIG[cam].name)
        )
        for k, v in kw.items():
            setattr(msg, k, v)
        self.r.handle(IMAGES[cam], cdr.serialize(msg), stamp if arrival is None else arrival)

    def frame(self, stamp: int, x: float, cameras: int = 2) -> list:
        """One rig frame: pose, camera_info and images of every camera, then a step at the stamp."""
        self.pose(stamp, x)
        for c in range(cameras):
            self.info(c, stamp)
            self.image(c, stamp)
        return self.r.step(stamp)


@pytest.fixture(scope="module")
def model():
    return random_model(SMALL_ARCH, 0)


def _runner(model, cameras: int = 2, **overrides) -> FrameRunner:
    cfg = _config(cameras, **overrides)
    return FrameRunner(cfg, Stages(cfg, model))


def _after_one_rig_frame(model) -> tuple[FrameRunner, Rig, int]:
    """A two-camera runner that has processed one rig frame at S, and the next frame's stamp."""
    runner = _runner(model)
    rig = Rig(runner)
    rig.frame(S, 0.0)
    return runner, rig, S + S // 10


def test_two_cameras_form_one_rig_frame_and_the_multi_view_head_reads_both(model):
    runner = _runner(model)
    rig = Rig(runner)
    out = rig.frame(S, 0.0)
    # each output once, every one stamped with the rig frame's stamp
    assert sorted(t for t, _, _ in out) == [
        "/kdbts/density_grid",
        "/kdbts/depth/camera_info",
        "/kdbts/depth/confidence",
        "/kdbts/depth/image",
        "/kdbts/occupancy",
        "/kdbts/points",
    ]
    assert all(cdr.stamp_ns(cdr.deserialize(data, msgtype).header.stamp) == S for _, msgtype, data in out)
    # the right camera sees the grid from 0.5 m beside the left one: auto takes the MV head on frame one
    assert runner.last.head == "mv" and runner.last.num_views == 2 and runner.last.camera_frame == "left"
    rig.frame(S + S // 10, 1.0)
    assert runner.last.num_views == 4 and len(runner.window.entries) == 4
    assert not runner.drops and runner.cameras[1].received == 2 and not runner.cameras[1].waiting


def test_the_depth_image_is_the_single_view_heads_while_the_grid_reads_both_cameras():
    wall = slab_model(10.0)  # its SV head sees a wall 10 m ahead; its MV head is random
    outs = {}
    for name, cameras, overrides in (
        ("default", 2, {}),
        ("frame", 2, {"render.depth_head": "frame"}),
        ("left alone", 1, {"mode": "sv"}),
    ):
        runner = _runner(wall, cameras, **overrides)
        Rig(runner).frame(S, 0.0, cameras)
        outs[name] = runner.last
    default, frame, alone = outs["default"], outs["frame"], outs["left alone"]
    assert default.head == frame.head == "mv" and alone.head == "sv"
    np.testing.assert_array_equal(default.density, frame.density)  # the grid: the MV head over both cameras
    np.testing.assert_array_equal(default.depth, alone.depth)  # the depth: the SV head on the left image
    np.testing.assert_array_equal(default.depth_confidence, alone.depth_confidence)
    assert np.nanmedian(alone.depth) == pytest.approx(10.0, rel=0.05)
    assert not np.array_equal(frame.depth, alone.depth, equal_nan=True)  # depth_head frame: the MV head's


def test_the_output_camera_waits_for_a_live_partner_and_not_for_a_silent_one(model):
    runner, rig, t = _after_one_rig_frame(model)
    rig.pose(t, 1.0)
    rig.info(0, t)
    rig.image(0, t)
    assert runner.step(t) == [] and runner.pending.stamp_ns == t  # the right camera is live: wait
    rig.info(1, t)
    rig.image(1, t + 5_000_000)  # 5 ms later: within sync_tolerance, and posed at its own stamp
    rig.pose(t + 10_000_000, 1.0)
    assert runner.step(t + 10_000_000) and runner.last.num_views == 4
    # the right camera falls silent: the first rig frame waits for it until tf_timeout, later ones do not
    stamps = [S + i * S // 10 for i in range(2, 14)]
    for i, t in enumerate(stamps):
        rig.pose(t, float(i + 2))
        rig.info(0, t)
        rig.image(0, t)
        if i == 0:
            assert runner.step(t) == [] and runner.step(t + S // 2)
        else:
            assert runner.step(t), i
    assert runner.processed == 14 and runner.faults["rig_frame_incomplete"] == 12
    assert not runner.drops
    rig.frame(S + 15 * S // 10, 15.0)  # it comes back: rig frames of two cameras again
    assert runner.last.num_views == 4 and runner.cameras[1].absent is False  # the window holds 4 images


def test_keyframes_enter_the_window_when_the_rig_moves_or_after_max_age(model):
    runner = _runner(model, 1, **{"keyframe.distance": 0.5, "keyframe.max_age": 0.35, "window_size": 8})
    rig = Rig(runner)
    stamps = []
    for i in range(8):  # standing still at 10 Hz: a keyframe at 0 s, 0.4 s (max age), 0.8 s
        stamps.append(S + i * S // 10)
        rig.frame(stamps[-1], 0.0, cameras=1)
    assert [e.stamp_ns for e in runner.window.entries] == [stamps[0], stamps[4]]
    for i in range(8, 11):  # driving 1 m per frame: every frame is a keyframe
        rig.frame(S + i * S // 10, float(i), cameras=1)
    assert len(runner.window.entries) == 5 and runner.processed == 11
    # every frame, keyframe or not, was queried with the window
    assert runner.last.num_views == 5


def test_a_looping_bag_clears_window_tf_and_waiting_images(model):
    runner = _runner(model)
    rig = Rig(runner)
    for i in range(3):
        rig.frame(10 * S + i * S // 10, float(i))
    rig.image(0, 10 * S + 3 * S // 10)  # waiting when the bag loops
    rig.frame(5 * S, 0.0)  # TF and both cameras jump back by 5.3 s
    assert runner.faults["time_jump_back"] == 1  # one jump, though two cameras saw it
    assert runner.faults["tf_time_jump_back"] == 1
    assert runner.drops["time_jump_back"] == 1  # the image that was waiting
    assert runner.processed == 4 and runner.last.num_views == 2  # window restarted with this rig frame
    with pytest.raises(TfError) as exc:
        runner.tf.lookup("odom", "base_link", 10 * S)  # the old TF history is gone
    assert exc.value.reason == "future"  # the reason, not the text: tf2_ros words it differently


def test_a_gap_beyond_max_time_gap_restarts_the_window(model):
    runner = _runner(model, 1, **{"keyframe.distance": 0.0, "window_size": 4})
    rig = Rig(runner)
    for i in range(3):
        rig.frame(S + i * S // 10, float(i), cameras=1)
    assert len(runner.window.entries) == 3 and runner.last.num_views == 3
    rig.frame(S + 2 * S // 10 + int((runner.cfg.map.max_time_gap + 0.5) * S), 3.0, cameras=1)
    assert runner.processed == 4 and runner.last.num_views == 1  # the frames before the gap are forgotten
    assert [e.stamp_ns for e in runner.window.entries] == [runner.last.stamp_ns]
    assert not runner.faults and not runner.drops  # a gap loses nothing, and the TF after it is kept


def test_an_image_arriving_while_one_waits_supersedes_it(model):
    runner = _runner(model, 1)
    rig = Rig(runner)
    rig.info(0, S)
    rig.image(0, S)
    rig.image(0, S + S // 10)
    rig.pose(S + S // 10, 0.0)
    assert runner.step(S + S // 10) and runner.last.stamp_ns == S + S // 10
    assert runner.drops == {"superseded": 1}


class _ArrivingDuringLookup(TfBuffer):
    """A TF buffer whose next pose lookup lets an input arrive first, as the node's other thread may."""

    def __init__(self):
        super().__init__()
        self.arrive = None

    def lookup(self, parent: str, child: str, stamp: int) -> np.ndarray:
        arrive, self.arrive = self.arrive, None
        if arrive is not None:
            arrive()
        return super().lookup(parent, child, stamp)


def test_an_image_arriving_while_a_frame_is_prepared_is_kept_for_the_next_step(model):
    cfg = _config(1)
    tf = _ArrivingDuringLookup()
    runner = FrameRunner(cfg, Stages(cfg, model), tf)
    rig = Rig(runner)
    rig.info(0, S)
    rig.pose(S, 0.0)
    rig.pose(2 * S, 0.0)
    rig.image(0, S)
    tf.arrive = lambda: rig.image(0, 2 * S)  # supersedes the image being prepared
    assert runner.step(S) == []  # the superseded frame is not processed (it is counted as superseded) ...
    assert runner.pending.stamp_ns == 2 * S  # ... and the newer image is not lost: it is next
    assert runner.step(2 * S) and runner.last.stamp_ns == 2 * S
    cam = runner.cameras[0]
    assert (cam.received, runner.processed, dict(cam.dropped)) == (2, 1, {"superseded": 1})


def test_camera_info_faults(model):
    runner = _runner(model, 1)
    rig = Rig(runner)
    rig.pose(S, 0.0)
    rig.image(0, S)
    assert runner.step(S) == []  # camera_info may still come
    assert runner.step(S + S // 2) == [] and runner.drops["no_camera_info"] == 1
    rig.info(0, S, K_=np.zeros((3, 3)))
    assert runner.drops["bad_camera_info"] == 1 and runner.cameras[0].intrinsics is None
    rig.frame(2 * S, 0.0, cameras=1)
    before, depth_lens = runner.cameras[0].intrinsics.lens, runner.last.depth_lens
    rig.info(0, 3 * S, K_=K * [[1.1], [1.1], [1]])
    assert runner.faults["camera_info_changed"] == 1
    rig.pose(3 * S, 1.0)
    rig.image(0, 3 * S)
    assert runner.step(3 * S) and runner.cameras[0].intrinsics.lens.K[0, 0] == pytest.approx(1.1 * before.K[0, 0])
    # the new lens is seen through new maps: a longer focal length covers less of the canonical view, whose
    # depth image stays the same camera
    maps = runner.stages.encoding.resampling
    assert maps(runner.cameras[0].intrinsics.lens)[0].coverage < maps(before)[0].coverage
    assert runner.last.depth_lens == depth_lens


def test_image_faults_are_counted_and_the_next_frame_is_processed(model):
    runner, rig, t = _after_one_rig_frame(model)
    rig.pose(t, 1.0)
    rig.image(0, t, encoding="yuv444")  # unsupported encoding: the rig frame is dropped
    rig.image(1, t)
    runner.step(t)
    assert runner.drops == {"bad_image": 1}
    t += S // 10
    rig.pose(t, 2.0)
    rig.image(0, t)
    rig.image(1, t, data=np.frombuffer(b"\x89PNG garbage", np.uint8))  # corrupt png: frame goes on without it
    assert runner.step(t) and runner.last.num_views == 3  # left now + the first rig frame's two
    assert runner.drops == {"bad_image": 2, "superseded": 1}  # and the unused right image of the dropped frame
    # each camera's own: the left's unusable image; the right's corrupt one and the one its rig frame left unused
    assert [dict(c.dropped) for c in runner.cameras] == [{"bad_image": 1}, {"bad_image": 1, "superseded": 1}]
    t += S // 10
    rig.pose(t, 3.0)
    rig.image(0, t, encoding="bgr8")  # format change: counted, still used
    rig.image(1, t)
    assert runner.step(t) and runner.faults["image_format_changed"] == 1
    t += S // 10
    rig.pose(t, 4.0)
    big = sensor_data.rgb_image(np.zeros((H + 2, W, 3), np.uint8), t, "left")  # not the size camera_info says
    runner.handle(IMAGES[0], cdr.serialize(big), t)
    runner.step(t + S)
    assert runner.drops["size_mismatch"] == 1
    assert rig.frame(t + S // 10, 5.0) and runner.processed == 4


def test_tf_faults(model):
    runner = _runner(model, 1)
    rig = Rig(runner)
    rig.info(0, S)
    rig.image(0, S)
    assert runner.step(S) == []
    rig.pose(S, 0.0)  # the pose arrives after the image: still in time
    assert runner.step(S + S // 10)
    rig.image(0, 2 * S)  # no pose that late ever comes
    runner.step(2 * S + S)
    assert runner.drops["tf_late"] == 1
    bad = sensor_data.tf_message([("odom", "base_link", 3 * S, _base(0.0))])
    bad.transforms[0].transform.rotation.w = float("nan")
    runner.handle("/tf", cdr.serialize(bad), 3 * S)
    scaled = sensor_data.tf_message([("odom", "base_link", 3 * S, _base(0.0))])
    scaled.transforms[0].transform.rotation.w = 2.0
    runner.handle("/tf", cdr.serialize(scaled), 3 * S)
    assert runner.drops["bad_tf"] == 2
    assert rig.frame(3 * S, 3.0, cameras=1) and runner.processed == 2


def test_out_of_memory_skips_the_frame_and_halves_the_query_chunks(model, monkeypatch):
    runner = _runner(model, 1)
    rig = Rig(runner)
    real = runner.process
    monkeypatch.setattr(
        runner, "process", lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory"))
    )
    assert rig.frame(S, 0.0, cameras=1) == [] and runner.drops["cuda_oom"] == 1
    assert runner.cfg.model.query_memory_mb == 32 and runner.cfg.model.chunk_points == 262144 // 2
    # made as parameter changes, which the node shows as its parameters' values
    assert runner.take_own_changes() == [("model.query_memory_mb", 32), ("model.chunk_points", 262144 // 2)]
    assert runner.take_own_changes() == []
    monkeypatch.setattr(runner, "process", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    assert rig.frame(2 * S, 0.0, cameras=1) == [] and runner.drops["processing_error"] == 1
    monkeypatch.setattr(runner, "process", real)
    assert rig.frame(3 * S, 0.0, cameras=1) and runner.processed == 1


def test_outputs_nobody_wants_are_neither_computed_nor_serialized(model):
    runner = _runner(model, 1)
    rig = Rig(runner)
    t = runner.cfg.topics
    rig.pose(S, 0.0)
    rig.info(0, S)
    rig.image(0, S)
    only_depth = runner.step(S, lambda: {t.depth})
    assert [topic for topic, _, _ in only_depth] == [t.depth]
    assert runner.last.occupancy is None and runner.last.depth is not None  # the grid was not queried
    rig.pose(2 * S, 1.0)
    rig.image(0, 2 * S)
    assert runner.step(2 * S, set) == [] and runner.processed == 2  # processed, nothing wanted
    assert runner.last.occupancy is None and runner.last.depth is None
    assert [topic for topic, _, _ in rig.frame(3 * S, 2.0, cameras=1)] == [
        t.occupancy,
        t.density_grid,
        t.points,
        t.depth,
        t.depth_info,
        t.depth_confidence,
    ]  # no choice: every output


def test_run_time_parameters_are_validated_at_once_and_applied_between_frames(model):
    runner = _runner(model, 1)
    rig = Rig(runner)
    runner.set_param("window_size", 2)
    runner.set_param("grid.resolution", 1.0)
    with pytest.raises(ValueError, match="below its max"):
        runner.set_param("grid.x_min", 50.0)
    assert runner.cfg.window_size == 4  # not yet: between frames
    for i in range(3):
        rig.frame(S + i * S // 10, float(i), cameras=1)
    assert runner.cfg.window_size == 2 and len(runner.window.entries) == 2
    assert runner.last.spec.resolution == 1.0 and runner.cfg.grid.x_min == -9.0


def test_diagnostics_report_cameras_drops_faults_and_warn_on_new_ones(model):
    runner = _runner(model)
    rig = Rig(runner)
    rig.frame(2 * S, 0.0)
    first = cdr.deserialize(runner.diagnostics(2 * S), "diagnostic_msgs/msg/DiagnosticArray").status[0]
    values = {kv.key: kv.value for kv in first.values}
    assert (
        first.level == 0 and values["camera1_topic"] == IMAGES[1] and values["camera1_intrinsics"] == "k"
    )  # raw topics: K and D
    assert values["head"] == "mv" and values["num_views"] == "2" and values["window_frames"] == "2"
    assert values["camera0_images"] == values["camera1_images"] == "1" and values["camera1_dropped"] == "0"
    assert float(values["grid_resolution_m"]) == runner.cfg.grid.resolution
    rig.image(0, S // 2)  # time jumps back (by more than TimeJumps' threshold)
    status = cdr.deserialize(runner.diagnostics(2 * S), "diagnostic_msgs/msg/DiagnosticArray").status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == 1 and "fault_time_jump_back +1" in status.message
    assert values["fault_time_jump_back"] == "1"
    again = cdr.deserialize(runner.diagnostics(3 * S), "diagnostic_msgs/msg/DiagnosticArray").status[0]
    assert again.level == 0  # nothing new since the last report


def test_mode_mv_is_refused_for_weights_without_a_multi_view_head():
    model = random_model(SMALL_ARCH, 0)
    model.available_heads = ["sv"]
    stages = Stages(small_config(), model)
    assert "needs a multi-view head" in (mode_problem(model, "mv") or "") and mode_problem(model, "auto") is None
    with pytest.raises(ValueError, match="needs a multi-view head"):
        Stages(small_config(mode="mv"), model)
    runner = FrameRunner(small_config(), stages)
    with pytest.raises(ValueError, match="needs a multi-view head"):
        runner.set_param("mode", "mv")


def test_in_sv_mode_the_other_cameras_are_counted_but_neither_waited_for_nor_encoded(model):
    runner = _runner(model, mode="sv")
    rig = Rig(runner)
    rig.pose(S, 0.0)
    rig.info(0, S)
    rig.image(0, S)
    assert runner.step(S) and runner.last.head == "sv" and runner.last.num_views == 1  # no wait for the right one
    rig.info(1, S)
    rig.image(1, S)
    assert runner.cameras[1].received == 1 and not runner.cameras[1].waiting
    assert len(runner.window.entries) == 1 and not runner.drops and not runner.faults


def test_images_dropped_by_the_caller_or_discarded_while_waiting_are_counted_per_camera(model):
    runner = _runner(model)
    rig = Rig(runner)
    rig.image(0, S)
    rig.image(1, S)
    runner.drop_image(0, "inactive", "received while the node is inactive")
    runner.discard_waiting("inactive", "waiting when the node was deactivated")
    assert runner.pending is None and runner.drops == {"inactive": 3}
    assert [(c.received, dict(c.dropped)) for c in runner.cameras] == [(2, {"inactive": 2}), (1, {"inactive": 1})]
