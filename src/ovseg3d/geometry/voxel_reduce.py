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

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numba
import numpy as np

from ovseg3d.errors import UserError
from ovseg3d.geometry.camera import check_registered

BIAS = 1 << 20  # voxel indices in [-2^20, 2^20) per axis: +-21 km at 2 cm
_EMPTY = -1  # a free hash slot (packed keys are >= 0)
_OK, _TOO_FAR, _FULL = 0, 1, 2  # how a kernel ended


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

    keys: np.ndarray  # (M,) int64, distinct, in the order the points first reached them
    xyz: np.ndarray  # (M, 3) float64 sums
    rgb: np.ndarray | None  # (M, 3) float64 sums, or None without colours
    count: np.ndarray  # (M,) int64
    voxel: float  # the grid's cell size, metres

    def __len__(self) -> int:
        return len(self.keys)


class _Table(threading.local):
    """A hash table per thread, kept between frames: allocating and clearing a fresh one per frame
    (3 MB at 640x480) cost more than the reduction, in page faults shared with the student's
    threads. Each call empties the slots it used before it returns.

    A call uses a power-of-two prefix of it sized for the voxels the last frame of its kind
    (depth or points) brought, not for its points: every pixel of a 640x480 frame (stride 2) in a
    voxel of its own would take 2^18 slots (4 MB, beyond the caches: a cache miss a probe), while
    a frame lands in 12-55k voxels (2^16-2^17 slots). A frame that brings more than its prefix
    holds (half full) stops and runs again on a prefix sized for all of its points."""

    def __init__(self) -> None:
        self.slots = np.full((1024, 2), _EMPTY, np.int64)  # (key, row) side by side: one cache line a probe
        self.voxels: dict[str, int] = {}  # voxels the last frame of each kind brought

    def fitting(self, points: int, kind: str, worst: bool = False) -> tuple[np.ndarray, np.uint64]:
        """The table prefix for a frame of ``points`` points (``worst``: room for each in its own voxel)."""
        expect = points if worst or kind not in self.voxels else min(points, 3 * self.voxels[kind] // 2 + 1024)
        bits = max(10, int(2 * expect - 1).bit_length())  # at most half full: short probe chains
        if len(self.slots) < (1 << bits):
            self.slots = np.full((1 << bits, 2), _EMPTY, np.int64)
        return self.slots[: 1 << bits], np.uint64(64 - bits)


_TABLE = _Table()


@numba.njit(cache=True, inline="always")
def _key(x: float, y: float, z: float, voxel: float) -> np.int64:
    """Packed voxel key (``pack_keys``: a division, not a product with 1 / voxel, which rounds
    differently at cell borders), or -1 when the voxel index is outside the packed range."""
    fi, fj, fk = np.floor(x / voxel), np.floor(y / voxel), np.floor(z / voxel)
    if not (-BIAS <= fi < BIAS and -BIAS <= fj < BIAS and -BIAS <= fk < BIAS):  # before any int conversion
        return np.int64(-1)
    return ((np.int64(fi) + BIAS) << 42) | ((np.int64(fj) + BIAS) << 21) | (np.int64(fk) + BIAS)


@numba.njit(cache=True, inline="always")
def home_slot(key: np.int64, shift: np.uint64) -> np.int64:
    """A packed key's first slot in a table of 2^(64 - shift) slots: the top bits of its Fibonacci
    hash (the product's top bits, so every key bit counts). Shared by the map's key index."""
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> shift)


@numba.njit(cache=True, inline="always")
def _row(table, shift, keys, slots, sums, count, m, key) -> tuple[int, int]:
    """The row of ``key``'s voxel (a new, zeroed one when the key is new) and the rows in use.
    Linear probing from the Fibonacci hash. The kernels ask only when a point's key differs from
    the previous point's: neighbouring pixels (and a sweep's neighbouring returns) mostly share a
    voxel, and skipping the probe of a table larger than the cache saved ~30 % of a depth frame."""
    mask = len(table) - 1
    i = home_slot(key, shift)
    while table[i, 0] != key and table[i, 0] != _EMPTY:
        i = (i + 1) & mask
    if table[i, 0] == _EMPTY:
        table[i, 0], table[i, 1], keys[m], slots[m] = key, m, key, i
        sums[m, :] = 0.0
        count[m] = 0
        m += 1
    return table[i, 1], m


@numba.njit(cache=True, inline="always")
def _add(sums, count, row, x, y, z, r, g, b) -> None:
    sums[row, 0] += x
    sums[row, 1] += y
    sums[row, 2] += z
    sums[row, 3] += r
    sums[row, 4] += g
    sums[row, 5] += b
    count[row] += 1


