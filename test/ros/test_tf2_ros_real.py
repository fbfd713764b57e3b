"""Tf2Store over the real tf2_ros.Buffer gives what the built-in buffer gives, where tf2_ros is installed.

tf2_ros is not on PyPI (it needs the tf2 C++ library and tf2_py, built from ros2/geometry2), so
this module is skipped where it is missing; test_tf_store.py then checks the adapter against a
stand-in written after tf2_ros's API, and this module is what checks that stand-in's behaviour.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

pytest.importorskip("tf2_ros")
from conftest import _M, S

from kdbts_ros.core.tf_buffer import TfBuffer, TfError
from kdbts_ros.ros.tf_store import Tf2Store, make_tf_store

T_BASE_CAM = _M(Rotation.from_euler("zyx", [-np.pi / 2, 0.0, -np.pi / 2]), [0.5, 0.0, 1.5])
T_ODOM_BASE = [
    _M(Rotation.from_euler("zyx", [0.1, 0.02, -0.01]), [3.0, -1.0, 0.25]),
    _M(Rotation.from_euler("zyx", [0.5, -0.05, 0.03]), [4.0, -0.5, 0.3]),
]


def _stores(limit_s: float = 0.0) -> list:
    """The real tf2 store and the built-in one, fed the same transforms: odom -> base at 10 s and 11 s, base -> cam."""
    tf2, name = make_tf_store(10.0, limit_s)
    assert name == "tf2_ros" and isinstance(tf2, Tf2Store)
    stores = [tf2, TfBuffer(10 * S, round(limit_s * S))]
    for store in stores:
        store.set_transform("base", "cam", 0, T_BASE_CAM, static=True)
        store.set_transform("vehicle", "lidar", 0, np.eye(4), static=True)
        for i, T in enumerate(T_ODOM_BASE):
            store.set_transform("odom", "base", (10 + i) * S, T, static=False)
    return stores


@pytest.mark.parametrize("stamp", [10 * S, 10 * S + S // 4, 10 * S + S // 2, 11 * S])
def test_chain_lookups_interpolate_alike(stamp):
    tf2, builtin = _stores()
    for target, source in (("odom", "cam"), ("cam", "odom"), ("base", "cam")):
        np.testing.assert_allclose(tf2.lookup(target, source, stamp), builtin.lookup(target, source, stamp), atol=1e-9)
    np.testing.assert_allclose(tf2.lookup("odom", "base", 10 * S), T_ODOM_BASE[0], atol=1e-12)


@pytest.mark.parametrize(
    "target,source,stamp,reason",
    [
        ("odom", "nowhere", 10 * S, "unknown_frame"),
        ("odom", "lidar", 10 * S, "disconnected"),
        ("odom", "cam", 12 * S, "future"),
        ("odom", "cam", 9 * S, "past"),
        ("cam", "odom", 12 * S, "future"),
    ],
)
def test_errors_carry_the_same_reason(target, source, stamp, reason):
    for store in _stores():
        with pytest.raises(TfError) as exc:
            store.lookup(target, source, stamp)
        assert exc.value.reason == reason, type(store).__name__


@pytest.mark.parametrize("stamp,reason", [(11 * S, "future"), (9 * S, "past")])
def test_one_sample_extrapolation_reads_the_direction_from_tf2s_text(stamp, reason):
    store = Tf2Store(10.0, 0.0)
    store.set_transform("odom", "base", 10 * S, T_ODOM_BASE[0], static=False)
    with pytest.raises(TfError) as exc:
        store.lookup("odom", "base", stamp)
    assert exc.value.reason == reason


def test_extrapolation_limit_holds_the_newest_value_and_clear_keeps_statics():
    tf2, builtin = _stores(limit_s=0.05)
    for store in (tf2, builtin):
        np.testing.assert_allclose(store.lookup("odom", "base", 11 * S + S // 25), T_ODOM_BASE[1], atol=1e-12)
        with pytest.raises(TfError):
            store.lookup("odom", "base", 11 * S + S // 10)
        store.clear()
        with pytest.raises(TfError):
            store.lookup("odom", "base", 10 * S)
        np.testing.assert_allclose(store.lookup("base", "cam", 50 * S), T_BASE_CAM, atol=1e-12)
