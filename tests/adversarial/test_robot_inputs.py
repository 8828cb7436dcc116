"""What robots actually publish, sent to a node process: a LiDAR cloud laid out as drivers lay it
out (organised rows, rows of NaN, the (0, 0, 0) points written for no return, returns from the
robot's own body, extra fields and padding between them), and a depth camera without colour."""

from __future__ import annotations

import time

import numpy as np
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from ovseg3d.data.map_files import read_map_file
from ovseg3d.ros.images import array_to_image, camera_info
from ovseg3d.ros.pointcloud2 import array_to_pointcloud2
from ovseg3d.ros.transforms import tf_message, to_stamp
from ovseg3d.ros_tools.node_process import until
from ovseg3d.ros_tools.robot_stream import BASE_LIDAR, MAP_BASE, K, RobotStream
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


def test_depth_and_camera_info_alone_map_and_label(start_node, tmp_path):
    """camera.color false: no colour subscription at all; a depth camera and its CameraInfo (and
    TF) are enough for the geometry-only student to map and label."""
    save_dir = tmp_path / "maps"
    node = start_node(save_dir=str(save_dir), **{"camera.color": False, "diagnostics.period": 0.2})
    subscribed = dict(node.client.get_subscriber_names_and_types_by_node(node.name, f"/{node.namespace}"))
    assert f"/{node.namespace}/depth/image" in subscribed and f"/{node.namespace}/rgb/image" not in subscribed
    RobotStream(node).publish_static()
    node.wait_matched(topics=("depth/image", "rgb/camera_info", "/tf"))

    def send() -> None:
        stamp = time.time()
        node.publish("/tf", tf_message("map", "base_link", stamp, MAP_BASE))
        camera = Header(stamp=to_stamp(stamp), frame_id="camera_optical")
        node.publish("depth/image", array_to_image(np.full((48, 64), 2000, np.uint16), "16UC1", camera))
        node.publish("rgb/camera_info", camera_info(K, 64, 48, camera))

    assert until(lambda: node.counter("ingested rgbd") >= 2, 60, every=send, period=0.2), node.diagnostics
    assert until(lambda: node.call(SaveMap, "save_map", SaveMap.Request(path="depth_only")).success and
                 (read_map_file(save_dir / "depth_only.npz")["labels"] >= 0).all(), 60)
    saved = read_map_file(save_dir / "depth_only.npz")
    assert len(saved["points"]) > 100 and node.counter("dropped camera_mismatch") == 0


def test_a_colour_student_without_the_colour_stream_is_a_one_line_configure_error(start_node, tmp_path):
    from ovseg3d.student.checkpoint import save_checkpoint
    from ovseg3d.student.model import Student, StudentConfig

    student = Student(StudentConfig(arch="MinkUNetSmall", feature_dim=512, voxel_size=0.1, input="color"))
    ckpt = save_checkpoint(tmp_path / "color.pt", student.eval(), {"note": "random weights, a test's"}, "scannet20")
    node = start_node(wait_service=None, checkpoint=str(ckpt), **{"camera.color": False})
    assert node.proc.wait(120) == 1
    assert "camera.color is false" in node.log() and "Traceback" not in node.log()
