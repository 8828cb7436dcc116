"""Message conversions and the node's plain-Python parts, on messages built in memory."""

from __future__ import annotations

import array
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ovseg3d.errors import UserError
from ovseg3d.ros.images import array_to_image, camera_info, camera_matrix, color_image, depth_image
from ovseg3d.ros.outputs import instance_markers, pack_rgb, semantic_cloud
from ovseg3d.ros.pointcloud2 import pointcloud2_to_array
from ovseg3d.ros.sync import ApproximateSync, DropOldestQueue
from ovseg3d.ros.transforms import (
    TransformBuffer,
    matrix_to_quat,
    matrix_to_transform,
    quat_to_matrix,
    rigid_inverse,
    stamp_seconds,
    to_stamp,
    transform_to_matrix,
)
from ovseg3d.segment.instances import Instance


def _image(pixels: np.ndarray, encoding: str, step: int, bigendian: bool = False) -> Image:
    """An Image with ``step`` bytes per row (padding filled with 0xAB)."""
    pixels = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder(">" if bigendian else "<"))
    h = pixels.shape[0]
    raw = np.full((h, step), 0xAB, np.uint8)
    row = pixels.reshape(h, -1).view(np.uint8)
    raw[:, : row.shape[1]] = row
    msg = Image(height=h, width=pixels.shape[1], encoding=encoding, is_bigendian=int(bigendian), step=step)
    msg.data = array.array("B", raw.tobytes())
    return msg


def test_depth_images_in_both_encodings_padding_and_byte_orders():
    mm = np.array([[0, 1000, 2500], [65535, 1, 300]], np.uint16)
    for big in (False, True):
        d = depth_image(_image(mm, "16UC1", step=8, bigendian=big))  # 2 bytes of padding per row
        assert d.dtype == np.float32 and np.allclose(d, mm / 1000.0)
    m = np.array([[np.nan, 1.5, np.inf], [-1.0, 0.25, 3.0]], np.float32)
    d = depth_image(_image(m, "32FC1", step=16, bigendian=True))
    assert d.tolist() == [[0, 1.5, 0], [0, 0.25, 3.0]]  # invalid depth is 0


def test_colour_encodings_and_bad_images():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert (color_image(array_to_image(rgb, "rgb8")) == rgb).all()
    assert (color_image(_image(rgb[..., ::-1].copy(), "bgr8", step=12)) == rgb).all()
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 9, np.uint8)], axis=2)
    assert (color_image(array_to_image(rgba[..., [2, 1, 0, 3]], "bgra8")) == rgb).all()
    assert color_image(array_to_image(rgb[..., 0], "mono8")).shape == (2, 3, 3)
    with pytest.raises(UserError, match="colour image has encoding 'yuv422'"):
        color_image(Image(height=1, width=1, encoding="yuv422", step=2))
    with pytest.raises(UserError, match="expected 16UC1"):
        depth_image(array_to_image(rgb, "rgb8"))
    short = array_to_image(rgb, "rgb8")
    short.data = short.data[:-1]
    with pytest.raises(UserError, match="expected 18"):
        color_image(short)
    bad_step = array_to_image(rgb, "rgb8")
    bad_step.step = 4
    with pytest.raises(UserError, match="step 4 is smaller"):
        color_image(bad_step)


def test_camera_info():
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    info = camera_info(K, 640, 480)
    assert np.allclose(camera_matrix(info), K) and info.p[0] == 500.0
    info.k[0] = 0.0
    with pytest.raises(UserError, match="invalid K"):
        camera_matrix(info)


def test_transform_buffer_chains_interpolates_and_refuses_to_extrapolate():
    buf = TransformBuffer(cache_seconds=10.0, tolerance=0.01)
    odom = np.eye(4)
    odom[:3, 3] = [1, 0, 0]
    buf.set("map", "odom", 0.0, odom, static=True)
    for t, yaw in ((10.0, 0.0), (11.0, 90.0)):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("z", yaw, degrees=True).as_matrix()
        T[:3, 3] = [t - 10.0, 0, 0]
        buf.set("odom", "base", t, T)
    cam = np.eye(4)
    cam[:3, 3] = [0, 0, 1]
    buf.set("base", "camera", 0.0, cam, static=True)
    T = buf.lookup("map", "camera", 10.5)
    assert np.allclose(T[:3, 3], [1.5, 0, 1])
    assert np.isclose(Rotation.from_matrix(T[:3, :3]).as_euler("xyz", degrees=True)[2], 45.0)
    assert np.allclose(buf.lookup("camera", "map", 10.5), np.linalg.inv(T))
    assert np.allclose(buf.lookup("map", "camera", 0.0)[:3, 3], [2, 0, 1])  # 0: the latest
    with pytest.raises(LookupError, match=r"not available at 12\.000"):
        buf.lookup("map", "camera", 12.0)
    with pytest.raises(LookupError, match="not connected"):
        buf.lookup("map", "elsewhere", 10.5)
    for t in np.arange(12.0, 30.0, 1.0):  # the cache keeps only the last 10 s
        buf.set("odom", "base", t, np.eye(4))
    with pytest.raises(LookupError):
        buf.lookup("map", "base", 11.0)


