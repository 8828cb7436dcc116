"""A recorded scene as the ROS messages a robot would publish: RGB, depth, CameraInfo, LiDAR, TF.

Used to drive the node in tests and benchmarks and to write rosbags. The camera poses become
``map -> camera`` transforms and the LiDAR poses ``map -> lidar`` transforms on /tf, each stamped
like its sensor message; the clock starts at ``start`` seconds and follows the scene's
``camera_period_s`` and ``lidar_period_s`` (synth.json; 0.1 s otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from std_msgs.msg import Header

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.data.synth.writer import read_sweep
from ovseg3d.ros.compressed import encode_compressed_color, encode_compressed_depth
from ovseg3d.ros.images import array_to_image, camera_info, compressed_image
from ovseg3d.ros.pointcloud2 import array_to_pointcloud2, pointcloud2_to_array, xyz_fields_array
from ovseg3d.ros.transforms import tf_message, to_stamp, transform_to_matrix

TOPICS = {"rgb": "rgb/image", "depth": "depth/image", "info": "rgb/camera_info", "lidar": "lidar/points",
          "tf": "/tf"}


@dataclass
class StreamMessage:
    stamp: float
    topic: str
    msg: object


def scene_stream(scene_dir: Path, start: float = 1000.0, map_frame: str = "map", camera_frame: str = "camera",
                 lidar_frame: str = "lidar", depth_encoding: str = "16UC1", frame_stride: int = 1,
                 with_lidar: bool = True, compressed: bool = False, robot: bool = False) -> Iterator[StreamMessage]:
    """Messages in stamp order (TF first at equal stamps). ``compressed``: colour and depth as
    image_transport publishes them (jpeg on rgb/image/compressed, png compressedDepth on
    depth/image/compressedDepth), as a robot's recorded bag holds them. ``robot`` (implies
    ``compressed``): also a robot's TF tree and LiDAR driver fields (``RobotFrames``)."""
    if robot:
        yield from _robot_stream(scene_dir, start, depth_encoding, frame_stride, with_lidar)
        return
    scene = ScanNetScene(scene_dir)
    meta_path = Path(scene_dir) / "synth.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    cam_dt, lidar_dt = meta.get("camera_period_s", 0.1), meta.get("lidar_period_s", 0.1)
    n_sweeps = len(list((Path(scene_dir) / "lidar").glob("*.bin"))) if with_lidar else 0
    events: list[tuple[float, int, str, object]] = []  # (stamp, order, kind, payload)
    for k, fid in enumerate(scene.frame_ids()[::frame_stride]):
        events.append((start + k * cam_dt * frame_stride, 1, "camera", fid))
    for i in range(n_sweeps):
        events.append((start + i * lidar_dt, 1, "lidar", i))
    events.sort(key=lambda e: (e[0], e[2]))
    for stamp, _, kind, payload in events:
        if kind == "camera":
            frame = next(scene.frames(frame_ids=[payload]), None)
            if frame is None:
                continue
            h = Header(stamp=to_stamp(stamp), frame_id=camera_frame)
            yield StreamMessage(stamp, TOPICS["tf"], tf_message(map_frame, camera_frame, stamp, frame.pose))
            if compressed:
                yield StreamMessage(stamp, TOPICS["rgb"] + "/compressed",
                                    compressed_image(*encode_compressed_color(frame.color, "jpeg"), h))
                yield StreamMessage(stamp, TOPICS["depth"] + "/compressedDepth", compressed_image(
                    *encode_compressed_depth(frame.depth, depth_encoding, "png", depth_max=1e4), h))
            else:
                depth = (np.round(frame.depth * 1000).astype(np.uint16) if depth_encoding == "16UC1"
                         else frame.depth.astype(np.float32))
                yield StreamMessage(stamp, TOPICS["rgb"], array_to_image(frame.color, "rgb8", h))
                yield StreamMessage(stamp, TOPICS["depth"], array_to_image(depth, depth_encoding, h))
            yield StreamMessage(stamp, TOPICS["info"], camera_info(frame.K, frame.image_size[0], frame.image_size[1],
                                                                   h))
        else:
            pts, intensity, pose = read_sweep(Path(scene_dir), payload)
            h = Header(stamp=to_stamp(stamp), frame_id=lidar_frame)
            yield StreamMessage(stamp, TOPICS["tf"], tf_message(map_frame, lidar_frame, stamp, pose))
            cloud = xyz_fields_array(pts, intensity=intensity.astype(np.float32))
            yield StreamMessage(stamp, TOPICS["lidar"], array_to_pointcloud2(cloud, h))


