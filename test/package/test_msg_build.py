"""The rosidl-generated kdbts_ros/msg/DensityGrid works in the venv (tools/build_msgs.sh).

Checks real values through: the generated Python class, a Fast DDS publisher in a
second process -> subscription here (loopback only, random domain), and CDR bytes
from rclpy.serialization read back by rosbags with the type parsed from the .msg.
"""

import array
import math
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MSG_FILE = Path(__file__).resolve().parents[2] / "msg" / "DensityGrid.msg"
TYPENAME = "kdbts_ros/msg/DensityGrid"
NAN = float("nan")
DENSITY = [0.0, 1.5, NAN, 3.25, 1e-3, 250.0]  # float32-exact except 1e-3 (compared at f32)

# Source of a message with non-default values in every field; exec'd here and
# in the publisher subprocess so both build the same message.
MAKE_MSG = textwrap.dedent(
    f"""
    import array
    from kdbts_ros.msg import DensityGrid

    def make_msg():
        m = DensityGrid()
        m.header.stamp.sec = 1700000000
        m.header.stamp.nanosec = 123456789
        m.header.frame_id = "cam0_optical"
        m.origin.position.x, m.origin.position.y, m.origin.position.z = -4.0, 0.5, -1.25
        m.origin.orientation.x, m.origin.orientation.y = 0.0, 0.0
        m.origin.orientation.z, m.origin.orientation.w = 0.6, 0.8
        m.resolution = 0.25
        m.resolution_z = 0.5
        m.size_x, m.size_y, m.size_z = 3, 2, 1
        m.density = array.array("f", [float(v) for v in {[repr(v) for v in DENSITY]!r}])
        m.head = "mv"
        m.num_views = 3
        return m
    """
)


def make_msg():
    ns = {}
    exec(MAKE_MSG, ns)
    return ns["make_msg"]()


def f32(x):
    return array.array("f", [x])[0]


def assert_same_floats(got, want):
    got = list(got)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if math.isnan(w):
            assert math.isnan(g)
        else:
            assert g == f32(w)


def assert_fields(m):
    """m: a generated DensityGrid or a rosbags dataclass; same attribute names."""
    assert m.header.stamp.sec == 1700000000
    assert m.header.stamp.nanosec == 123456789
    assert m.header.frame_id == "cam0_optical"
    p, q = m.origin.position, m.origin.orientation
    assert (p.x, p.y, p.z) == (-4.0, 0.5, -1.25)
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.6, 0.8)
    assert (m.resolution, m.resolution_z) == (0.25, 0.5)
    assert (m.size_x, m.size_y, m.size_z) == (3, 2, 1)
    assert_same_floats(m.density, DENSITY)
    assert m.head == "mv"
    assert m.num_views == 3


def test_generated_class():
    from kdbts_ros.msg import DensityGrid

    m = DensityGrid()
    assert (m.size_x, m.resolution, m.head, m.num_views) == (0, 0.0, "", 0)
    assert m.origin.orientation.w == 1.0 and len(m.density) == 0
    assert DensityGrid.__module__.startswith("kdbts_ros.msg")
    assert_fields(make_msg())
    # The generated msg/ and the hand-written modules live in one package directory.
    import kdbts_ros
    import kdbts_ros.msg

    pkg = Path(kdbts_ros.__file__).parent
    assert Path(kdbts_ros.msg.__file__).parent == pkg / "msg"
    assert (pkg / "core" / "config.py").is_file()


def test_serialization_matches_rosbags():
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from kdbts_ros.msg import DensityGrid

    raw = serialize_message(make_msg())
    ts = get_typestore(Stores.ROS2_JAZZY)
    ts.register(get_types_from_msg(MSG_FILE.read_text(), TYPENAME))
    dec = ts.deserialize_cdr(raw, TYPENAME)
    assert_fields(dec)
    assert dec.density.dtype.name == "float32"
    # ...and back: rosbags' encoding has the same layout (equal up to alignment
    # padding, which Fast CDR leaves uninitialised) and rclpy decodes it.
    back = bytes(ts.serialize_cdr(dec, TYPENAME))
    assert len(back) == len(raw)
    assert_fields(deserialize_message(back, DensityGrid))


PUBLISHER = MAKE_MSG + textwrap.dedent(
    """
    import rclpy
    rclpy.init()
    node = rclpy.create_node("kdbts_test_pub")
    pub = node.create_publisher(DensityGrid, "kdbts_test_grid", 10)
    msg = make_msg()
    while rclpy.ok():  # until the test kills us
        pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.05)
    """
)


def test_pubsub_roundtrip_fastdds():
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from kdbts_ros.msg import DensityGrid

    # Localhost-only discovery on a random domain: no interference from other hosts/tests.
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(random.randint(100, 200)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
    )
    env.pop("ROS_LOCALHOST_ONLY", None)
    saved = dict(os.environ)
    os.environ.update(env)  # read by rcl at init
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    ctx = Context()
    try:
        rclpy.init(context=ctx)
        node = rclpy.create_node("kdbts_test_sub", context=ctx)
        got = []
        node.create_subscription(DensityGrid, "kdbts_test_grid", got.append, 10)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline and proc.poll() is None:
            ex.spin_once(timeout_sec=0.1)
        if not got:
            proc.kill()
            pytest.fail("no DensityGrid received; publisher output:\n" + proc.communicate()[0].decode(errors="replace"))
        assert isinstance(got[0], DensityGrid)
        assert_fields(got[0])
        assert ("/kdbts_test_grid", ["kdbts_ros/msg/DensityGrid"]) in node.get_topic_names_and_types()
        ex.shutdown()
        node.destroy_node()
    finally:
        proc.kill()
        proc.wait()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
        os.environ.clear()
        os.environ.update(saved)
