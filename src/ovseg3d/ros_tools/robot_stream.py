"""A small robot streaming into a node process at sensor rates, and probes that check its map.

TF ``map -> base_link`` (dynamic, at the sensor rate) with ``base_link -> camera_optical`` and
``base_link -> lidar`` on /tf_static (and ``map -> fixed_lidar``, a sensor posed by static
transforms alone, where any stamp finds a pose); a 64x48 depth camera (with colour and CameraInfo) facing a
wall 2 m ahead and a LiDAR ring, all stamped with the node's clock (wall time, or a clock the
caller gives, e.g. for simulated time). A probe is a small LiDAR cluster at a place no other probe
used; it is found when ``semantic_points`` holds a point within a voxel or two of its true map
position: the input path, TF, ingest, the student and the publisher all worked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from ovseg3d.ros.images import array_to_image, camera_info
from ovseg3d.ros.pointcloud2 import array_to_pointcloud2, pointcloud2_to_array, xyz_fields_array
from ovseg3d.ros.transforms import tf_message, to_stamp
from ovseg3d.ros_tools.node_process import NodeProcess, until


def _pose(xyz, rotation: Rotation) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = rotation.as_matrix()
    T[:3, 3] = xyz
    return T


MAP_BASE = _pose([1.0, 2.0, 0.0], Rotation.from_euler("z", 30, degrees=True))
BASE_LIDAR = _pose([0.2, 0.0, 0.5], Rotation.identity())
# optical frame: z forward (base x), x right (base -y), y down (base -z)
BASE_CAMERA = _pose([0.1, 0.0, 0.3], Rotation.from_matrix([[0, 0, 1], [-1, 0, 0], [0, -1, 0]]))
K = np.array([[50.0, 0, 32.0], [0, 50.0, 24.0], [0, 0, 1]])


class RobotStream:
    """Streams the robot into ``node`` at ``rate_hz`` from a thread; ``probe(k)`` checks the map."""

    def __init__(self, node: NodeProcess, rate_hz: float = 5.0, clock: Callable[[], float] = time.time):
        self.node, self.rate_hz, self.clock = node, rate_hz, clock
        self.stamp_offset = 0.0  # added to every stamp (a bag restarted: negative)
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.semantic = node.subscribe("semantic_points", PointCloud2)
        self._probes = 0
        self.map_voxels = 0  # the largest map size seen so far (the map must never shrink)
        ring = np.linspace(0, 2 * np.pi, 360, endpoint=False)
        self._ring = np.stack([4 * np.cos(ring), 4 * np.sin(ring), np.full_like(ring, -0.3)], 1)
        v, u = np.mgrid[0:48, 0:64]
        self._rgb = np.stack([u * 4, v * 5, np.full_like(u, 128)], -1).astype(np.uint8)
        self._depth = np.full((48, 64), 2000, np.uint16)

    def stamp(self) -> float:
        return self.clock() + self.stamp_offset

    def publish_static(self) -> None:
        msg = tf_message("base_link", "lidar", 0.0, BASE_LIDAR)
        msg.transforms += tf_message("base_link", "camera_optical", 0.0, BASE_CAMERA).transforms
        msg.transforms += tf_message("map", "fixed_lidar", 0.0, MAP_BASE @ BASE_LIDAR).transforms
        self.node.publish("/tf_static", msg)

    def send_once(self) -> None:
        stamp = self.stamp()
        self.node.publish("/tf", tf_message("map", "base_link", stamp, MAP_BASE))
        cam = Header(stamp=to_stamp(stamp), frame_id="camera_optical")
        self.node.publish("rgb/image", array_to_image(self._rgb, "rgb8", cam))
        self.node.publish("depth/image", array_to_image(self._depth, "16UC1", cam))
        self.node.publish("rgb/camera_info", camera_info(K, 64, 48, cam))
        self.lidar(self._ring, stamp)
        self.sent += 1

    def lidar(self, xyz: np.ndarray, stamp: float | None = None, frame: str = "lidar") -> None:
        header = Header(stamp=to_stamp(self.stamp() if stamp is None else stamp), frame_id=frame)
        self.node.publish("lidar/points", array_to_pointcloud2(xyz_fields_array(xyz), header))

    def start(self) -> RobotStream:
        self.publish_static()
        self.node.wait_matched()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        next_run = time.monotonic()
        while not self._stop.is_set():
            self.send_once()
            next_run += period
            self._stop.wait(max(0.0, next_run - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------ checks
    def probe(self, timeout: float = 30.0) -> bool:
        """A new LiDAR cluster appears in ``semantic_points`` at its true map position within ``timeout``."""
        k = self._probes
        self._probes += 1
        centre = np.array([-3.0 + 0.3 * (k % 20), -3.0 - 0.3 * (k // 20), 2.0])  # lidar frame, never reused
        cube = centre + 0.03 * np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3)
        target = (MAP_BASE @ BASE_LIDAR @ np.append(centre, 1.0))[:3]

        def found() -> bool:
            if not self.semantic:
                return False
            cloud = pointcloud2_to_array(self.semantic[-1])
            if cloud.size == 0:
                return False
            xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1)
            return float(np.min(np.linalg.norm(xyz - target, axis=1))) < 0.1

        return until(found, timeout, every=lambda: self.lidar(cube), period=1.0)

    def healthy(self, timeout: float = 30.0) -> str:
        """'' when the node lives, answers a text query, maps a fresh probe where it belongs and
        has not lost map voxels; else what failed."""
        from ovseg3d_interfaces.srv import TextQuery

        if not self.node.alive():
            return f"the node process ended (rc={self.node.proc.poll()})"
        res = self.node.call(TextQuery, "text_query", TextQuery.Request(text="chair", threshold=-1.0, max_points=5))
        if not res.success:
            return f"text_query failed: {res.message}"
        if not self.probe(timeout):
            return "a fresh LiDAR probe never appeared at its true position in semantic_points"
        voxels = self.node.counter("map voxels")
        if not until(lambda: self.node.counter("map voxels") >= self.map_voxels, 5.0):
            return f"the map shrank from {self.map_voxels} to {voxels} voxels"
        self.map_voxels = max(self.map_voxels, self.node.counter("map voxels"))
        if not self.node.alive():
            return "the node process ended"
        return ""