def _pose(xyz, yaw_deg: float = 0.0, optical: bool = False) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, 3] = xyz
    # optical frames: z forward, x right, y down (REP 103) under a body frame's x forward, z up
    T[:3, :3] = (np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float) if optical
                 else Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix())
    return T


@dataclass(frozen=True)
class RobotFrames:
    """A robot's TF tree: ``map -> odom`` (a localiser's correction, on /tf), ``odom -> base_link``
    (odometry, on /tf), and the sensors on /tf_static: ``base_link -> camera_link ->
    camera_color_optical_frame``, and ``lidar_mount -> lidar``. The synthetic LiDAR sweeps along its
    own path, not the camera's, so its mount is posed from ``odom`` on its own (a second rig)."""

    map_odom: np.ndarray = field(default_factory=lambda: _pose([0.4, -0.3, 0.0], yaw_deg=12.0))
    base_camera_link: np.ndarray = field(default_factory=lambda: _pose([0.12, 0.0, 1.1]))
    camera_link_optical: np.ndarray = field(default_factory=lambda: _pose([0.0, 0.015, 0.0], optical=True))
    mount_lidar: np.ndarray = field(default_factory=lambda: _pose([0.0, 0.0, 0.25], yaw_deg=90.0))
    camera: str = "camera_color_optical_frame"
    lidar: str = "lidar"

    def static(self, stamp: float):
        msg = tf_message("base_link", "camera_link", stamp, self.base_camera_link)
        msg.transforms += tf_message("camera_link", self.camera, stamp, self.camera_link_optical).transforms
        msg.transforms += tf_message("lidar_mount", self.lidar, stamp, self.mount_lidar).transforms
        return msg


def _robot_stream(scene_dir: Path, start: float, depth_encoding: str, frame_stride: int,
                  with_lidar: bool) -> Iterator[StreamMessage]:
    """The scene as a robot's recorded bag holds it: the TF tree of ``RobotFrames`` (static
    transforms once, first, on /tf_static), compressed colour and depth, and LiDAR clouds with the
    fields drivers add (``ring`` by elevation, ``t`` in ns since the sweep began, by azimuth)."""
    frames = RobotFrames()
    odom_map = np.linalg.inv(frames.map_odom)
    base_optical = frames.base_camera_link @ frames.camera_link_optical
    yield StreamMessage(start, "/tf_static", frames.static(start))
    for m in scene_stream(scene_dir, start, "map", frames.camera, frames.lidar, depth_encoding, frame_stride,
                          with_lidar, compressed=True):
        if m.topic != TOPICS["tf"]:
            if m.topic == TOPICS["lidar"]:
                m = StreamMessage(m.stamp, m.topic, _driver_cloud(m.msg))
            yield m
            continue
        t = m.msg.transforms[0]
        pose = transform_to_matrix(t.transform)
        if t.child_frame_id == frames.camera:  # map <- optical  =>  odom <- base_link
            child, parent_pose = "base_link", odom_map @ pose @ np.linalg.inv(base_optical)
        else:  # map <- lidar  =>  odom <- lidar_mount
            child, parent_pose = "lidar_mount", odom_map @ pose @ np.linalg.inv(frames.mount_lidar)
        msg = tf_message("map", "odom", m.stamp, frames.map_odom)
        msg.transforms += tf_message("odom", child, m.stamp, parent_pose).transforms
        yield StreamMessage(m.stamp, TOPICS["tf"], msg)


def _driver_cloud(msg):
    """The cloud with a driver's ``ring`` (16 rings by elevation) and ``t`` (ns, by azimuth over a
    0.1 s sweep) fields beside x, y, z, intensity."""
    cloud = pointcloud2_to_array(msg)
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1).astype(np.float64)
    elevation = np.arctan2(xyz[:, 2], np.linalg.norm(xyz[:, :2], axis=1))
    edges = np.linspace(elevation.min(), elevation.max() + 1e-9, 17)
    ring = np.clip(np.digitize(elevation, edges) - 1, 0, 15).astype(np.uint16)
    t = ((np.arctan2(xyz[:, 1], xyz[:, 0]) + np.pi) / (2 * np.pi) * 1e8).astype(np.uint32)
    out = xyz_fields_array(xyz, intensity=np.asarray(cloud["intensity"], np.float32), ring=ring, t=t)
    return array_to_pointcloud2(out, msg.header)
