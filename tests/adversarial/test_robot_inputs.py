"""What robots actually publish, sent to a node process: a LiDAR cloud laid out as drivers lay it
out (organised rows, rows of NaN, the (0, 0, 0) points written for no return, returns from the
robot's own body, extra fields and padding between them), a depth camera without colour, compressed
camera streams, and transforms that come late or never."""

from __future__ import annotations

import contextlib
import functools
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from ovseg3d.data.map_files import read_map_file
from ovseg3d.paths import config_dir
from ovseg3d.ros.compressed import encode_compressed_color, encode_compressed_depth
from ovseg3d.ros.dds import PROFILE_ENV, PROFILE_NAME
from ovseg3d.ros.images import array_to_image, camera_info, compressed_image
from ovseg3d.ros.pointcloud2 import array_to_pointcloud2, xyz_fields_array
from ovseg3d.ros.transforms import tf_message, to_stamp
from ovseg3d.ros_tools.node_process import NodeProcess, until
from ovseg3d.ros_tools.robot_stream import BASE_CAMERA, BASE_LIDAR, MAP_BASE, K, RobotStream
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
    subscribed = node.subscribed_topics()
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


COMPRESSED = {"rgb.transport": "compressed", "depth.transport": "compressedDepth", "camera.color": True,
              "rgbd.keyframe_translation": 0.0, "diagnostics.period": 0.2}
RED = (200, 30, 10)


def _send_compressed(node, depth_m: float, depth_codec: tuple[str, str], colour_codec: str) -> None:
    stamp = time.time()
    node.publish("/tf", tf_message("map", "base_link", stamp, MAP_BASE))
    camera = Header(stamp=to_stamp(stamp), frame_id="camera_optical")
    fmt, data = encode_compressed_depth(np.full((48, 64), depth_m, np.float32), *depth_codec)
    node.publish("depth/image/compressedDepth", compressed_image(fmt, data, camera))
    fmt, data = encode_compressed_color(np.full((48, 64, 3), RED, np.uint8), colour_codec)
    node.publish("rgb/image/compressed", compressed_image(fmt, data, camera))
    node.publish("rgb/camera_info", camera_info(K, 64, 48, camera))


def test_compressed_colour_and_depth_streams_map_as_image_transport_writes_them(start_node, tmp_path):
    """jpeg and png colour, compressedDepth png and rvl of 16UC1 and 32FC1 (bytes laid out as
    image_transport_plugins' codec.cpp writes them): each frame lands at its own depth, red."""
    save_dir = tmp_path / "maps"
    node = start_node(save_dir=str(save_dir), **COMPRESSED)
    RobotStream(node).publish_static()
    node.wait_matched(topics=("depth/image/compressedDepth", "rgb/image/compressed", "rgb/camera_info", "/tf"))
    variants = [(2.0, ("16UC1", "png"), "jpeg"), (2.5, ("16UC1", "rvl"), "png"), (3.0, ("32FC1", "png"), "jpeg"),
                (3.5, ("32FC1", "rvl"), "png")]
    camera = MAP_BASE @ BASE_CAMERA

    def depths() -> np.ndarray:  # depth along the optical axis of every map point, from a saved map
        assert node.call(SaveMap, "save_map", SaveMap.Request(path="compressed")).success
        points = read_map_file(save_dir / "compressed.npz")["points"].astype(np.float64)
        return ((points - camera[:3, 3]) @ camera[:3, :3])[:, 2]

    for depth_m, depth_codec, colour_codec in variants:
        send = functools.partial(_send_compressed, node, depth_m, depth_codec, colour_codec)
        assert until(functools.partial(lambda d: (np.abs(depths() - d) < 0.06).sum() > 50, depth_m), 60,
                     every=send, period=0.3), (depth_codec, node.diagnostics)
    assert node.counter("dropped bad_compressed") == 0 and node.counter("dropped bad_rgbd") == 0
    saved = read_map_file(save_dir / "compressed.npz")
    assert np.abs(saved["colors"].astype(float) - RED).max() < 12  # jpeg's rounding, no channel swap


