"""The world map's gravity rule (map.up_axis) through the runner: a y-down fixed frame gives the z-up frame's map.

Two runners see the same drive (the slab network, the one-camera rig of test_runner): one poses
its camera in ``odom`` (REP 103, z up), the other in ``optical_world``, a frame whose -y is up,
placed so that its gravity-aligned frame is ``odom`` itself. Their maps must then be the same
voxels, published in each runner's own fixed frame.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import slab_model
from scipy.spatial.transform import Rotation
from test_runner import Rig, S, _config

from kdbts_ros.core.stages import Stages
from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.runtime.runner import FrameRunner

# optical_world -> odom: odom's x (forward) is the y-down frame's x, odom's y its z, odom's z (up) its -y;
# the smallest turn taking that frame's -y up is then a quarter turn about x, which lands on odom exactly
R_OPT_ODOM = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="module")
def slab():
    return slab_model(10.0)


def _run(model, fixed_frame: str, up_axis: str = "auto") -> tuple[FrameRunner, dict[str, list]]:
    cfg = _config(
        1,
        **{
            "mode": "sv",
            "fixed_frame": fixed_frame,
            "map.enabled": True,
            "map.up_axis": up_axis,
            "map.resolution": 0.5,
            "map.extent_xy": 60.0,
            "map.extent_z": 6.0,
            "map.decay_per_s": 0.0,
            "map.publish_rate": 1.0,
        },
    )
    runner = FrameRunner(cfg, Stages(cfg, model))
    T = np.eye(4)
    T[:3, :3] = R_OPT_ODOM
    runner.handle("/tf_static", cdr.serialize(sensor_data.tf_message([("optical_world", "odom", 0, T)])), 0)
    rig = Rig(runner)
    out: dict[str, list] = {}
    for i in range(4):
        for topic, msgtype, data in rig.frame(i * S // 10, 1.5 * i, cameras=1):
            out.setdefault(topic, []).append(cdr.deserialize(data, msgtype))
    return runner, out


def test_a_y_down_fixed_frame_gives_the_z_up_frames_map_turned_into_it(slab):
    z_up, z_msgs = _run(slab, "odom")
    y_down, y_msgs = _run(slab, "optical_world")
    assert z_up.mapping.up_axis == "+z" and y_down.mapping.up_axis == "-y"
    assert z_up.mapping.map.tilted == y_down.mapping.map.tilted == 0
    np.testing.assert_array_equal(y_down.mapping.map.log_odds, z_up.mapping.map.log_odds)
    assert (z_up.mapping.map.log_odds > 0).any()

    # the occupied voxels, each in its runner's fixed frame: turned by optical_world -> odom
    def cloud(msgs):
        msg = msgs["/kdbts/map_points"][0]
        xyz = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.width, msg.point_step)[:, :12]
        return msg.header.frame_id, xyz.copy().view(np.float32).reshape(-1, 3).astype(np.float64)

    (z_frame, z_points), (y_frame, y_points) = cloud(z_msgs), cloud(y_msgs)
    assert (z_frame, y_frame) == ("odom", "optical_world") and len(z_points) > 0
    np.testing.assert_allclose(y_points, z_points @ R_OPT_ODOM.T, atol=1e-5)

    # the 2-D map: the same cells; its origin pose in optical_world is odom's turned
    z_grid, y_grid = z_msgs["/kdbts/map"][0], y_msgs["/kdbts/map"][0]
    assert y_grid.header.frame_id == "optical_world"
    np.testing.assert_array_equal(y_grid.data, z_grid.data)
    zp, yp = z_grid.info.origin.position, y_grid.info.origin.position
    np.testing.assert_allclose([yp.x, yp.y, yp.z], R_OPT_ODOM @ [zp.x, zp.y, zp.z], atol=1e-6)
    q = y_grid.info.origin.orientation
    np.testing.assert_allclose(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), R_OPT_ODOM, atol=1e-6)


def test_an_explicit_up_axis_overrides_the_cameras(slab):
    runner, _ = _run(slab, "optical_world", up_axis="+z")
    assert runner.mapping.up_axis == "+z"
    # optical_world's z is forward: every frame's camera is counted as tilted against that "up"
    assert runner.mapping.map.tilted == runner.mapping.map.frames == 4
