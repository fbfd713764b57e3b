"""The world map through the runner: fused per posed frame, published at map.publish_rate by stamps.

A slab network (density ~0 nearer than 10 m along the optical axis, large beyond) and a camera
looking along odom's x: the map's occupied cells lie beyond x = 10 m, free space before it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import slab_model
from test_runner import Rig, S, _base, _config

from kdbts_ros.core.stages import Stages
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.runtime.runner import FrameRunner

Z_WALL = 10.0
MAP_TOPIC, POINTS_TOPIC = "/kdbts/map", "/kdbts/map_points"


@pytest.fixture(scope="module")
def slab():
    return slab_model(Z_WALL)


def _runner(model, **overrides) -> FrameRunner:
    cfg = _config(
        1,
        **{
            "mode": "sv",
            "map.enabled": True,
            "map.resolution": 0.5,
            "map.extent_xy": 60.0,
            "map.extent_z": 6.0,
            "map.decay_per_s": 0.0,
            "map.publish_rate": 2.0,
            **overrides,
        },
    )
    return FrameRunner(cfg, Stages(cfg, model))


def _map_msgs(outputs: list, topic: str = MAP_TOPIC) -> list:
    return [cdr.deserialize(data, msgtype) for t, msgtype, data in outputs if t == topic]


def test_map_messages_come_at_the_publish_rate_of_the_stamps_with_the_slab_occupied(slab):
    runner = _runner(slab)
    rig = Rig(runner)
    published = []
    for i in range(12):  # 10 Hz for 1.2 s: maps at 0, 0.5 and 1.0 s
        stamp = i * S // 10
        outputs = rig.frame(stamp, 0.0, cameras=1)
        assert any(t == "/kdbts/occupancy" for t, _, _ in outputs)  # the frame's own outputs unchanged
        if _map_msgs(outputs):
            published.append(stamp)
            assert len(_map_msgs(outputs, POINTS_TOPIC)) == 1
    assert published == [0, 5 * S // 10, 10 * S // 10]
    assert runner.mapping.map.frames == 12 and "map" in runner.timings

    grid = _map_msgs(rig.frame(15 * S // 10, 0.0, cameras=1))[0]
    wmap = runner.mapping.map
    assert grid.header.frame_id == "odom" and grid.header.stamp.sec == 1
    assert (grid.info.height, grid.info.width) == wmap.shape[1:] == (120, 120)
    assert grid.info.resolution == pytest.approx(0.5)
    assert grid.info.origin.position.x == pytest.approx(wmap.origin[0] * 0.5)
    assert grid.info.origin.position.y == pytest.approx(wmap.origin[1] * 0.5)
    data = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
    xs = (np.arange(grid.info.width) + 0.5) * 0.5 + grid.info.origin.position.x
    occupied_x = xs[np.nonzero((data > 50).any(0))[0]]
    free_x = xs[np.nonzero(((data >= 0) & (data < 50)).any(0))[0]]
    assert occupied_x.size and occupied_x.min() > Z_WALL - 1.0  # the slab, behind the wall depth
    assert free_x.size and free_x.min() < 5.0  # the grid's near cells (3 m on) are free

    points = _map_msgs(rig.frame(20 * S // 10, 0.0, cameras=1), POINTS_TOPIC)[0]
    assert points.header.frame_id == "odom" and points.width == wmap.status()["occupied"] > 0


def test_unwanted_map_topics_are_not_built_but_the_map_still_fuses(slab):
    runner = _runner(slab)
    rig = Rig(runner)
    rig.pose(0, 0.0)
    rig.info(0, 0)
    rig.image(0, 0)
    outputs = runner.step(0, lambda: set())  # nobody subscribes to anything
    assert outputs == [] and runner.mapping.map.frames == 1 and runner.mapping.map.known_cells() > 0
    rig.pose(S, 0.0)
    rig.info(0, S)
    rig.image(0, S)
    outputs = runner.step(S, lambda: {MAP_TOPIC})
    assert [t for t, _, _ in outputs] == [MAP_TOPIC]


def test_a_frame_without_a_usable_pose_is_never_fused_and_counted(slab, monkeypatch):
    runner = _runner(slab)
    rig = Rig(runner)
    rig.frame(0, 0.0, cameras=1)
    known = runner.mapping.map.log_odds.copy()
    # a NaN transform on /tf is refused by the runner: the frame waits, times out and is dropped
    msg = sensor_data.tf_message([("odom", "base_link", S, _base(0.0))])
    msg.transforms[0].transform.translation.x = float("nan")
    rig.r.handle("/tf", cdr.serialize(msg), S)
    rig.info(0, S)
    rig.image(0, S)
    assert runner.step(S) == [] and runner.step(2 * S) == [] and runner.drops["bad_tf"] == 1
    # a pose gone bad after the pipeline (as if it had): the map refuses it, the frame's outputs still go out
    process = runner.process

    def nan_pose(frame, **kw):
        out = process(frame, **kw)
        out.T_out_cam = np.full((4, 4), np.nan)
        return out

    monkeypatch.setattr(runner, "process", nan_pose)
    rig.pose(3 * S, 0.0)
    rig.info(0, 3 * S)
    rig.image(0, 3 * S)
    outputs = runner.step(3 * S, lambda: {MAP_TOPIC, POINTS_TOPIC, "/kdbts/depth/image"})
    assert [t for t, _, _ in outputs] == ["/kdbts/depth/image"] and runner.processed == 2
    assert np.array_equal(runner.mapping.map.log_odds, known) and runner.mapping.map.frames == 1
    assert runner.faults["map_skipped_non_finite_pose"] == 1
    assert runner.mapping.status()["map_skipped"] == 1


@pytest.mark.parametrize("rule", ["reset", "keep"])
def test_a_bag_loop_resets_the_map_or_keeps_it_by_the_rule(slab, rule):
    runner = _runner(slab, **{"map.time_jump_rule": rule})
    rig = Rig(runner)
    for i in range(3):
        rig.frame(10 * S + i * S // 10, 0.0, cameras=1)
    before = runner.mapping.map.log_odds.copy()
    rig.pose(0, 0.0)  # the bag starts again
    rig.info(0, 0)
    rig.image(0, 0)
    runner.step(0)
    wmap = runner.mapping.map
    if rule == "reset":
        assert wmap.resets == {"time jump": 1} and runner.faults["map_reset_time_jump"] == 1
        one_hit = np.log(0.7 / 0.3)
        assert np.abs(before).max() > one_hit + 0.1  # three frames fused
        assert wmap.frames == 4 and 0 < np.abs(wmap.log_odds).max() <= one_hit + 1e-5  # only the new one
    else:
        assert not wmap.resets and "map_reset_time_jump" not in runner.faults
        assert ((wmap.log_odds != 0) >= (before != 0)).all()  # nothing forgotten
        assert np.abs(wmap.log_odds).sum() > np.abs(before).sum()  # and the frame fused on top


@pytest.mark.parametrize("rule", ["reset", "keep"])
def test_a_time_jump_the_runner_reports_resets_the_map_or_keeps_it_by_the_rule(slab, rule, caplog):
    """A forward gap beyond map.max_time_gap: detected by the runner's time-jump module, applied here."""
    runner = _runner(slab, **{"map.time_jump_rule": rule, "map.decay_per_s": 0.05})
    rig = Rig(runner)
    for i in range(3):
        rig.frame(i * S // 10, 0.0, cameras=1)
    before = runner.mapping.map.log_odds.copy()
    with caplog.at_level("WARNING", logger="kdbts_ros"):
        outputs = rig.frame(10 * S, 0.0, cameras=1)  # 9.8 s after the last frame: more than max_time_gap (5 s)
    wmap, one_hit = runner.mapping.map, np.log(0.7 / 0.3)
    assert wmap.frames == 4 and _map_msgs(outputs)  # fused, and published at once
    if rule == "reset":
        assert wmap.resets == {"time jump": 1} and runner.faults["map_reset_time_jump"] == 1
        assert (
            "the map was cleared: the stamps jumped 9.8 s forward (map.max_time_gap 5 s) (map.time_jump_rule reset)"
            in caplog.text
        )
        assert np.abs(before).max() > one_hit + 0.1  # three frames fused
        assert 0 < np.abs(wmap.log_odds).max() <= one_hit + 1e-5  # only the new one
    else:
        assert not wmap.resets and "map_reset_time_jump" not in runner.faults
        assert ((wmap.log_odds != 0) >= (before != 0)).all()  # nothing forgotten
        # decayed by the 10 s since the first frame at 0.05 / s (the first 0.2 s were pending, under one step),
        # then the frame fused on top
        assert np.abs(wmap.log_odds).max() == pytest.approx(np.abs(before).max() - 0.5 + one_hit, abs=1e-4)


def test_clear_and_run_time_switching_of_the_map(slab, tmp_path):
    import cv2
    import open3d as o3d

    runner = _runner(slab)
    rig = Rig(runner)
    rig.frame(0, 0.0, cameras=1)
    files = runner.mapping.save(tmp_path / "m")
    assert [f.name for f in files] == ["m.pcd", "m.pgm", "m.yaml"]
    assert len(o3d.io.read_point_cloud(str(files[0])).points) == runner.mapping.map.status()["occupied"] > 0
    assert cv2.imread(str(files[1]), cv2.IMREAD_UNCHANGED).shape == (120, 120)
    assert runner.mapping.clear() and runner.mapping.map.known_cells() == 0
    with pytest.raises(ValueError, match="empty"):
        runner.mapping.save(tmp_path / "m")
    assert _map_msgs(rig.frame(S // 10, 0.0, cameras=1))  # publishes at once after a clear

    runner.set_param("map.enabled", False)
    outputs = rig.frame(2 * S // 10, 0.0, cameras=1)
    assert runner.mapping.map is None and not _map_msgs(outputs) and "map" not in runner.timings
    assert not runner.mapping.clear() and "map_frames" not in runner.mapping.status()
    runner.set_param("map.enabled", True)
    runner.set_param("map.publish_rate", 0.0)
    assert not _map_msgs(rig.frame(3 * S // 10, 0.0, cameras=1)) and runner.mapping.map.frames == 1


def test_map_memory_stays_flat_while_the_window_rolls(slab):
    """``kdbts soak --map`` measures the process over 10,000 frames; here the map's own arrays."""
    runner = _runner(slab, **{"map.publish_rate": 0.0})
    rig = Rig(runner)
    nbytes = runner.mapping.map.nbytes()
    for i in range(60):  # driving 4 m per frame: the window re-centres every few frames
        rig.frame(i * S // 10, 4.0 * i, cameras=1)
    wmap = runner.mapping.map
    assert wmap.frames == 60 and wmap.nbytes() == nbytes and wmap.log_odds.shape == (12, 120, 120)
    assert wmap.origin[0] * 0.5 > 150  # the window followed the camera (at 236 m)
    assert wmap.known_cells() < 0.2 * wmap.log_odds.size  # what was left behind is forgotten
