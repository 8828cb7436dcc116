"""A catalogue of hostile and odd inputs for the node, sent over real topics and services.

Each ``Hostile`` sends one bad input to a node process through a ``RobotStream`` and names the
/diagnostics counter its refusal is counted under. The adversarial tests send each and check the
node lives, answers, still maps a fresh probe where it belongs and kept its map; the soak
(``ovseg3d bench node``) mixes them into a long stream. The service-level ones (odd words, format
strings, unsafe paths) check the answer themselves: each must be a refusal or a plain success.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import PointField
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from ovseg3d.ros.images import array_to_image, camera_info
from ovseg3d.ros.transforms import matrix_to_transform, to_stamp
from ovseg3d.ros_tools.robot_stream import BASE_LIDAR, MAP_BASE, K, RobotStream

FAR_FUTURE = 1e6  # seconds ahead of the clock (11 days)
ELSEWHERE = np.eye(4)
ELSEWHERE[:3, 3] = [50.0, 0.0, 0.0]  # a pose that would move the robot's data 50 m if it were taken


@dataclass(frozen=True)
class Hostile:
    name: str
    counter: str | None  # the /diagnostics key that counts its refusal (None: answered by the service)
    send: Callable[[RobotStream], None]


def _tf(parent: str, child: str, stamp: float, T: np.ndarray = MAP_BASE, rotation=None, translation=None):
    tf = TransformStamped(header=Header(stamp=to_stamp(stamp), frame_id=parent), child_frame_id=child,
                          transform=matrix_to_transform(T))
    if rotation is not None:
        q = tf.transform.rotation
        q.x, q.y, q.z, q.w = (float(v) for v in rotation)
    if translation is not None:
        t = tf.transform.translation
        t.x, t.y, t.z = (float(v) for v in translation)
    return TFMessage(transforms=[tf])


def _cloud(robot: RobotStream, raw: bytes, n: int, fields=None, stamp: float | None = None, frame: str = "lidar"):
    from sensor_msgs.msg import PointCloud2

    fields = fields or [PointField(name=c, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                        for i, c in enumerate("xyz")]
    msg = PointCloud2(header=Header(stamp=to_stamp(robot.stamp() if stamp is None else stamp), frame_id=frame),
                      height=1, width=n, fields=fields, is_bigendian=False, point_step=12, row_step=12 * n,
                      is_dense=False)
    msg.data = raw
    robot.node.publish("lidar/points", msg)


POINTS = np.array([[0.5, 0.5, 0.5]] * 4, np.float32)


def _camera(robot: RobotStream, encoding: str = "rgb8", K_: np.ndarray = K, size=(64, 48), truncate: bool = False):
    stamp = robot.stamp()
    cam = Header(stamp=to_stamp(stamp), frame_id="camera_optical")
    rgb = array_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8", cam)
    rgb.encoding = encoding
    depth = array_to_image(np.full((48, 64), 1500, np.uint16), "16UC1", cam)
    if truncate:
        depth.data = depth.data[:100]
    robot.node.publish("rgb/image", rgb)
    robot.node.publish("depth/image", depth)
    robot.node.publish("rgb/camera_info", camera_info(K_, *size, cam))


_frame_names = itertools.count()


def _many_frames(robot: RobotStream, count: int = 1000) -> None:
    stamp = robot.stamp()
    msg = TFMessage(transforms=[_tf("map", f"junk_{next(_frame_names)}", stamp).transforms[0] for _ in range(count)])
    robot.node.publish("/tf", msg)


MESSAGES: tuple[Hostile, ...] = (
    Hostile("tf zero quaternion", "dropped tf_invalid",
            lambda r: r.node.publish("/tf", _tf("map", "base_link", r.stamp(), rotation=(0, 0, 0, 0)))),
    Hostile("tf_static NaN quaternion", "dropped tf_invalid",
            lambda r: r.node.publish("/tf_static", _tf("base_link", "lidar", 0.0, BASE_LIDAR,
                                                       rotation=(np.nan, 0, 0, 1)))),
    Hostile("tf NaN translation", "dropped tf_invalid",
            lambda r: r.node.publish("/tf", _tf("map", "base_link", r.stamp(), translation=(np.nan, 0, 0)))),
    Hostile("tf 1e300 quaternion", "dropped tf_invalid",
            lambda r: r.node.publish("/tf", _tf("map", "base_link", r.stamp(), rotation=(1e300, 0, 0, 1)))),
    Hostile("tf to itself", "dropped tf_invalid",
            lambda r: r.node.publish("/tf", _tf("base_link", "base_link", r.stamp()))),
    Hostile("tf stamped far in the future", "dropped future_stamp",
            lambda r: r.node.publish("/tf", _tf("map", "base_link", r.stamp() + FAR_FUTURE))),
    Hostile("tf cycle through map_frame", "dropped tf_cycle",
            lambda r: r.node.publish("/tf", _tf("lidar", "map", r.stamp()))),
    Hostile("tf leading slash re-parenting the sensor", "dropped frame_id",
            lambda r: r.node.publish("/tf", _tf("evil", "/lidar", r.stamp()))),
    Hostile("tf re-parenting the sensor", "dropped tf_reparent",
            lambda r: r.node.publish("/tf_static", _tf("evil", "lidar", 0.0, ELSEWHERE))),
    Hostile("tf_static far in the future taking over the robot", "dropped tf_reparent",
            lambda r: r.node.publish("/tf_static", _tf("evil", "base_link", r.stamp() + FAR_FUTURE, ELSEWHERE))),
    Hostile("tf_static for a frame posed on /tf", "dropped tf_conflict",
            lambda r: r.node.publish("/tf_static", _tf("map", "base_link", 0.0, ELSEWHERE))),
    Hostile("tf dynamic pose for a static sensor frame", "dropped tf_conflict",
            lambda r: r.node.publish("/tf", _tf("base_link", "lidar", r.stamp(), ELSEWHERE))),
    Hostile("tf stamped zero", "dropped bad_stamp", lambda r: r.node.publish("/tf", _tf("map", "base_link", 0.0))),
    Hostile("tf 1000 new frame names", None, _many_frames),
    # in a frame posed by static transforms alone, where TF finds a pose at any stamp
    Hostile("lidar stamped far in the future", "dropped future_stamp",
            lambda r: _cloud(r, POINTS.tobytes(), 4, stamp=r.stamp() + FAR_FUTURE, frame="fixed_lidar")),
    Hostile("lidar stamped zero", "dropped bad_stamp", lambda r: _cloud(r, POINTS.tobytes(), 4, stamp=0.0)),
    Hostile("lidar without an x field", "dropped bad_lidar",
            lambda r: _cloud(r, POINTS.tobytes(), 4, fields=[PointField(name=c, offset=4 * i, datatype=7, count=1)
                                                             for i, c in enumerate("ayz")])),
    Hostile("lidar data shorter than its header says", "dropped bad_lidar",
            lambda r: _cloud(r, POINTS.tobytes()[:-5], 4)),
    Hostile("lidar all NaN", "dropped empty_cloud",
            lambda r: _cloud(r, np.full((4, 3), np.nan, np.float32).tobytes(), 4)),
    Hostile("lidar from an unknown frame", "dropped tf", lambda r: _cloud(r, POINTS.tobytes(), 4, frame="nowhere")),
    Hostile("lidar frame id with a leading slash", "dropped frame_id",
            lambda r: _cloud(r, POINTS.tobytes(), 4, frame="/lidar")),
    Hostile("lidar with an empty frame id", "dropped no_frame", lambda r: _cloud(r, POINTS.tobytes(), 4, frame="")),
    Hostile("lidar stamped long ago", "dropped out_of_order", lambda r: _cloud(r, POINTS.tobytes(), 4, stamp=1.0)),
    Hostile("camera in an unsupported encoding", "dropped bad_rgbd", lambda r: _camera(r, encoding="yuv422")),
    Hostile("CameraInfo with absurd intrinsics", "dropped bad_rgbd",
            lambda r: _camera(r, K_=np.array([[0.02, 0, 32], [0, 0.02, 24], [0, 0, 1]]))),  # pixels km apart
    Hostile("CameraInfo of another size", "dropped camera_mismatch", lambda r: _camera(r, size=(128, 96))),
    Hostile("depth image cut short", "dropped bad_rgbd", lambda r: _camera(r, truncate=True)),
)

# Words a client may send: each is either refused with a message or answered; none may hurt the node.
ODD_TEXTS = ("%s%s%s%n", "{0.__class__.__mro__}", "{}", "\x07\x1b[31m red", "fire extinguisher " * 10,
             "椅子 🪑", "'; DROP TABLE map; --", "\n\t ", "a" * 5000)
FORMAT_TEMPLATES = ("a {} near {x}", "a {} {", "{0.__class__} {}", "%s {} %n")
UNSAFE_PATHS = ("/".join(["d"] * 5000), "../outside", "/tmp/absolute", "a/../../b", "x" * 300, "bad\x1bname", "")

