"""PointCloud2 <-> numpy structured arrays, zero-copy where the layout allows.

sensor_msgs_py is not on PyPI, so the conversion is ours. Fields may come in any order, with
padding between them and at the end of a point (``point_step`` larger than the fields), and in
either byte order; ``count > 1`` fields become sub-array columns.
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from ovseg3d.errors import UserError

# PointField datatype constant -> numpy type code (the byte order is added per message).
_DATATYPES = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}
_TYPECODES = {np.dtype(code).str[1:]: datatype for datatype, code in _DATATYPES.items()}


def fields_to_dtype(fields: Sequence[PointField], point_step: int, bigendian: bool) -> np.dtype:
    """A numpy dtype with the fields at their offsets and itemsize ``point_step``."""
    order = ">" if bigendian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        if f.datatype not in _DATATYPES:
            raise UserError(f"PointCloud2 field {f.name!r} has unknown datatype {f.datatype}")
        if f.name in names:
            raise UserError(f"PointCloud2 field {f.name!r} appears twice")
        code = order + _DATATYPES[f.datatype]
        formats.append((code, (f.count,)) if f.count > 1 else code)
        names.append(f.name)
        offsets.append(f.offset)
    try:
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    except ValueError as exc:
        raise UserError(f"PointCloud2 fields do not fit point_step={point_step}: {exc}") from None


def pointcloud2_to_array(msg: PointCloud2) -> np.ndarray:
    """A structured array view of the message's points (shape height*width), validated."""
    n = msg.height * msg.width
    if msg.point_step <= 0 and n > 0:
        raise UserError("PointCloud2 has point_step 0")
    if msg.height > 1 and msg.row_step != msg.width * msg.point_step:
        # Rows with trailing padding: copy row by row.
        raw = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
        if raw.size < msg.row_step * msg.height:
            raise UserError(f"PointCloud2 data has {raw.size} bytes, expected {msg.row_step * msg.height}")
        rows = raw[: msg.row_step * msg.height].reshape(msg.height, msg.row_step)
        data = np.ascontiguousarray(rows[:, : msg.width * msg.point_step]).reshape(-1)
    else:
        data = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    need = n * msg.point_step
    if data.size != need:
        raise UserError(f"PointCloud2 data has {data.size} bytes, expected {need} "
                        f"({msg.height}x{msg.width} points of {msg.point_step} bytes)")
    dtype = fields_to_dtype(msg.fields, msg.point_step, msg.is_bigendian)
    return data.view(dtype) if n else np.zeros(0, dtype=dtype)


def xyz_from_pointcloud2(msg: PointCloud2, extra: Sequence[str] = ()) -> tuple[np.ndarray, dict]:
    """(N, 3) float32 xyz of the finite points, and the named extra fields that exist, same rows."""
    points = pointcloud2_to_array(msg)
    names = points.dtype.names or ()
    missing = [c for c in "xyz" if c not in names]
    if missing:
        raise UserError(f"PointCloud2 has no field(s) {', '.join(missing)} (fields: {', '.join(names)})")
    xyz = np.stack([points[c].astype(np.float32) for c in "xyz"], axis=1)
    keep = np.isfinite(xyz).all(axis=1)
    others = {name: np.asarray(points[name])[keep] for name in extra if name in names}
    return xyz[keep], others


def array_to_pointcloud2(points: np.ndarray, header: Header | None = None) -> PointCloud2:
    """A PointCloud2 (height 1, native little-endian) from a structured array."""
    if points.dtype.names is None:
        raise UserError("array_to_pointcloud2 needs a structured array with named fields")
    points = np.ascontiguousarray(points)
    fields = []
    for name in points.dtype.names:
        ftype, offset = points.dtype.fields[name][:2]
        base = ftype.base if ftype.subdtype else ftype
        count = int(np.prod(ftype.shape)) if ftype.subdtype else 1
        if base.byteorder == ">":
            raise UserError("array_to_pointcloud2 writes little-endian clouds; convert the array first")
        key = base.str[1:]
        if key not in _TYPECODES:
            raise UserError(f"field {name!r} has type {base} that PointCloud2 cannot hold")
        fields.append(PointField(name=name, offset=offset, datatype=_TYPECODES[key], count=count))
    msg = PointCloud2(header=header or Header(), height=1, width=len(points), fields=fields,
                      is_bigendian=False, point_step=points.dtype.itemsize,
                      row_step=points.dtype.itemsize * len(points), is_dense=True)
    buf = array.array("B")
    buf.frombytes(points.tobytes())
    msg.data = buf
    return msg


def xyz_fields_array(xyz: np.ndarray, **columns: np.ndarray) -> np.ndarray:
    """A packed structured array with float32 x, y, z and the given columns (dtype as given)."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    spec = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    spec += [(name, np.asarray(col).dtype.newbyteorder("<").str) for name, col in columns.items()]
    out = np.zeros(len(xyz), dtype=spec)
    out["x"], out["y"], out["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    for name, col in columns.items():
        out[name] = col
    return out