@numba.njit(cache=True, nogil=True)
def _reduce_points(points, colors, pose, origin, min_range, max_range, voxel, table, shift):
    n = points.shape[0]
    keys, slots, count = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    sums = np.empty((n, 6))  # rows are touched (and paged in) only as voxels appear
    with_color = colors.shape[0] == n
    m, status, last, row = 0, _OK, np.int64(-1), 0
    for p in range(n):
        a, b, c = points[p, 0], points[p, 1], points[p, 2]
        x = pose[0, 0] * a + pose[0, 1] * b + pose[0, 2] * c + pose[0, 3]
        y = pose[1, 0] * a + pose[1, 1] * b + pose[1, 2] * c + pose[1, 3]
        z = pose[2, 0] * a + pose[2, 1] * b + pose[2, 2] * c + pose[2, 3]
        if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(z)):
            continue
        dist = np.sqrt((x - origin[0]) ** 2 + (y - origin[1]) ** 2 + (z - origin[2]) ** 2)
        if not (min_range <= dist <= max_range):
            continue
        key = _key(x, y, z, voxel)
        if key < 0:
            status = _TOO_FAR
            break
        r, g, b = (colors[p, 0], colors[p, 1], colors[p, 2]) if with_color else (0.0, 0.0, 0.0)
        if key != last:
            row, m = _row(table, shift, keys, slots, sums, count, m, key)
            last = key
            if 2 * m > len(table):  # past half full: run again on a larger prefix
                status = _FULL
                break
        _add(sums, count, row, x, y, z, r, g, b)
    table[slots[:m], 0] = _EMPTY  # the table is clean for the next frame
    return keys[:m], sums[:m], count[:m], status