def test_transform_message_round_trip():
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
    T[:3, 3] = [0.1, -2.0, 3.5]
    assert np.allclose(transform_to_matrix(matrix_to_transform(T)), T)
    assert stamp_seconds(to_stamp(1234.5678)) == pytest.approx(1234.5678)


def test_quaternion_helpers_match_scipy_at_every_angle():
    """The buffer's plain-arithmetic rotations (scipy's per-call cost was most of a lookup) against
    scipy, including half turns about each axis, where the quaternion's w is 0 and another
    component must be the pivot."""
    rotations = list(Rotation.random(500, random_state=0))
    rotations += [Rotation.from_rotvec(axis * angle) for axis in np.eye(3) for angle in (np.pi, np.pi - 1e-7, 1e-9)]
    for r in rotations:
        q = r.as_quat()
        assert np.allclose(quat_to_matrix(*q), r.as_matrix(), atol=1e-12)
        back = np.array(matrix_to_quat(r.as_matrix()))
        assert np.allclose(back, q, atol=1e-9) or np.allclose(back, -q, atol=1e-9)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = r.as_matrix(), [0.3, -1.0, 2.0]
        assert np.allclose(rigid_inverse(T), np.linalg.inv(T), atol=1e-12)
    assert np.allclose(quat_to_matrix(0, 0, 0, 1.004), np.eye(3))  # normalised first


def test_interpolation_takes_the_shorter_way_round():
    """Two samples 20 degrees apart whose quaternions, as read from their matrices, lie on opposite
    sides (q and -q are the same rotation; -80 and -100 degrees about z pivot on w and on z):
    halfway is -90 degrees, not +90 the long way round."""
    buf = TransformBuffer(cache_seconds=10.0)
    for t, yaw in ((1.0, -80.0), (2.0, -100.0)):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("z", yaw, degrees=True).as_matrix()
        buf.set("map", "base", t, T)
    yaw = Rotation.from_matrix(buf.lookup("map", "base", 1.5)[:3, :3]).as_euler("xyz", degrees=True)[2]
    assert np.isclose(yaw, -90.0)


def test_approximate_sync_matches_within_slop_and_counts_the_rest():
    sync = ApproximateSync(3, slop=0.02, queue_size=3)
    assert sync.add(0, 1.00, "rgb1") is None
    assert sync.add(1, 1.01, "depth1") is None
    assert sync.add(2, 1.005, "info1") == ("rgb1", "depth1", "info1")
    assert sync.add(0, 2.0, "rgb2") is None
    assert sync.add(1, 2.5, "depth-late") is None  # 0.5 s apart: no match
    assert sync.add(2, 2.5, "info-late") is None  # still rgb2 at 2.0 vs 2.5
    assert sync.add(0, 2.51, "rgb3") == ("rgb3", "depth-late", "info-late")
    assert sync.unmatched == 1  # rgb2 was skipped over


def test_drop_oldest_queue_counts_drops():
    q = DropOldestQueue(2)
    assert q.put(1) and q.put(2)
    assert not q.put(3)
    assert q.dropped == 1 and [q.get(0.1), q.get(0.1), q.get(0.01)] == [2, 3, None]


def test_outputs_pack_rgb_and_markers():
    packed = pack_rgb(np.array([[255, 0, 1]], np.uint8))
    assert packed.dtype == np.float32 and packed.view(np.uint32)[0] == 0xFF0001
    inst = Instance(id=7, label=1, score=0.5, num_points=10, centroid=np.zeros(3), bbox_min=np.zeros(3),
                    bbox_max=np.array([1.0, 2.0, 0.5]))
    markers = instance_markers([inst], ["wall", "chair"], Header(frame_id="map")).markers
    assert len(markers) == 3 and markers[1].scale.y == 2.0 and markers[2].text.startswith("chair #7")
    assert math.isclose(markers[1].pose.position.x, 0.5)


def test_semantic_cloud_reads_back():
    msg = semantic_cloud(np.zeros((2, 3)), np.zeros((2, 3), np.uint8), np.array([3, 4]), np.array([0.1, 0.2]),
                         Header())
    cloud = pointcloud2_to_array(msg)
    assert cloud["label"].tolist() == [3, 4] and cloud.dtype.names == ("x", "y", "z", "rgb", "label", "score")


def test_sequence_gaps_count_what_each_publisher_sent_that_was_never_seen():
    from ovseg3d.ros.stats import SequenceGaps

    def info(seq, gid=b"a"):
        return {"publication_sequence_number": seq, "publisher_gid": {"data": gid}}

    gaps = SequenceGaps(max_publishers=2)
    assert gaps.missed("t", info(5)) == 0  # the first seen: what came before cannot be told
    # a message arriving after a later one was counted missed at the gap and adds nothing when it
    # comes (best-effort reordering on one host is rare; the count then errs high by it)
    assert [gaps.missed("t", info(s)) for s in (6, 9, 8, 12)] == [0, 2, 0, 2]
    assert gaps.missed("t", info(3, b"b")) == 0 and gaps.missed("u", info(20)) == 0  # per publisher and topic
    assert gaps.missed("t", info(20)) == 0  # forgotten (two publishers kept), so a new first
    assert gaps.missed("t", {"publication_sequence_number": None, "publisher_gid": None}) == 0  # no numbers
