"""The built-in TF buffer against hand-computed chains."""
import numpy as np
import pytest

from kdbts_ros.core import geometry
from kdbts_ros.core.tf_buffer import TfBuffer, TfError

S = 1_000_000_000


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
    np.testing.assert_allclose(buf.lookup("cam", "odom", 11 * S), np.linalg.inv(_T(2, 0, 1.5, np.pi / 2)),
                               atol=1e-12)
    buf.set_transform("base_link", "lidar", 0, _T(x=0.5), static=True)
    np.testing.assert_allclose(buf.lookup("cam", "lidar", 10 * S), _T(x=0.5, z=-1.5), atol=1e-12)


@pytest.mark.parametrize("stamp,reason", [(9 * S, "past"), (12 * S, "future")])
def test_extrapolation_is_refused_with_its_reason(stamp, reason):
    buf = TfBuffer()
    buf.set_transform("odom", "base", 10 * S, _T(), static=False)
    buf.set_transform("odom", "base", 11 * S, _T(x=1), static=False)
    with pytest.raises(TfError) as exc:
        buf.lookup("odom", "base", stamp)
    assert exc.value.reason == reason


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
    with pytest.raises(TfError):
        buf.lookup("odom", "base", 19 * S)
    buf.clear()
    with pytest.raises(TfError):
        buf.lookup("odom", "base", 0)