@numba.njit(cache=True, nogil=True)
def _reduce_depth(depth, rgb, K, pose, stride, min_depth, max_depth, voxel, row0, row1, table, shift):
    """Depth rows [row0, row1) (row0 a multiple of the stride: the same pixels as the whole frame)."""
    h, w = depth.shape
    n = ((row1 - row0 + stride - 1) // stride) * ((w + stride - 1) // stride)
    keys, slots, count = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    sums = np.empty((n, 6))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    with_color = rgb.shape[0] > 0
    ch, cw = rgb.shape[0], rgb.shape[1]  # a registered colour image of any size: pixel scaled by integers
    m, status, last, row = 0, _OK, np.int64(-1), 0
    for v in range(row0, row1, stride):
        if status != _OK:
            break
        vc = v * ch // h
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
                status = _TOO_FAR
                break
            if with_color:
                uc = u * cw // w
                r, g, b = np.float64(rgb[vc, uc, 0]), np.float64(rgb[vc, uc, 1]), np.float64(rgb[vc, uc, 2])
            else:
                r, g, b = 0.0, 0.0, 0.0
            if key != last:
                row, m = _row(table, shift, keys, slots, sums, count, m, key)
                last = key
                if 2 * m > len(table):  # past half full: run again on a larger prefix
                    status = _FULL
                    break
            _add(sums, count, row, x, y, z, r, g, b)
    table[slots[:m], 0] = _EMPTY
    return keys[:m], sums[:m], count[:m], status


def _reduced(kernel: Callable[[np.ndarray, np.uint64], tuple], points: int, kind: str, with_color: bool,
             voxel: float) -> VoxelSums:
    """Run ``kernel`` on the table prefix the last frame of its kind suggests; again on one with
    room for every point when that filled up (a frame that reached far more voxels)."""
    out = kernel(*_TABLE.fitting(points, kind))
    if out[3] == _FULL:
        out = kernel(*_TABLE.fitting(points, kind, worst=True))
    _TABLE.voxels[kind] = len(out[0])
    keys, sums, count, status = out
    if status == _TOO_FAR:
        raise UserError("points too far from the map origin for the voxel grid")
    return VoxelSums(keys, sums[:, :3], sums[:, 3:] if with_color else None, count, voxel)


def _small(a: np.ndarray) -> np.ndarray:
    """A float64 C-contiguous writeable copy of a small array (a pose, K): one compiled kernel type."""
    return np.array(a, np.float64, order="C")


def reduce_points(points: np.ndarray, colors: np.ndarray | None, voxel: float, pose: np.ndarray | None = None,
                  origin: np.ndarray | None = None, min_range: float = 0.0, max_range: float = np.inf) -> VoxelSums:
    """Per-voxel sums of points (non-finite ones dropped) and their colours. ``pose`` (4x4) takes
    them into the map's frame first (a LiDAR sweep in its sensor's frame), and only those at
    [min_range, max_range] from ``origin`` (default: the pose's translation, the sensor) count."""
    points = np.require(np.asarray(points, np.float64).reshape(-1, 3), None, ["C", "W"])
    c = np.zeros((0, 3)) if colors is None else np.require(np.asarray(colors, np.float64).reshape(-1, 3), None,
                                                           ["C", "W"])
    if colors is not None and len(c) != len(points):
        raise UserError(f"{len(c)} colours for {len(points)} points")
    pose = np.eye(4) if pose is None else _small(pose)
    origin = pose[:3, 3] if origin is None else np.asarray(origin, np.float64).reshape(-1)[:3]
    kernel = functools.partial(_reduce_points, points, c, pose, _small(origin), float(min_range),
                               float(max_range), float(voxel))
    return _reduced(kernel, len(points), "points", colors is not None, float(voxel))


def reduce_depth(depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray, voxel: float, stride: int = 1,
                 min_depth: float = 0.0, max_depth: float = np.inf, rgb: np.ndarray | None = None) -> VoxelSums:
    """Per-voxel sums of every ``stride``-th depth pixel per axis with depth in [min_depth,
    max_depth] (finite, > 0), back-projected into the world, with the colour of the same pixel of a
    registered ``rgb`` image: ``camera.backproject_strided`` then ``reduce_points`` in one pass.
    The colour image may have another resolution of the same view (a camera's 1280x960 colour
    beside 640x480 depth, or a JPEG decoded at a fraction of its size because only every
    ``stride``-th pixel is read): pixel (v, u) takes colour pixel (v * H // h, u * W // w), nearest."""
    kernel, rows = _depth_kernel(depth, K, cam_to_world, voxel, stride, min_depth, max_depth, rgb)
    return kernel("depth", 0, rows)


def reduce_depth_bands(depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray, voxel: float, stride: int,
                       min_depth: float, max_depth: float, rgb: np.ndarray | None, helper: Executor
                       ) -> list[VoxelSums]:
    """``reduce_depth`` in two bands of rows at once, the lower one on ``helper`` (another thread:
    the kernel holds no GIL), so the reduction takes about half its time where a second core is
    free. Each band's sums are a frame's own (a voxel the bands share is in both): the map merges
    them one after the other as it merges frames. Same pixels, same voxels, as one pass."""
    kernel, rows = _depth_kernel(depth, K, cam_to_world, voxel, stride, min_depth, max_depth, rgb)
    middle = (rows // 2) // stride * stride  # on the stride's grid
    lower = helper.submit(kernel, "depth_band", middle, rows)
    try:
        upper = kernel("depth_band", 0, middle)
    finally:
        below = lower.result()  # never leave the helper writing into this frame's arrays
    return [upper, below]


def _depth_kernel(depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray, voxel: float, stride: int,
                  min_depth: float, max_depth: float, rgb: np.ndarray | None
                  ) -> tuple[Callable[[str, int, int], VoxelSums], int]:
    """The checked inputs of a depth frame bound to its kernel: call it with a table kind and a
    band of rows [row0, row1); and the frame's row count."""
    # contiguous and writeable (numba compiles read-only arrays -- Pillow's images, message buffers --
    # as another type: a second compile, seconds long, on the first compressed frame); depth in
    # float32, as backproject_strided reads it
    depth = np.require(depth, np.float32, ["C", "W"])
    if depth.ndim != 2:
        raise UserError(f"depth must be a 2D image, got shape {depth.shape}")
    if rgb is not None and np.asarray(rgb).dtype != np.uint8:
        raise UserError(f"the colour image must be 8-bit (uint8), got {np.asarray(rgb).dtype}")
    image = np.zeros((0, 0, 3), np.uint8) if rgb is None else np.require(rgb, np.uint8, ["C", "W"])
    if rgb is not None:
        if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise UserError(f"colour image of shape {image.shape} does not match depth {depth.shape} (H, W, 3)")
        check_registered(image.shape[:2], depth.shape)
    if stride < 1:
        raise UserError(f"the depth stride must be at least 1, got {stride}")
    cols = -(-depth.shape[1] // stride)
    bound = functools.partial(_reduce_depth, depth, image, _small(np.asarray(K, np.float64)[:3, :3]),
                              _small(cam_to_world), int(stride), float(min_depth), float(max_depth), float(voxel))

    def kernel(kind: str, row0: int, row1: int) -> VoxelSums:
        points = -(-(row1 - row0) // stride) * cols
        return _reduced(functools.partial(bound, row0, row1), points, kind, rgb is not None, float(voxel))

    return kernel, depth.shape[0]
