"""Tf2Store and make_tf_store against a fake tf2_ros.

This checks the adapter's use of tf2_ros's documented API (Buffer(cache_time=...),
set_transform / set_transform_static(TransformStamped, authority),
lookup_transform(target, source, Time), clear(), the exception classes and their
message texts, as in ros2/geometry2 tf2_ros_py/tf2_ros/buffer.py, tf2_py/src/tf2_py.cpp,
tf2/src/buffer_core.cpp and tf2/src/cache.cpp), not tf2 itself: the fake stores
one TransformStamped list per child frame and answers only a direct parent/child
pair (either way round) at a stored stamp or at time 0 (the newest); it does not
interpolate.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

pytest.importorskip("rclpy")
from conftest import _M, S
from geometry_msgs.msg import TransformStamped
from rclpy.duration import Duration
from rclpy.time import Time
from scipy.spatial.transform import Rotation

from kdbts_ros.core.tf_buffer import TfBuffer, TfError
from kdbts_ros.ros.tf_store import AUTHORITY, Tf2Store, make_tf_store

T_ODOM_BASE = _M(Rotation.from_euler("zyx", [0.7, -0.2, 0.1]), [3.0, -1.0, 0.25])
T_BASE_CAM = _M(Rotation.from_euler("zyx", [-np.pi / 2, 0.0, -np.pi / 2]), [0.5, 0.0, 1.5])


def _fake_tf2_ros() -> types.ModuleType:
    """A tf2_ros stand-in: the real class names, call signatures and error texts."""
    mod = types.ModuleType("tf2_ros")

    class TransformException(Exception):
        pass

    for name in (
        "LookupException",
        "ConnectivityException",
        "ExtrapolationException",
        "InvalidArgumentException",
        "TimeoutException",
    ):
        setattr(mod, name, type(name, (TransformException,), {}))
    mod.TransformException = TransformException

    def sec(ns: int) -> str:
        return f"{ns / 1e9:.6f}"  # tf2's displayTimePoint

    class Buffer:
        def __init__(self, cache_time: Duration | None = None, node=None):
            assert isinstance(cache_time, Duration)
            self.cache_time = cache_time
            self.dynamic: dict[str, list[TransformStamped]] = {}
            self.static: dict[str, TransformStamped] = {}
            self.parents: dict[str, str] = {}  # tf2 never forgets a frame id, even on clear()
            self.authorities: set[str] = set()

        def _check(self, transform, authority):
            assert isinstance(transform, TransformStamped) and isinstance(authority, str)
            self.authorities.add(authority)
            self.parents[transform.child_frame_id] = transform.header.frame_id

        def set_transform(self, transform: TransformStamped, authority: str) -> None:
            self._check(transform, authority)
            items = self.dynamic.setdefault(transform.child_frame_id, [])
            items.append(transform)
            items.sort(key=lambda ts: Time.from_msg(ts.header.stamp).nanoseconds)

        def set_transform_static(self, transform: TransformStamped, authority: str) -> None:
            self._check(transform, authority)
            self.static[transform.child_frame_id] = transform

        def clear(self) -> None:
            # tf2 empties each frame's time cache (frames stay known); static caches ignore it
            self.dynamic = {child: [] for child in self.dynamic}

        def _getFrameStrings(self) -> list[str]:  # tf2_py BufferCore's name
            return list(set(self.parents) | set(self.parents.values()))

        def _edge(self, child: str) -> list[TransformStamped]:
            return [self.static[child]] if child in self.static else self.dynamic.get(child, [])

        def lookup_transform(
            self, target_frame: str, source_frame: str, time: Time, timeout: Duration = Duration()
        ) -> TransformStamped:
            assert isinstance(time, Time)
            known = set(self.parents) | set(self.parents.values())
            for frame, arg in ((target_frame, "target_frame"), (source_frame, "source_frame")):
                if not frame:
                    raise mod.InvalidArgumentException(
                        f'Invalid argument "{frame}" passed to lookupTransform argument {arg} - '
                        "in tf2 frame_ids cannot be empty"
                    )
                if frame not in known:
                    raise mod.LookupException(f'"{frame}" passed to lookupTransform argument {arg} does not exist. ')
            if self.parents.get(source_frame) == target_frame:
                child, inverse = source_frame, False
            elif self.parents.get(target_frame) == source_frame:
                child, inverse = target_frame, True
            else:
                raise mod.ConnectivityException(
                    f"Could not find a connection between '{target_frame}' and '{source_frame}' because "
                    "they are not part of the same tree.Tf has two or more unconnected trees."
                )
            ts = self._at(
                child,
                time.nanoseconds,
                f", when looking up transform from frame [{source_frame}] to frame [{target_frame}]",
            )
            return self._answer(ts, target_frame, source_frame, inverse)

        def _at(self, child: str, ns: int, where: str) -> TransformStamped:
            items = self._edge(child)
            if child in self.static:
                return items[0]
            stamps = [Time.from_msg(ts.header.stamp).nanoseconds for ts in items]
            if not items or (len(items) == 1 and ns not in (0, stamps[0])):
                only = stamps[0] if items else 0
                raise mod.ExtrapolationException(
                    f"Lookup would require extrapolation at time {sec(ns)}, "
                    f"but only time {sec(only)} is in the buffer{where}"
                )
            if ns == 0:
                return items[-1]
            if ns > stamps[-1]:
                raise mod.ExtrapolationException(
                    f"Lookup would require extrapolation into the future.  Requested time {sec(ns)} but "
                    f"the latest data is at time {sec(stamps[-1])}{where}"
                )
            if ns < stamps[0]:
                raise mod.ExtrapolationException(
                    f"Lookup would require extrapolation into the past.  Requested time {sec(ns)} but "
                    f"the earliest data is at time {sec(stamps[0])}{where}"
                )
            if ns not in stamps:
                raise NotImplementedError("the fake tf2_ros does not interpolate")
            return items[stamps.index(ns)]

        @staticmethod
        def _answer(ts: TransformStamped, target: str, source: str, inverse: bool) -> TransformStamped:
            tr, q = ts.transform.translation, ts.transform.rotation
            rot, t = Rotation.from_quat([q.x, q.y, q.z, q.w]), np.array([tr.x, tr.y, tr.z])
            if inverse:
                rot, t = rot.inv(), -rot.inv().apply(t)
            out = TransformStamped()
            out.header.frame_id, out.child_frame_id, out.header.stamp = target, source, ts.header.stamp
            out.transform.translation.x, out.transform.translation.y, out.transform.translation.z = t
            (out.transform.rotation.x, out.transform.rotation.y, out.transform.rotation.z, out.transform.rotation.w) = (
                rot.as_quat()
            )
            return out

    mod.Buffer = Buffer
    return mod


@pytest.fixture
def fake_tf2(monkeypatch) -> types.ModuleType:
    mod = _fake_tf2_ros()
    monkeypatch.setitem(sys.modules, "tf2_ros", mod)
    return mod


@pytest.fixture(params=["tf2_ros", "builtin"])
def store(request, fake_tf2):
    """Both stores through the factory: the adapter must keep the built-in's contract."""
    tf, name = make_tf_store(10.0, 0.0, prefer_tf2=request.param == "tf2_ros")
    assert name == request.param
    return tf


