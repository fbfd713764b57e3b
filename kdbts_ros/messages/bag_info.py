"""What a ROS 2 bag holds, read from its metadata without playing it: topics, storage, cameras.

Used before anything runs: by the launch file (one clock source, the storage plugin
``ros2 bag play`` needs) and by ``kdbts replay`` (which cameras to feed the node).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from kdbts_ros.messages import cdr, sensor_data
from kdbts_ros.messages.bag_reader import open_bag

CLOCK_TOPIC = "/clock"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
# rosbag2 storage identifier by file suffix, for a bag given as one file rather than a folder
_SUFFIX_STORAGE = {".mcap": "mcap", ".db3": "sqlite3"}


def bag_topics(path: str | Path) -> dict[str, str]:
    """Topic -> message type of every topic in the bag (a bag folder, or a single .mcap / .db3 file; cut short too)."""
    with open_bag(path) as bag:
        return dict(bag.topics)


def bag_storage(path: str | Path) -> str:
    """The rosbag2 storage identifier of a bag: 'mcap', 'sqlite3', ..."""
    path = Path(path)
    if path.is_dir():
        meta = yaml.safe_load((path / "metadata.yaml").read_text())
        return meta["rosbag2_bagfile_information"]["storage_identifier"]
    return _SUFFIX_STORAGE.get(path.suffix, path.suffix.lstrip("."))


def has_clock(topics: dict[str, str]) -> bool:
    """Whether the bag carries its own /clock (then ``ros2 bag play --clock`` would add a second one)."""
    return topics.get(CLOCK_TOPIC) == CLOCK_TYPE


def _natural(topic: str) -> list:
    """Sort key that puts cam_2 before cam_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", topic)]


def info_beside(image_topic: str) -> str:
    """The camera_info topic a driver publishes beside an image topic: ``<ns>/camera_info``."""
    return image_topic.removesuffix("/compressed").rsplit("/", 1)[0] + "/camera_info"


def camera_topics(topics: dict[str, str]) -> list[tuple[str, str]]:
    """(image topic, camera_info topic) of each camera in the bag, in natural name order.

    A camera is an image topic (sensor_msgs/Image, or CompressedImage on ``<image>/compressed``)
    with a CameraInfo topic beside it, as drivers and image_transport publish them:
    ``<ns>/image_raw`` (or any other name) next to ``<ns>/camera_info``. A camera that has both
    a raw and a compressed topic is taken raw.
    """
    cameras: dict[str, tuple[str, str]] = {}  # image base topic -> (image topic, info topic)
    for topic, msgtype in topics.items():
        if msgtype not in (cdr.IMAGE, cdr.COMPRESSED_IMAGE) or sensor_data.image_msgtype(topic) != msgtype:
            continue
        base = topic.removesuffix("/compressed") if msgtype == cdr.COMPRESSED_IMAGE else topic
        info = info_beside(topic)
        if topics.get(info) != CAMERA_INFO:
            continue
        if base not in cameras or msgtype == cdr.IMAGE:
            cameras[base] = (topic, info)
    return [cameras[base] for base in sorted(cameras, key=_natural)]


def tf_frames(path: str | Path, max_messages: int = 1000) -> tuple[set[str], list[str]]:
    """Frames named by the bag's first ``max_messages`` TF messages, and the roots of their trees.

    Roots are frames that are never a child; those that are the parent of a moving (``/tf``)
    transform come first (``world`` over a sensor rig's static root), then by name.
    """
    frames: set[str] = set()
    children: set[str] = set()
    moving_parents: set[str] = set()
    with open_bag(path) as bag:
        tf = (m for m in bag.messages() if m[1] in ("/tf", "/tf_static") and m[2] == TF_TYPE)
        for n, (_, topic, _, data) in enumerate(tf):
            if n >= max_messages:
                break
            try:
                transforms = sensor_data.tf_transforms(cdr.deserialize(data, TF_TYPE))
            except cdr.ConversionError:
                continue  # the runner counts it when it meets it; here it names no frame
            for parent, child, _, _, _ in transforms:
                frames.update((parent, child))
                children.add(child)
                if topic == "/tf":
                    moving_parents.add(parent)
    roots = sorted(frames - children, key=lambda f: (f not in moving_parents, _natural(f)))
    return frames, roots
