"""The gravity rule of the world map: which fixed-frame axis is up, and the rotation that makes it z."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kdbts_ros.core.world_map import UP_AXES, gravity_rotation, up_axis_of


def _axis(name: str) -> np.ndarray:
    v = np.zeros(3)
    v["xyz".index(name[1])] = 1.0 if name[0] == "+" else -1.0
    return v


@pytest.mark.parametrize("up", UP_AXES)
def test_the_gravity_rotation_takes_the_up_axis_to_z_and_is_a_rotation(up):
    T = gravity_rotation(up)
    R = T[:3, :3]
    np.testing.assert_allclose(R @ _axis(up), [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0) and not T[:3, 3].any()
    # the smallest such turn: a quarter turn for a horizontal axis, none or a half turn for z
    angle = np.degrees(Rotation.from_matrix(R).magnitude())
    assert angle == pytest.approx({"+z": 0.0, "-z": 180.0}.get(up, 90.0))


def test_auto_takes_the_axis_nearest_the_cameras_up():
    # a camera pitched 20 degrees down in a REP 103 frame: optical -y mostly along +z
    pitch = Rotation.from_euler("y", 20, degrees=True).as_matrix()
    T = np.eye(4)
    T[:3, :3] = pitch @ np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    assert up_axis_of(T) == "+z"
    assert up_axis_of(np.eye(4)) == "-y"  # an optical-frame world seen from its own origin (kitti2bag odometry)
    rolled = np.eye(4)
    rolled[:3, :3] = Rotation.from_euler("z", 100, degrees=True).as_matrix()  # rolled past 90 degrees
    assert up_axis_of(rolled) == "+x"


def test_an_unknown_axis_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        gravity_rotation("up")