def test_transform_round_trips(store):
    store.set_transform("odom", "base", 5 * S + 123, T_ODOM_BASE, static=False)
    store.set_transform("base", "cam", 0, T_BASE_CAM, static=True)
    stamp = 5 * S + 123
    np.testing.assert_allclose(store.lookup("odom", "base", stamp), T_ODOM_BASE, atol=1e-12)
    np.testing.assert_allclose(store.lookup("base", "odom", stamp), np.linalg.inv(T_ODOM_BASE), atol=1e-12)
    np.testing.assert_allclose(store.lookup("base", "cam", 77 * S), T_BASE_CAM, atol=1e-12)


def test_tf2_store_builds_the_documented_message(fake_tf2):
    store = Tf2Store(cache_s=2.5, extrapolation_limit_s=0.0)
    store.set_transform("odom", "base", 5 * S + 123, T_ODOM_BASE, static=False)
    buffer = store._buffer
    (ts,) = buffer.dynamic["base"]
    assert (ts.header.frame_id, ts.child_frame_id) == ("odom", "base")
    assert (ts.header.stamp.sec, ts.header.stamp.nanosec) == (5, 123)
    assert buffer.authorities == {AUTHORITY} and buffer.cache_time.nanoseconds == 2_500_000_000


@pytest.mark.parametrize(
    "target,source,stamp,reason",
    [
        ("odom", "nowhere", 10 * S, "unknown_frame"),
        ("odom", "lidar", 10 * S, "disconnected"),
        ("odom", "base", 12 * S, "future"),
        ("odom", "base", 9 * S, "past"),
        ("base", "odom", 12 * S, "future"),
    ],
)
def test_errors_carry_their_reason(store, target, source, stamp, reason):
    store.set_transform("odom", "base", 10 * S, T_ODOM_BASE, static=False)
    store.set_transform("odom", "base", 11 * S, T_ODOM_BASE, static=False)
    store.set_transform("vehicle", "lidar", 0, np.eye(4), static=True)
    with pytest.raises(TfError) as exc:
        store.lookup(target, source, stamp)
    assert exc.value.reason == reason


@pytest.mark.parametrize("stamp,reason", [(11 * S, "future"), (9 * S, "past")])
def test_one_sample_extrapolation_reads_the_direction_from_tf2s_text(fake_tf2, stamp, reason):
    # tf2_py raises one ExtrapolationException class; "only time ... is in the buffer" names no direction
    store = Tf2Store(10.0, 0.0)
    store.set_transform("odom", "base", 10 * S, T_ODOM_BASE, static=False)
    with pytest.raises(TfError) as exc:
        store.lookup("odom", "base", stamp)
    assert exc.value.reason == reason and "but only time 10.000000 is in the buffer" in str(exc.value)


