"""Per-voxel sums of a frame's points in one pass, without the GIL: what the live map's ingest does
before it merges a frame into the map.

A 640x480 depth frame is ~77k points (stride 2) that land in a few thousand map voxels. The numpy
way (back-project, pack keys, ``np.unique``, six ``bincount``s, a colour gather) cost ~15 ms of CPU
per frame and, worse, released and re-took the GIL a dozen times: on two cores beside the student
each re-take waited for another thread's switch interval, which doubled the wall time. Here one
compiled call back-projects, keys and sums through an open-addressing hash table (no sort at all;
the map sorts only the voxels it did not have). Sums are in float64, as ``np.bincount`` made them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ovseg3d.errors import UserError

BIAS = 1 << 20  # voxel indices in [-2^20, 2^20) per axis: +-21 km at 2 cm
_EMPTY = -1  # a free hash slot (packed keys are >= 0)
_TOO_FAR = -2  # returned count when a point's voxel index does not fit the packed key


def pack_keys(ijk: np.ndarray) -> np.ndarray:
    """One int64 per integer voxel index (i, j, k): the map's keys, sortable and hashable."""
    ijk = np.asarray(ijk, dtype=np.int64) + BIAS
    if (ijk < 0).any() or (ijk >= 2 * BIAS).any():
        raise UserError("points too far from the map origin for the voxel grid")
    return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]


@dataclass
class VoxelSums:
    """A frame reduced to its voxels: packed keys, and per voxel the sums of its points'
    positions and colours (float64) and how many points it got."""

    keys: np.ndarray  # (M,) int64, distinct, in no particular order
    xyz: np.ndarray  # (M, 3) float64 sums
    rgb: np.ndarray | None  # (M, 3) float64 sums, or None without colours
    count: np.ndarray  # (M,) int64
    voxel: float  # the grid's cell size, metres

    def __len__(self) -> int:
        return len(self.keys)


@numba.njit(cache=True, inline="always")
def _slot(table_keys: np.ndarray, shift: np.uint64, key: np.int64) -> np.int64:
    """The table slot of ``key``, claimed if new (linear probing; the table is at most half full).
    Fibonacci hashing: the product's top bits, which depend on every bit of the key."""
    mask = len(table_keys) - 1
    i = np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> shift)
    while True:
        k = table_keys[i]
        if k == key:
            return i
        if k == _EMPTY:
            table_keys[i] = key
            return i
        i = (i + 1) & mask


@numba.njit(cache=True, inline="always")
def _key(x: float, y: float, z: float, voxel: float) -> np.int64:
    """Packed voxel key (``voxel_map.pack_keys``: a division, not a product with 1 / voxel, which
    rounds differently at cell borders), or -1 when the voxel index is outside the packed range."""
    fi, fj, fk = np.floor(x / voxel), np.floor(y / voxel), np.floor(z / voxel)
    if not (-BIAS <= fi < BIAS and -BIAS <= fj < BIAS and -BIAS <= fk < BIAS):  # before any int conversion
        return np.int64(-1)
    return ((np.int64(fi) + BIAS) << 42) | ((np.int64(fj) + BIAS) << 21) | (np.int64(fk) + BIAS)


@numba.njit(cache=True)
def _table(points: int):
    bits = 10
    while (1 << bits) < 2 * points:
        bits += 1
    size = 1 << bits
    return np.full(size, _EMPTY, np.int64), np.zeros((size, 6)), np.zeros(size, np.int64), np.uint64(64 - bits)


@numba.njit(cache=True)
def _collect(table_keys, sums, count):
    used = np.flatnonzero(table_keys != _EMPTY)  # in hash order: the map sorts only its new voxels
    return table_keys[used], sums[used], count[used]


@numba.njit(cache=True, nogil=True)
def _reduce_points(points, colors, voxel):
    n = points.shape[0]
    table_keys, sums, count, shift = _table(n)
    with_color = colors.shape[0] == n
    for p in range(n):
        x, y, z = points[p, 0], points[p, 1], points[p, 2]
        if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(z)):
            continue
        key = _key(x, y, z, voxel)
        if key < 0:
            return table_keys[:0], sums[:0], np.full(1, _TOO_FAR, np.int64)
        s = _slot(table_keys, shift, key)
        sums[s, 0] += x
        sums[s, 1] += y
        sums[s, 2] += z
        if with_color:
            sums[s, 3] += colors[p, 0]
            sums[s, 4] += colors[p, 1]
            sums[s, 5] += colors[p, 2]
        count[s] += 1
    return _collect(table_keys, sums, count)


