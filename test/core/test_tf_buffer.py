"""The built-in TF buffer against hand-computed chains."""

import numpy as np
import pytest
from conftest import _M, S
from scipy.spatial.transform import Rotation, Slerp

from kdbts_ros.core import geometry
from kdbts_ros.core.tf_buffer import FRAMES_NAMED, TfBuffer, TfError


def _T(x=0.0, y=0.0, z=0.0, yaw=0.0):
    return geometry.to_matrix(np.array([x, y, z]), np.array([0, 0, np.sin(yaw / 2), np.cos(yaw / 2)]))


def test_chain_with_static_and_dynamic_edges():
    buf = TfBuffer()
    buf.set_transform("base_link", "cam", 0, _T(z=1.5), static=True)
    buf.set_transform("odom", "base_link", 10 * S, _T(x=0.0), static=False)
    buf.set_transform("odom", "base_link", 11 * S, _T(x=2.0, yaw=np.pi / 2), static=False)
    T = buf.lookup("odom", "cam", 10 * S + S // 2)
    # halfway: x = 1, yaw = 45 degrees, the camera 1.5 m above the base
    np.testing.assert_allclose(T, _T(x=1.0, yaw=np.pi / 4) @ _T(z=1.5), atol=1e-12)
    # the inverse direction and a sibling frame through the common ancestor
    np.testing.assert_allclose(buf.lookup("cam", "odom", 11 * S), np.linalg.inv(_T(2, 0, 1.5, np.pi / 2)), atol=1e-12)
    buf.set_transform("base_link", "lidar", 0, _T(x=0.5), static=True)
    np.testing.assert_allclose(buf.lookup("cam", "lidar", 10 * S), _T(x=0.5, z=-1.5), atol=1e-12)


def test_three_level_chain_interpolates_the_dynamic_edge():
    # map -(static)-> odom -(dynamic)-> base_link -(static)-> cam, general 3D rotations
    R_mo, t_mo = Rotation.from_euler("zyx", [0.3, -0.1, 0.05]), np.array([100.0, -20.0, 0.5])
    R_bc, t_bc = Rotation.from_euler("zyx", [-np.pi / 2, 0.0, -np.pi / 2]), np.array([1.2, 0.1, 1.6])
    R_ob = Rotation.from_euler("zyx", [[0.2, 0.02, -0.03], [1.1, -0.08, 0.1]])
    t_ob = np.array([[3.0, 1.0, 0.0], [5.0, 4.0, 0.3]])
    buf = TfBuffer()
    buf.set_transform("map", "odom", 0, _M(R_mo, t_mo), static=True)
    buf.set_transform("base_link", "cam", 0, _M(R_bc, t_bc), static=True)
    for stamp, R, t in zip((20 * S, 20 * S + 400_000_000), R_ob, t_ob):
        buf.set_transform("odom", "base_link", stamp, _M(R, t), static=False)
    stamp = 20 * S + 100_000_000  # a quarter of the way between the two samples
    R_i = Slerp([0.0, 0.4], R_ob)([0.1])[0]
    t_i = 0.75 * t_ob[0] + 0.25 * t_ob[1]
    # composed by hand: x_map = R_mo (R_i (R_bc x + t_bc) + t_i) + t_mo
    R_mc = R_mo * R_i * R_bc
    t_mc = R_mo.apply(R_i.apply(t_bc) + t_i) + t_mo
    np.testing.assert_allclose(buf.lookup("map", "cam", stamp), _M(R_mc, t_mc), atol=1e-9)
    np.testing.assert_allclose(buf.lookup("cam", "map", stamp), _M(R_mc.inv(), -R_mc.inv().apply(t_mc)), atol=1e-9)
    np.testing.assert_allclose(buf.lookup("odom", "cam", stamp), _M(R_i * R_bc, R_i.apply(t_bc) + t_i), atol=1e-9)


@pytest.mark.parametrize("stamp,reason", [(9 * S, "past"), (12 * S, "future")])
def test_extrapolation_is_refused_with_its_reason(stamp, reason):
    buf = TfBuffer()
    buf.set_transform("odom", "base", 10 * S, _T(), static=False)
    buf.set_transform("odom", "base", 11 * S, _T(x=1), static=False)
    with pytest.raises(TfError) as exc:
        buf.lookup("odom", "base", stamp)
    assert exc.value.reason == reason


LIMIT = 50_000_000


@pytest.mark.parametrize(
    "stamp,x",
    [(11 * S + LIMIT, 1.0), (10 * S - LIMIT, 0.0), (11 * S + LIMIT + 1, "future"), (10 * S - LIMIT - 1, "past")],
)
def test_extrapolation_limit_holds_the_end_value_just_inside(stamp, x):
    buf = TfBuffer(extrapolation_limit_ns=LIMIT)
    buf.set_transform("odom", "base", 10 * S, _T(), static=False)
    buf.set_transform("odom", "base", 11 * S, _T(x=1, yaw=0.5), static=False)
    if isinstance(x, str):
        with pytest.raises(TfError) as exc:
            buf.lookup("odom", "base", stamp)
        assert exc.value.reason == x
    else:
        np.testing.assert_allclose(buf.lookup("odom", "base", stamp), _T(x=x, yaw=0.5 * x), atol=1e-12)


def test_clear_keeps_static_transforms():
    buf = TfBuffer()
    buf.set_transform("base", "cam", 0, _T(z=1.5), static=True)
    buf.set_transform("odom", "base", 10 * S, _T(x=1), static=False)
    buf.clear()
    np.testing.assert_allclose(buf.lookup("base", "cam", 99 * S), _T(z=1.5))
    with pytest.raises(TfError) as exc:
        buf.lookup("odom", "cam", 10 * S)
    assert exc.value.reason == "unknown_frame"  # odom came only with the dynamic edge


def test_unknown_and_disconnected_frames():
    buf = TfBuffer()
    buf.set_transform("a", "b", 0, _T(), static=True)
    buf.set_transform("c", "d", 0, _T(), static=True)
    with pytest.raises(TfError) as exc:
        buf.lookup("a", "zzz", 0)
    assert exc.value.reason == "unknown_frame"
    with pytest.raises(TfError) as exc:
        buf.lookup("a", "d", 0)
    assert exc.value.reason == "disconnected"


def test_history_is_bounded_and_restarts_when_time_jumps_back():
    buf = TfBuffer(cache_ns=5 * S)
    for i in range(20):
        buf.set_transform("odom", "base", i * S, _T(x=i), static=False)
    with pytest.raises(TfError):
        buf.lookup("odom", "base", 10 * S)  # pruned
    buf.set_transform("odom", "base", 0, _T(x=100), static=False)  # a bag looped
    np.testing.assert_allclose(buf.lookup("odom", "base", 0), _T(x=100))
    buf.set_transform("odom", "base", S, _T(x=102), static=False)  # the restarted edge interpolates
    np.testing.assert_allclose(buf.lookup("odom", "base", S // 2), _T(x=101), atol=1e-12)
    with pytest.raises(TfError):
        buf.lookup("odom", "base", 19 * S)
    buf.clear()
    with pytest.raises(TfError):
        buf.lookup("odom", "base", 0)


def test_an_unknown_frame_is_named_with_the_frames_the_buffer_has():
    buf = TfBuffer()
    with pytest.raises(TfError, match=r"'world' does not exist in TF \(it has no frame yet\)"):
        buf.lookup("world", "camera", 0)
    buf.set_transform("world", "camera_left", 5, np.eye(4), static=False)
    buf.set_transform("camera_left", "lens", 0, np.eye(4), static=True)
    with pytest.raises(
        TfError, match=r"'camera_gray_left' does not exist in TF \(its frames: camera_left, lens, world\)"
    ):
        buf.lookup("world", "camera_gray_left", 5)
    for i in range(FRAMES_NAMED + 3):
        buf.set_transform("world", f"f{i:02d}", 0, np.eye(4), static=True)
    with pytest.raises(TfError, match=r"\(its frames: camera_left, f00, .*, f10 and 6 more\)") as err:
        buf.lookup("world", "x", 0)
    assert err.value.reason == "unknown_frame"
