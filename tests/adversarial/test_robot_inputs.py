"""What robots actually publish, sent to a node process: a LiDAR cloud laid out as drivers lay it
out (organised rows, rows of NaN, the (0, 0, 0) points written for no return, returns from the
robot's own body, extra fields and padding between them)."""

from __future__ import annotations

import time

import numpy as np
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from ovseg3d.data.map_files import read_map_file
from ovseg3d.ros.pointcloud2 import array_to_pointcloud2
from ovseg3d.ros.transforms import to_stamp
from ovseg3d.ros_tools.node_process import until
from ovseg3d.ros_tools.robot_stream import BASE_LIDAR, MAP_BASE, RobotStream
from ovseg3d_interfaces.srv import SaveMap

ROWS, COLUMNS = 16, 128
# an Ouster-like point: x y z, 4 bytes of padding, intensity, t (ns since the sweep began),
# reflectivity, ring, then padding to 48 bytes
DRIVER_POINT = np.dtype({"names": ["x", "y", "z", "intensity", "t", "reflectivity", "ring"],
                         "formats": ["<f4", "<f4", "<f4", "<f4", "<u4", "<u2", "<u2"],
                         "offsets": [0, 4, 8, 16, 20, 24, 26], "itemsize": 48})


def driver_cloud(stamp: float) -> PointCloud2:
    """Rows 0-1: no returns (NaN); row 2: (0, 0, 0); row 3: the robot's own body 0.3 m away; rows
    4-15: a wall all round at 4 m."""
    angle = np.linspace(0, 2 * np.pi, COLUMNS, endpoint=False)
    radius = np.array([np.nan, np.nan, 0.0, 0.3] + [4.0] * (ROWS - 4))[:, None]
    height = np.linspace(-0.6, 0.6, ROWS)[:, None]
    cloud = np.zeros((ROWS, COLUMNS), DRIVER_POINT)
    cloud["x"], cloud["y"] = radius * np.cos(angle), radius * np.sin(angle)
    cloud["z"] = np.where(np.isnan(radius), np.nan, np.where(radius == 0, 0.0, height))
    cloud["intensity"], cloud["reflectivity"] = 100.0, 7
    cloud["ring"] = np.arange(ROWS)[:, None]
    cloud["t"] = (np.arange(COLUMNS) * 781_250)[None, :]
    msg = array_to_pointcloud2(cloud.reshape(-1), Header(stamp=to_stamp(stamp), frame_id="fixed_lidar"))
    msg.height, msg.width, msg.row_step, msg.is_dense = ROWS, COLUMNS, COLUMNS * DRIVER_POINT.itemsize, False
    return msg


def test_a_driver_lidar_cloud_maps_only_its_real_returns(start_node, tmp_path):
    save_dir = tmp_path / "maps"
    node = start_node(save_dir=str(save_dir), **{"lidar.min_range": 0.5, "diagnostics.period": 0.2})
    robot = RobotStream(node)  # its static TF only: the sensor is map -> fixed_lidar
    robot.publish_static()
    node.wait_matched(topics=("lidar/points",))
    assert until(lambda: node.counter("ingested lidar") >= 3, 60,
                 every=lambda: node.publish("lidar/points", driver_cloud(time.time())), period=0.5), node.diagnostics
    assert node.counter("dropped nonfinite_points") >= 3 * 2 * COLUMNS  # counted, not warned about
    assert "nonfinite" not in node.log()
    assert until(lambda: node.call(SaveMap, "save_map", SaveMap.Request(path="driver")).success and
                 (read_map_file(save_dir / "driver.npz")["labels"] >= 0).all(), 60)
    points = read_map_file(save_dir / "driver.npz")["points"].astype(np.float64)
    sensor = MAP_BASE @ BASE_LIDAR
    local = (points - sensor[:3, 3]) @ sensor[:3, :3]  # map -> lidar frame
    radius = np.linalg.norm(local[:, :2], axis=1)
    assert len(points) > 100 and np.abs(radius - 4.0).max() < 0.1, np.sort(radius)[:5]  # no body, no zeros
