"""Writing ROS 2 bags (mcap or sqlite3) with rosbags, with offered QoS that replays correctly."""
from __future__ import annotations

from pathlib import Path

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from .. import messages as M

_ZERO = QosTime(0, 0)


def _qos(durability: QosDurability) -> Qos:
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, durability, _ZERO, _ZERO,
               QosLiveliness.AUTOMATIC, _ZERO, False)


class BagWriter:
    """Adds connections on first use; ``/tf_static`` is offered transient-local so RViz gets it on replay."""

    def __init__(self, path: str | Path, storage: str = "mcap"):
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
        self.writer = Writer(Path(path), version=8, storage_plugin=plugin)
        self.connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        self.writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self.writer.close()

    def write(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        """Write one serialized message received or published at ``stamp_ns``."""
        if topic not in self.connections:
            durability = QosDurability.TRANSIENT_LOCAL if topic == "/tf_static" else QosDurability.VOLATILE
            self.connections[topic] = self.writer.add_connection(
                topic, msgtype, typestore=M.typestore(), offered_qos_profiles=[_qos(durability)])
        self.writer.write(self.connections[topic], stamp_ns, data)
        self.counts[topic] = self.counts.get(topic, 0) + 1
