"""PointCloud2 conversions on messages built in memory, including odd layouts."""

import array

import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2, PointField

from ovseg3d.errors import UserError
from ovseg3d.ros.pointcloud2 import (
    array_to_pointcloud2,
    pointcloud2_to_array,
    xyz_fields_array,
    xyz_from_pointcloud2,
)


def _msg(raw: bytes, fields, point_step, n, bigendian=False, height=1, row_step=None):
    data = array.array("B")
    data.frombytes(raw)
    return PointCloud2(height=height, width=n // height, fields=fields, is_bigendian=bigendian,
                       point_step=point_step, row_step=row_step or point_step * (n // height), data=data)


def test_round_trip_keeps_every_field():
    pts = xyz_fields_array(np.arange(12, dtype=np.float32).reshape(4, 3), rgb=np.arange(4, dtype=np.uint32),
                           score=np.linspace(0, 1, 4, dtype=np.float32))
    back = pointcloud2_to_array(array_to_pointcloud2(pts))
    assert back.dtype.names == ("x", "y", "z", "rgb", "score")
    assert all(np.array_equal(back[n], pts[n]) for n in pts.dtype.names)


def test_reordered_padded_bigendian_fields():
    # intensity first, then z, y, x, with 4 bytes of padding after each point; big-endian.
    dt = np.dtype({"names": ["intensity", "z", "y", "x"], "formats": [">f4", ">f8", ">f4", ">f4"],
                   "offsets": [0, 4, 12, 16], "itemsize": 24})
    arr = np.zeros(3, dtype=dt)
    arr["x"], arr["y"], arr["z"], arr["intensity"] = [1, 2, 3], [4, 5, 6], [7, 8, 9], [0.5, 0.6, 0.7]
    fields = [PointField(name="intensity", offset=0, datatype=PointField.FLOAT32, count=1),
              PointField(name="z", offset=4, datatype=PointField.FLOAT64, count=1),
              PointField(name="y", offset=12, datatype=PointField.FLOAT32, count=1),
              PointField(name="x", offset=16, datatype=PointField.FLOAT32, count=1)]
    msg = _msg(arr.tobytes(), fields, 24, 3, bigendian=True)
    xyz, extra = xyz_from_pointcloud2(msg, extra=["intensity", "ring"])
    assert xyz.tolist() == [[1, 4, 7], [2, 5, 8], [3, 6, 9]]
    assert extra["intensity"] == pytest.approx([0.5, 0.6, 0.7])
    assert "ring" not in extra


def test_row_padding_in_organized_clouds():
    pts = xyz_fields_array(np.arange(12, dtype=np.float32).reshape(4, 3))
    rows = pts.tobytes()
    raw = rows[:24] + b"\0" * 8 + rows[24:] + b"\0" * 8  # 2 rows of 2 points, 8 bytes of row padding
    fields = array_to_pointcloud2(pts).fields
    msg = _msg(raw, fields, 12, 4, height=2, row_step=32)
    xyz, _ = xyz_from_pointcloud2(msg)
    assert xyz.tolist() == np.arange(12, dtype=np.float32).reshape(4, 3).tolist()


def test_nan_and_inf_points_are_dropped():
    xyz = np.array([[0, 0, 0], [np.nan, 1, 1], [1, np.inf, 1], [2, 2, 2]], np.float32)
    got, _ = xyz_from_pointcloud2(array_to_pointcloud2(xyz_fields_array(xyz)))
    assert got.tolist() == [[0, 0, 0], [2, 2, 2]]


def test_count_greater_than_one_is_a_subarray():
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("normal", "<f4", (3,))])
    arr = np.zeros(2, dtype=dt)
    arr["normal"] = [[0, 0, 1], [1, 0, 0]]
    back = pointcloud2_to_array(array_to_pointcloud2(arr))
    assert back["normal"].tolist() == [[0, 0, 1], [1, 0, 0]]


@pytest.mark.parametrize("case", ["missing_x", "short_data", "bad_datatype", "overlapping_step"])
def test_malformed_clouds_raise_user_errors(case):
    pts = xyz_fields_array(np.zeros((3, 3), np.float32))
    msg = array_to_pointcloud2(pts)
    if case == "missing_x":
        msg.fields = [f for f in msg.fields if f.name != "x"]
        with pytest.raises(UserError, match="no field"):
            xyz_from_pointcloud2(msg)
        return
    if case == "short_data":
        msg.data = msg.data[:-4]
    elif case == "bad_datatype":
        msg.fields[0].datatype = 42
    elif case == "overlapping_step":
        msg.point_step = 8
        msg.row_step = 24
        msg.data = msg.data[:24]
    with pytest.raises(UserError):
        pointcloud2_to_array(msg)