def test_tf2_specific_errors(fake_tf2):
    store = Tf2Store(10.0, 0.0)
    store.set_transform("base", "cam", 0, np.eye(4), static=True)
    store.set_transform("odom", "base", 10 * S, T_ODOM_BASE, static=False)
    with pytest.raises(TfError) as exc:
        store.lookup("", "cam", 10 * S)
    assert exc.value.reason == "invalid"
    store.clear()  # tf2 keeps statics and the frames, with an empty cache: new data is due
    np.testing.assert_allclose(store.lookup("base", "cam", 10 * S), np.eye(4))
    with pytest.raises(TfError) as exc:
        store.lookup("odom", "base", 10 * S)
    assert exc.value.reason == "future"


def test_an_unknown_frame_is_named_with_tf2s_frames_where_tf2_can_list_them(monkeypatch, fake_tf2):
    store = Tf2Store(10.0, 0.0)
    store.set_transform("odom", "camera_left", 10 * S, T_ODOM_BASE, static=False)
    with pytest.raises(TfError) as exc:
        store.lookup("odom", "camera_gray_left", 10 * S)
    assert exc.value.reason == "unknown_frame"
    assert str(exc.value).endswith("does not exist.  (its frames: camera_left, odom)")
    monkeypatch.delattr(fake_tf2.Buffer, "_getFrameStrings")  # a tf2 without the call: the message as tf2 says it
    with pytest.raises(TfError) as exc:
        store.lookup("odom", "camera_gray_left", 10 * S)
    assert exc.value.reason == "unknown_frame" and str(exc.value).endswith("does not exist. ")


def test_other_tf2_errors_are_invalid(monkeypatch, fake_tf2):
    store = Tf2Store(10.0, 0.0)

    def timeout(*args, **kwargs):
        raise fake_tf2.TimeoutException("Timed out")

    monkeypatch.setattr(store._buffer, "lookup_transform", timeout)
    with pytest.raises(TfError) as exc:
        store.lookup("odom", "base", 10 * S)
    assert exc.value.reason == "invalid"


LIMIT_S = 0.05
LIMIT = round(LIMIT_S * S)


@pytest.mark.parametrize(
    "stamp,reason",
    [
        (11 * S + LIMIT, None),
        (11 * S + LIMIT + 1, "future"),
        # tf2 offers no oldest-data lookup: a 'past' stamp is rescued only near the newest data
        (10 * S - 1, "past"),
    ],
)
def test_extrapolation_limit_falls_back_to_the_newest_transform(fake_tf2, stamp, reason):
    store = Tf2Store(10.0, LIMIT_S)
    store.set_transform("odom", "base", 10 * S, np.eye(4), static=False)
    store.set_transform("odom", "base", 11 * S, T_ODOM_BASE, static=False)
    if reason is None:
        np.testing.assert_allclose(store.lookup("odom", "base", stamp), T_ODOM_BASE, atol=1e-12)
    else:
        with pytest.raises(TfError) as exc:
            store.lookup("odom", "base", stamp)
        assert exc.value.reason == reason


@pytest.mark.parametrize("stamp,ok", [(10 * S - LIMIT, True), (10 * S - LIMIT - 1, False)])
def test_extrapolation_limit_with_one_sample_holds_it_both_ways(fake_tf2, stamp, ok):
    store = Tf2Store(10.0, LIMIT_S)
    store.set_transform("odom", "base", 10 * S, T_ODOM_BASE, static=False)
    for t in (stamp, 20 * S - stamp):  # as far before the sample as after it
        if ok:
            np.testing.assert_allclose(store.lookup("odom", "base", t), T_ODOM_BASE, atol=1e-12)
        else:
            with pytest.raises(TfError):
                store.lookup("odom", "base", t)


def test_make_tf_store_prefers_tf2_and_falls_back(monkeypatch, fake_tf2):
    tf, name = make_tf_store(3.0, 0.02)
    assert name == "tf2_ros" and isinstance(tf, Tf2Store) and tf.extrapolation_limit_ns == 20_000_000
    assert tf._buffer.cache_time.nanoseconds == 3 * S
    tf, name = make_tf_store(3.0, 0.02, prefer_tf2=False)
    assert name == "builtin" and isinstance(tf, TfBuffer)
    assert (tf.cache_ns, tf.extrapolation_limit_ns) == (3 * S, 20_000_000)
    monkeypatch.setitem(sys.modules, "tf2_ros", None)  # makes `import tf2_ros` raise ImportError
    tf, name = make_tf_store(3.0, 0.02)
    assert name == "builtin" and isinstance(tf, TfBuffer)
    assert (tf.cache_ns, tf.extrapolation_limit_ns) == (3 * S, 20_000_000)
