"""A recorded scene as the ROS messages a robot would publish: RGB, depth, CameraInfo, LiDAR, TF.

Used to drive the node in tests and benchmarks and to write rosbags. The camera poses become
``map -> camera`` transforms and the LiDAR poses ``map -> lidar`` transforms on /tf, each stamped
like its sensor message; the clock starts at ``start`` seconds and follows the scene's
``camera_period_s`` and ``lidar_period_s`` (synth.json; 0.1 s otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from std_msgs.msg import Header

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.data.synth.writer import read_sweep
from ovseg3d.ros.compressed import encode_compressed_color, encode_compressed_depth
from ovseg3d.ros.images import array_to_image, camera_info, compressed_image
from ovseg3d.ros.pointcloud2 import array_to_pointcloud2, xyz_fields_array
from ovseg3d.ros.transforms import tf_message, to_stamp

TOPICS = {"rgb": "rgb/image", "depth": "depth/image", "info": "rgb/camera_info", "lidar": "lidar/points",
          "tf": "/tf"}


@dataclass
class StreamMessage:
    stamp: float
    topic: str
    msg: object


def scene_stream(scene_dir: Path, start: float = 1000.0, map_frame: str = "map", camera_frame: str = "camera",
                 lidar_frame: str = "lidar", depth_encoding: str = "16UC1", frame_stride: int = 1,
                 with_lidar: bool = True, compressed: bool = False) -> Iterator[StreamMessage]:
    """Messages in stamp order (TF first at equal stamps). ``compressed``: colour and depth as
    image_transport publishes them (jpeg on rgb/image/compressed, png compressedDepth on
    depth/image/compressedDepth), as a robot's recorded bag holds them."""
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
            depth = (np.round(frame.depth * 1000).astype(np.uint16) if depth_encoding == "16UC1"
                     else frame.depth.astype(np.float32))
            if compressed:
                yield StreamMessage(stamp, TOPICS["rgb"] + "/compressed",
                                    compressed_image(*encode_compressed_color(frame.color, "jpeg"), h))
                yield StreamMessage(stamp, TOPICS["depth"] + "/compressedDepth", compressed_image(
                    *encode_compressed_depth(frame.depth, depth_encoding, "png", depth_max=1e4), h))
            else:
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
