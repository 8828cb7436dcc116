"""rosbag2 files (sqlite3 or mcap) written and read with the pure-Python ``rosbags`` library.

Messages are serialised by rclpy itself (CDR, exactly what a ROS 2 publisher sends), stored raw,
and replayed raw: ``Publisher.publish(bytes)`` sends them without decoding.
"""

from __future__ import annotations

import importlib
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rclpy.serialization import serialize_message

from ovseg3d.errors import UserError

STORAGES = ("sqlite3", "mcap")


def msgtype_name(msg) -> str:
    """'sensor_msgs/msg/Image' for a sensor_msgs.msg.Image instance."""
    package = type(msg).__module__.split(".")[0]
    return f"{package}/msg/{type(msg).__name__}"


def message_class(msgtype: str):
    """The rclpy message class of 'pkg/msg/Name' (rosidl_runtime_py is not on PyPI)."""
    try:
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError):
        raise UserError(f"message type {msgtype!r} is not installed here") from None


def write_bag(messages: Iterable, out: Path, storage: str = "sqlite3") -> dict[str, int]:
    """Write (stamp seconds, topic, message) items to a new rosbag2 folder; returns counts per
    topic. Relative topic names become absolute. Written to a temporary folder and renamed, so a
    failure leaves no half bag under ``out``."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if storage not in STORAGES:
        raise UserError(f"unknown bag storage {storage!r}; choose from {', '.join(STORAGES)}")
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} already exists; rosbag2 writes a new folder")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    typestore = get_typestore(Stores.ROS2_KILTED)
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    counts: Counter[str] = Counter()
    with Writer(tmp, version=8, storage_plugin=plugin) as writer:
        connections = {}
        for item in messages:
            topic = item.topic if item.topic.startswith("/") else "/" + item.topic
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype_name(item.msg), typestore=typestore)
            writer.write(connections[topic], round(item.stamp * 1e9), serialize_message(item.msg))
            counts[topic] += 1
    tmp.rename(out)
    return dict(counts)


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    timestamp_ns: int
    raw: bytes


def _open(path: Path):
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not (path / "metadata.yaml").exists():
        raise UserError(f"{path} is not a rosbag2 folder (no metadata.yaml)")
    reader = Reader(path)
    try:
        reader.open()
    except Exception as exc:  # rosbags raises several types for damaged bags
        raise UserError(f"cannot open the bag {path}: {exc}") from None
    return reader


def bag_topics(path: Path) -> dict[str, str]:
    """{topic: msgtype} of a bag, checking that it opens."""
    reader = _open(path)
    try:
        return {c.topic: c.msgtype for c in reader.connections}
    finally:
        reader.close()


def read_bag(path: Path, topics: Iterable[str] | None = None
             ) -> tuple[dict[str, str], int, Iterator[BagMessage]]:
    """({topic: msgtype}, message count, messages in time order); sqlite3 and mcap alike."""
    reader = _open(path)
    types = {c.topic: c.msgtype for c in reader.connections}
    wanted = [c for c in reader.connections if topics is None or c.topic in set(topics)]

    def messages() -> Iterator[BagMessage]:
        try:
            for conn, timestamp, raw in reader.messages(connections=wanted):
                yield BagMessage(conn.topic, conn.msgtype, timestamp, bytes(raw))
        finally:
            reader.close()

    return types, sum(c.msgcount for c in wanted), messages()


def write_scene_bag(scene: Path, storage: str = "mcap", robot: bool = False) -> Path:
    """The scene's sensor streams (RGB, depth, CameraInfo, LiDAR, TF) as ``<scene>/rosbag2_<storage>``;
    ``robot``: as a robot records them (``scene_stream(robot=True)``), ``<scene>/rosbag2_robot_<storage>``."""
    from ovseg3d.ros_tools.scene_stream import scene_stream

    bag = scene / f"rosbag2_{'robot_' if robot else ''}{storage}"
    counts = write_bag(scene_stream(scene, robot=robot), bag, storage)
    print(f"wrote {bag} ({sum(counts.values())} messages on {len(counts)} topics)")
    return bag