def test_bad_compressed_images_are_counted_warned_once_and_change_nothing(start_node, tmp_path):
    save_dir = tmp_path / "maps"
    node = start_node(save_dir=str(save_dir), **COMPRESSED)
    RobotStream(node).publish_static()
    node.wait_matched(topics=("depth/image/compressedDepth", "rgb/image/compressed", "rgb/camera_info", "/tf"))
    assert until(lambda: node.counter("ingested rgbd") >= 1, 60,
                 every=lambda: _send_compressed(node, 2.0, ("16UC1", "png"), "jpeg"), period=0.3)
    voxels = node.counter("map voxels")
    good_fmt, good = encode_compressed_depth(np.full((48, 64), 2.0, np.float32), "32FC1", "png")
    jpeg_fmt, jpeg = encode_compressed_color(np.full((48, 64, 3), RED, np.uint8), "jpeg")
    lies = struct.pack("<iff", 7, *struct.unpack_from("<ff", good, 4)) + good[12:]
    zero_quant = struct.pack("<iff", 0, 0.0, 0.0) + good[12:]
    bad = {  # (depth format, depth bytes, colour format, colour bytes)
        "corrupt jpeg": (good_fmt, good, jpeg_fmt, jpeg[:20] + b"\x00" * 50 + jpeg[70:]),
        "truncated png depth": (good_fmt, good[: len(good) // 2], jpeg_fmt, jpeg),
        "header lies about its format": (good_fmt, lies, jpeg_fmt, jpeg),
        "zero quantisation": (good_fmt, zero_quant, jpeg_fmt, jpeg),
        "unknown depth format": ("32FC1; compressedDepth h264", good, jpeg_fmt, jpeg),
        "unknown colour format": (good_fmt, good, "rgb8; webp compressed bgr8", jpeg),
        "png bytes called rvl": ("32FC1; compressedDepth rvl", good, jpeg_fmt, jpeg),
        "%s%n format string": ("%s%n; compressedDepth png", good, jpeg_fmt, jpeg),
    }
    def send(dfmt: str, dbytes: bytes, cfmt: str, cbytes: bytes) -> None:
        stamp = time.time()
        node.publish("/tf", tf_message("map", "base_link", stamp, MAP_BASE))
        camera = Header(stamp=to_stamp(stamp), frame_id="camera_optical")
        node.publish("depth/image/compressedDepth", compressed_image(dfmt, dbytes, camera))
        node.publish("rgb/image/compressed", compressed_image(cfmt, cbytes, camera))
        node.publish("rgb/camera_info", camera_info(K, 64, 48, camera))

    for k, (name, message) in enumerate(bad.items()):
        assert until(functools.partial(lambda n: node.counter("dropped bad_compressed") >= n, k + 1), 30,
                     every=functools.partial(send, *message), period=0.3), (name, node.diagnostics)
    assert node.alive() and node.counter("map voxels") == voxels
    assert node.log().count("[bad_compressed: ") == 1  # throttled: one warning for them all
    assert until(lambda: node.counter("ingested rgbd") >= 2, 60,  # and good frames still map
                 every=lambda: _send_compressed(node, 3.0, ("32FC1", "rvl"), "png"), period=0.3)


def test_transforms_that_come_late_or_never(start_node):
    """A sensor whose static link has not come (yet) is dropped and counted as tf, the map left as
    it was; once /tf_static brings the link (after the data began) it maps; a dynamic transform
    arriving after its data, within tf.timeout, is waited for, not dropped."""
    node = start_node(**{"tf.timeout": 0.5, "diagnostics.period": 0.2})
    node.wait_matched(topics=("lidar/points", "/tf", "/tf_static"))
    ring = np.stack([3 * np.cos(np.linspace(0, 6.28, 200)), 3 * np.sin(np.linspace(0, 6.28, 200)),
                     np.zeros(200)], 1)

    def cloud(stamp: float) -> PointCloud2:
        return array_to_pointcloud2(xyz_fields_array(ring), Header(stamp=to_stamp(stamp), frame_id="late_lidar"))

    def send() -> None:
        stamp = time.time()
        node.publish("/tf", tf_message("map", "base_link", stamp, MAP_BASE))
        node.publish("lidar/points", cloud(stamp))

    assert until(lambda: node.counter("dropped tf") >= 2, 30, every=send, period=0.3), node.diagnostics
    assert node.counter("ingested lidar") == 0 and node.counter("map voxels") == 0
    node.publish("/tf_static", tf_message("base_link", "late_lidar", 0.0, BASE_LIDAR))
    assert until(lambda: node.counter("ingested lidar") >= 1, 30, every=send, period=0.3), node.diagnostics
    assert node.log().count("[tf: ") == 1  # warned once (throttled), counted every time
    time.sleep(1.0)
    dropped, ingested = node.counter("dropped tf"), node.counter("ingested lidar")
    stamp = time.time()
    node.publish("lidar/points", cloud(stamp))
    time.sleep(0.2)  # the robot's transform for that instant comes 0.2 s after the cloud
    node.publish("/tf", tf_message("map", "base_link", stamp, MAP_BASE))
    assert until(lambda: node.counter("ingested lidar") > ingested, 30), node.diagnostics
    assert node.counter("dropped tf") == dropped


def test_depth_not_registered_to_the_colour_camera_gets_its_colour_through_tf(start_node, tmp_path):
    """A depth camera 30 cm beside the colour camera (far enough that taking the depth's own pixels
    would colour a 15-pixel strip wrongly), with its own CameraInfo and resolution: each point takes
    the colour of the colour-camera pixel it projects to (left half red, right half blue)."""
    save_dir = tmp_path / "maps"
    node = start_node(save_dir=str(save_dir), **{"depth.registered": False, "rgbd.keyframe_translation": 0.0,
                                                  "diagnostics.period": 0.2})
    beside = BASE_CAMERA.copy()
    beside[:3, 3] += BASE_CAMERA[:3, :3] @ np.array([0.3, 0.0, 0.0])  # to the optical frame's right
    robot = RobotStream(node)
    robot.publish_static()
    node.publish("/tf_static", tf_message("base_link", "depth_optical", 0.0, beside))
    node.wait_matched(topics=("depth/image", "depth/camera_info", "rgb/image", "rgb/camera_info", "/tf"))
    colour = np.zeros((96, 128, 3), np.uint8)
    colour[:, :64] = (255, 0, 0)
    colour[:, 64:] = (0, 0, 255)
    K_colour = np.array([[100.0, 0, 64.0], [0, 100.0, 48.0], [0, 0, 1]])

    def send() -> None:
        stamp = time.time()
        node.publish("/tf", tf_message("map", "base_link", stamp, MAP_BASE))
        depth_header = Header(stamp=to_stamp(stamp), frame_id="depth_optical")
        colour_header = Header(stamp=to_stamp(stamp), frame_id="camera_optical")
        node.publish("depth/image", array_to_image(np.full((48, 64), 2000, np.uint16), "16UC1", depth_header))
        node.publish("depth/camera_info", camera_info(K, 64, 48, depth_header))
        node.publish("rgb/image", array_to_image(colour, "rgb8", colour_header))
        node.publish("rgb/camera_info", camera_info(K_colour, 128, 96, colour_header))

    assert until(lambda: node.counter("ingested rgbd") >= 3, 60, every=send, period=0.3), node.diagnostics
    assert node.call(SaveMap, "save_map", SaveMap.Request(path="unregistered")).success
    saved = read_map_file(save_dir / "unregistered.npz")
    cam = MAP_BASE @ BASE_CAMERA
    local = (saved["points"].astype(np.float64) - cam[:3, 3]) @ cam[:3, :3]
    u = K_colour[0, 0] * local[:, 0] / local[:, 2] + K_colour[0, 2]
    clear = (np.abs(u - 64) > 3) & (u >= 0) & (u < 128)  # seen, away from the border (voxels average it)
    want = np.where(u[clear, None] < 64, (255, 0, 0), (0, 0, 255))
    got = saved["colors"][clear].astype(float)
    assert len(got) > 100 and (np.abs(got - want).max(1) < 30).mean() > 0.95, np.unique(got.round(), axis=0)[:5]


def test_a_30_hz_camera_is_capped_where_it_arrives_and_loses_nothing(start_node):
    """``rgbd.keyframe_min_interval`` in the camera callback: frames between keyframes are counted
    as skipped and never queued, and frames already queued are not taken for late ones when newer
    frames were capped meanwhile (here the worker waits for TF, which comes 0.15 s after the images,
    so it is always a frame behind the camera)."""
    node = start_node(**{"rgbd.keyframe_translation": 0.0, "rgbd.keyframe_min_interval": 0.1, "queue_size": 100,
                         "tf.timeout": 1.0, "diagnostics.period": 0.2})
    robot = RobotStream(node)
    robot.publish_static()
    node.wait_matched()
    depth, rgb = np.full((48, 64), 2000, np.uint16), np.full((48, 64, 3), RED, np.uint8)
    late_tf: list[float] = []
    start, sent = time.monotonic(), 0
    while sent < 90:  # 3 s at 30 Hz
        stamp = time.time()
        cam = Header(stamp=to_stamp(stamp), frame_id="camera_optical")
        node.publish("rgb/image", array_to_image(rgb, "rgb8", cam))
        node.publish("depth/image", array_to_image(depth, "16UC1", cam))
        node.publish("rgb/camera_info", camera_info(K, 64, 48, cam))
        late_tf.append(stamp)
        while late_tf and late_tf[0] <= stamp - 0.15:
            node.publish("/tf", tf_message("map", "base_link", late_tf.pop(0), MAP_BASE))
        sent += 1
        time.sleep(max(0.0, start + sent / 30 - time.monotonic()))
    for stamp in late_tf:
        node.publish("/tf", tf_message("map", "base_link", stamp, MAP_BASE))

    def handled() -> int:
        return sum(node.counter(k) for k in ("ingested rgbd", "skipped rgbd_rate", "dropped out_of_order",
                                             "dropped tf", "dropped queue_full"))

    received = lambda: node.counter("received depth/image")  # noqa: E731 (what reached the callback)
    assert until(lambda: received() > 0 and handled() >= received() - 1, 30), node.diagnostics
    assert node.counter("skipped rgbd_rate") >= 0.5 * received(), node.diagnostics
    assert node.counter("ingested rgbd") >= 15, node.diagnostics
    for kind in ("dropped out_of_order", "dropped queue_full", "dropped tf", "queue drops"):
        assert node.counter(kind) == 0, (kind, node.diagnostics)


def test_messages_that_never_reach_the_node_are_counted_from_the_publishers_sequence_numbers(start_node):
    """A burst faster than the executor takes messages overwrites the subscription's DDS history
    (best effort, ``qos_depth`` 1 here): the node counts what it never saw from the gaps in the
    publisher's sequence numbers, so received + missed is every message sent after the first one
    seen (the last goes after a pause, so every gap before it is seen). Before, such losses were
    silent."""
    node = start_node(qos_depth=1, **{"diagnostics.period": 0.2})
    node.wait_matched(topics=("lidar/points",))
    cloud = driver_cloud(time.time())
    # what a publisher sent before the first message seen from it cannot be told: see one first
    assert until(lambda: node.counter("received lidar/points") >= 1, 30,
                 every=lambda: node.publish("lidar/points", cloud), period=1.0), node.diagnostics
    time.sleep(1.0)  # diagnostics (every 0.2 s) that count every probe sent
    before = node.counter("received lidar/points") + node.counter("missed lidar/points")
    for _ in range(300):
        node.publish("lidar/points", cloud)
    time.sleep(1.0)
    node.publish("lidar/points", cloud)

    def accounted() -> bool:
        return node.counter("received lidar/points") + node.counter("missed lidar/points") - before == 301

    counts = lambda: {k: v for k, v in node.diagnostics.items() if "lidar" in k}  # noqa: E731
    assert until(accounted, 30), (before, counts())
    assert node.counter("missed lidar/points") > 0 and node.counter("received lidar/points") > 1
    assert node.alive()


def _own_fastdds_segments(pid: int) -> list[int]:
    """Bytes of each Fast DDS shared-memory segment process ``pid`` made for what it sends (one per
    participant): those whose ``<segment>_el`` file it holds locked (it maps every sender's too)."""
    names = {}
    for f in Path("/dev/shm").glob("fastdds_*_el"):
        with contextlib.suppress(FileNotFoundError):  # another process's, gone meanwhile
            names[f.stat().st_ino] = f.name
    held = []
    for line in Path("/proc/locks").read_text().splitlines():  # "1: FLOCK ADVISORY WRITE <pid> <dev>:<inode> 0 EOF"
        parts = line.split()
        if parts[1] != "->" and parts[4] == str(pid):  # "->": a waiter, not a holder
            held.append(names.get(int(parts[5].rsplit(":", 1)[1])))
    segments = [name[: -len("_el")] for name in held if name and not name.startswith("fastdds_port")]
    assert segments, f"process {pid} holds the locks of {held}"
    return [(Path("/dev/shm") / name).stat().st_size for name in segments]


def test_the_node_sends_and_receives_through_a_shared_memory_segment_that_holds_many_sweeps(
        adv_params, adv_env, tmp_path):
    """Fast DDS's default segment (512 kB) holds less than one 630 kB LiDAR sweep; a busy reader
    then lost a third of the sweeps in the 30 Hz replay (``config/fastdds_sensors.xml`` says why).
    Started without a profile, ``ovseg3d_node`` takes ovseg3d's (32 MB); a profile of the user's
    is kept as it is (here one with a 4 MB segment); one that is not there is warned about."""
    own = tmp_path / "mine.xml"
    own.write_text((config_dir() / PROFILE_NAME).read_text().replace("33554432", "4194304"))
    for profile, low, high in (("", 32 << 20, 40 << 20), (str(own), 4 << 20, 8 << 20)):
        node = NodeProcess(adv_params, tmp_path / f"node_{bool(profile)}.log", env={**adv_env, PROFILE_ENV: profile})
        try:
            node.start()
            # the largest: with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (these tests) the RMW adds a
            # shared-memory transport of Fast DDS's default size beside the profile's
            sizes = _own_fastdds_segments(node.proc.pid)
            assert low <= max(sizes) < high, (sizes, node.log()[-2000:])
            assert f"Fast DDS profile: {profile or config_dir() / PROFILE_NAME}" in node.log()
        finally:
            node.close()
    missing = tmp_path / "missing.xml"  # a profile that is not there: Fast DDS's defaults, said in the log
    node = NodeProcess(adv_params, tmp_path / "node_missing.log", env={**adv_env, PROFILE_ENV: str(missing)})
    try:
        node.start()
        assert f"Fast DDS profile {missing} is not a file" in node.log() and node.alive()
    finally:
        node.close()


def _nice(stat: Path) -> int:
    """The niceness in a /proc ``stat`` file (its field 19; the command name before it may hold spaces)."""
    return int(stat.read_text().rsplit(")", 1)[1].split()[16])


def _thread_nice(pid: int) -> list[int]:
    """The niceness of every thread of a process."""
    values = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            values.append(_nice(stat))
    return values


def test_the_student_update_runs_at_a_lower_priority_than_the_sensor_path(start_node):
    """On 2 cores the update shared the CPU evenly with the callbacks and the ingest worker; it now
    renices its own thread (``inference.nice``, default 10), and only its own."""
    base = _nice(Path("/proc/self/stat"))  # the node inherits ours
    if base >= 19:
        pytest.skip("this test runs at the lowest priority already: no thread can go lower")
    lowered = min(19, base + 10)
    node = start_node()
    assert until(lambda: lowered in _thread_nice(node.proc.pid), 20.0), _thread_nice(node.proc.pid)
    nice = _thread_nice(node.proc.pid)
    assert nice.count(lowered) == 1 and set(nice) == {base, lowered}, nice
    node = start_node(**{"inference.nice": 0})
    time.sleep(2.0)
    assert set(_thread_nice(node.proc.pid)) == {base}
