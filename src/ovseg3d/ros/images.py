"""sensor_msgs Image and CameraInfo <-> numpy (cv_bridge is not on PyPI, and needs no OpenCV here).

Rows may carry padding (``step`` larger than width x pixel size) and multi-byte pixels either
byte order; both are handled. Depth comes as 16UC1 (millimetres) or 32FC1 (metres); invalid
depth (0, NaN, inf) becomes 0.
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ovseg3d.errors import UserError

# encoding -> (numpy type, channels)
ENCODINGS = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4), "mono8": ("u1", 1),
    "16UC1": ("u2", 1), "mono16": ("u2", 1), "32FC1": ("f4", 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


def image_to_array(msg: Image) -> np.ndarray:
    """(H, W) or (H, W, C) array view of the pixels, native byte order."""
    if msg.encoding not in ENCODINGS:
        raise UserError(f"unsupported image encoding {msg.encoding!r} (supported: {', '.join(ENCODINGS)})")
    code, channels = ENCODINGS[msg.encoding]
    dtype = np.dtype(code).newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * channels * dtype.itemsize
    if msg.height == 0 or msg.width == 0:
        raise UserError("image is empty (0 width or height)")
    if msg.step < row:
        raise UserError(f"image step {msg.step} is smaller than a row of {msg.width} {msg.encoding} pixels ({row})")
    raw = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if raw.size < msg.step * msg.height:
        raise UserError(f"image data has {raw.size} bytes, expected {msg.step * msg.height}")
    rows = raw[: msg.step * msg.height].reshape(msg.height, msg.step)[:, :row]
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(msg.height, msg.width, channels)
    pixels = pixels.astype(dtype.newbyteorder("="), copy=False)
    return pixels[..., 0] if channels == 1 else pixels


def color_image(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any supported colour encoding."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise UserError(f"colour image has encoding {msg.encoding!r}; expected one of {', '.join(COLOR_ENCODINGS)}")
    px = image_to_array(msg)
    if msg.encoding == "mono8":
        return np.repeat(px[..., None], 3, axis=2)
    if msg.encoding.startswith("bgr"):
        px = px[..., [2, 1, 0]]
    return np.ascontiguousarray(px[..., :3])


def depth_image(msg: Image) -> np.ndarray:
    """(H, W) float32 metres, 0 where invalid."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise UserError(f"depth image has encoding {msg.encoding!r}; expected 16UC1 (mm) or 32FC1 (m)")
    px = image_to_array(msg)
    depth = px.astype(np.float32) / 1000.0 if px.dtype.kind == "u" else px.astype(np.float32)
    depth[~np.isfinite(depth) | (depth < 0)] = 0
    return depth


MIN_FOV_DEG, MAX_FOV_DEG = 1.0, 179.0  # a pinhole field of view outside this is a broken CameraInfo


def camera_matrix(info: CameraInfo) -> np.ndarray:
    """The 3x3 intrinsic matrix, validated: positive focal lengths giving a field of view between 1
    and 179 degrees, the principal point inside the image, the pinhole form [[fx, s, cx], [0, fy, cy],
    [0, 0, 1]]. (A focal length of 1e-6 px would back-project a depth pixel kilometres sideways.)"""
    K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1 or K[1, 0] or K[2, 0] or K[2, 1]:
        raise UserError("CameraInfo has an invalid K (positive focal lengths, K[2,2] = 1, zeros below the diagonal)")
    if info.width == 0 or info.height == 0:
        raise UserError("CameraInfo has 0 width or height")
    fov = np.degrees(2 * np.arctan2([info.width / 2, info.height / 2], [K[0, 0], K[1, 1]]))
    if not ((fov >= MIN_FOV_DEG) & (fov <= MAX_FOV_DEG)).all():
        raise UserError(f"CameraInfo's focal lengths ({K[0, 0]:.4g}, {K[1, 1]:.4g} px) give a {fov[0]:.3g} x "
                        f"{fov[1]:.3g} degree view of a {info.width}x{info.height} image; expected "
                        f"{MIN_FOV_DEG:g}-{MAX_FOV_DEG:g}")
    if not (0 <= K[0, 2] <= info.width and 0 <= K[1, 2] <= info.height) or abs(K[0, 1]) > K[0, 0]:
        raise UserError(f"CameraInfo's principal point ({K[0, 2]:.4g}, {K[1, 2]:.4g}) lies outside the "
                        f"{info.width}x{info.height} image, or its skew is larger than fx")
    return K


def compressed_image(fmt: str, data: bytes, header: Header | None = None) -> CompressedImage:
    """A CompressedImage message of already encoded bytes (``ros.compressed``'s writers)."""
    buf = array.array("B")
    buf.frombytes(data)
    return CompressedImage(header=header or Header(), format=fmt, data=buf)


def array_to_image(pixels: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """An Image message of a (H, W[, C]) array in ``encoding`` (little-endian, no padding)."""
    code, channels = ENCODINGS[encoding]
    pixels = np.ascontiguousarray(pixels, dtype=np.dtype(code).newbyteorder("<"))
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[2] != channels:
        raise UserError(f"{encoding} needs {channels} channels, got {pixels.shape[2]}")
    h, w = pixels.shape[:2]
    buf = array.array("B")
    buf.frombytes(pixels.tobytes())
    msg = Image(header=header or Header(), height=h, width=w, encoding=encoding, is_bigendian=0,
                step=w * channels * pixels.dtype.itemsize)
    msg.data = buf
    return msg


def camera_info(K: np.ndarray, width: int, height: int, header: Header | None = None) -> CameraInfo:
    K = np.asarray(K, dtype=np.float64)[:3, :3]
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(header=header or Header(), width=int(width), height=int(height), distortion_model="plumb_bob",
                      d=[0.0] * 5, k=K.reshape(-1).tolist(), r=np.eye(3).reshape(-1).tolist(),
                      p=P.reshape(-1).tolist())