@numba.njit(cache=True, nogil=True)
def _reduce_depth(depth, rgb, K, pose, stride, min_depth, max_depth, voxel):
    h, w = depth.shape
    rows, cols = (h + stride - 1) // stride, (w + stride - 1) // stride
    table_keys, sums, count, shift = _table(rows * cols)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    with_color = rgb.shape[0] == h
    for v in range(0, h, stride):
        for u in range(0, w, stride):
            d = np.float64(depth[v, u])
            if not (d >= min_depth and d <= max_depth and d > 0.0 and np.isfinite(d)):
                continue
            xc = (u - cx) * d / fx
            yc = (v - cy) * d / fy
            x = pose[0, 0] * xc + pose[0, 1] * yc + pose[0, 2] * d + pose[0, 3]
            y = pose[1, 0] * xc + pose[1, 1] * yc + pose[1, 2] * d + pose[1, 3]
            z = pose[2, 0] * xc + pose[2, 1] * yc + pose[2, 2] * d + pose[2, 3]
            if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(z)):
                continue
            key = _key(x, y, z, voxel)
            if key < 0:
                return table_keys[:0], sums[:0], np.full(1, _TOO_FAR, np.int64)
            s = _slot(table_keys, shift, key)
            sums[s, 0] += x
            sums[s, 1] += y
            sums[s, 2] += z
            if with_color:
                sums[s, 3] += rgb[v, u, 0]
                sums[s, 4] += rgb[v, u, 1]
                sums[s, 5] += rgb[v, u, 2]
            count[s] += 1
    return _collect(table_keys, sums, count)


def _sums(out: tuple[np.ndarray, np.ndarray, np.ndarray], with_color: bool, voxel: float) -> VoxelSums:
    keys, sums, count = out
    if len(count) == 1 and count[0] == _TOO_FAR:
        raise UserError("points too far from the map origin for the voxel grid")
    return VoxelSums(keys, sums[:, :3], sums[:, 3:] if with_color else None, count, voxel)


def reduce_points(points: np.ndarray, colors: np.ndarray | None, voxel: float) -> VoxelSums:
    """Per-voxel sums of world-frame points (non-finite rows dropped) and their colours."""
    points = np.ascontiguousarray(points, np.float64).reshape(-1, 3)
    c = np.zeros((0, 3)) if colors is None else np.ascontiguousarray(colors, np.float64).reshape(-1, 3)
    if colors is not None and len(c) != len(points):
        raise UserError(f"{len(c)} colours for {len(points)} points")
    return _sums(_reduce_points(points, c, float(voxel)), colors is not None, float(voxel))


def reduce_depth(depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray, voxel: float, stride: int = 1,
                 min_depth: float = 0.0, max_depth: float = np.inf, rgb: np.ndarray | None = None) -> VoxelSums:
    """Per-voxel sums of every ``stride``-th depth pixel per axis with depth in [min_depth,
    max_depth] (finite, > 0), back-projected into the world, with the colour of the same pixel of a
    registered ``rgb`` image: ``camera.backproject_strided`` then ``reduce_points`` in one pass."""
    depth = np.ascontiguousarray(depth, np.float32)  # as backproject_strided reads it
    image = np.zeros((0, 0, 3), np.uint8) if rgb is None else np.ascontiguousarray(rgb, np.uint8)
    if rgb is not None and image.shape[:2] != depth.shape:
        raise UserError(f"colour image {image.shape[:2]} does not match depth {depth.shape}")
    out = _reduce_depth(depth, image, np.ascontiguousarray(K, np.float64)[:3, :3],
                        np.ascontiguousarray(cam_to_world, np.float64), int(stride), float(min_depth),
                        float(max_depth), float(voxel))
    return _sums(out, rgb is not None, float(voxel))
