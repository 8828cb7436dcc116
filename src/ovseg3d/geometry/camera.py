"""Pinhole cameras: projection, back-projection, intrinsics under resizing, OpenScene visibility.

Conventions: poses are 4x4 camera-to-world (ScanNet's `pose/<i>.txt`); the camera looks down +z
with x right and y down; pixel (u, v) has its centre at integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d.errors import UserError

DEFAULT_OCCLUSION_RATIO = 0.25  # OpenScene: visible if |depth - z| <= 0.25 * depth


def scale_intrinsics(K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics for an image resized from (w, h) to (w', h'), keeping pixel centres aligned."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    K2 = np.array(K, dtype=np.float64, copy=True)[:3, :3]
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5
    return K2


def check_registered(color_size: tuple[int, int], depth_size: tuple[int, int]) -> None:
    """A colour image registered to a depth image may have another resolution, not another view:
    (H, W) sizes whose aspect ratios differ by more than 1 % are refused."""
    (h, w), (dh, dw) = color_size, depth_size
    if min(h, w, dh, dw) < 1 or abs(h / w - dh / dw) > 0.01:
        raise UserError(f"colour image {w}x{h} and depth {dw}x{dh} have different aspect ratios")


def world_to_camera(points: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    """(N, 3) points in the camera frame."""
    R, t = cam_to_world[:3, :3], cam_to_world[:3, 3]
    return (np.asarray(points, dtype=np.float64) - t) @ R


def project(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2, float) and depth z (N,) of camera-frame points (z <= 0 gives nan)."""
    z = points_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_z = np.where(z > 0, z, np.nan)
        u = K[0, 0] * points_cam[:, 0] / safe_z + K[0, 2]
        v = K[1, 1] * points_cam[:, 1] / safe_z + K[1, 2]
    return np.stack([u, v], axis=1), z


def backproject(depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray | None = None,
                pixels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """3D points of the valid (finite, > 0) depth pixels, and their (v, u) pixel indices.

    With ``cam_to_world`` the points are in the world frame, else in the camera frame.
    ``pixels`` (M, 2) of (v, u) restricts to those pixels.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if pixels is None:
        valid = np.isfinite(depth) & (depth > 0)
        v, u = np.nonzero(valid)
    else:
        v, u = pixels[:, 0], pixels[:, 1]
    z = depth[v, u]
    x = (u - K[0, 2]) * z / K[0, 0]
    y = (v - K[1, 2]) * z / K[1, 1]
    pts = np.stack([x, y, z], axis=1)
    if cam_to_world is not None:
        pts = pts @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
    return pts, np.stack([v, u], axis=1)


def backproject_strided(depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray, stride: int = 1,
                        min_depth: float = 0.0, max_depth: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """``backproject`` of every ``stride``-th pixel per axis with depth in [min_depth, max_depth];
    the (v, u) returned index the full-resolution image (to pick colours)."""
    d = np.asarray(depth, np.float32)[::stride, ::stride]
    d = np.where((d >= min_depth) & (d <= max_depth), d, 0)
    Ks = np.array(K, dtype=np.float64)[:3, :3]
    Ks[:2] /= stride  # strided pixel (i, j) is pixel (stride i, stride j)
    pts, pix = backproject(d, Ks, cam_to_world)
    return pts, pix * stride


@dataclass
class Visibility:
    """Which points a view sees, and where: ``index`` into the points, pixel ``v``, ``u``, depth ``z``."""

    index: np.ndarray
    v: np.ndarray
    u: np.ndarray
    z: np.ndarray


def visible_points(points: np.ndarray, cam_to_world: np.ndarray, K: np.ndarray, image_size: tuple[int, int],
                   depth: np.ndarray | None = None, occlusion_ratio: float = DEFAULT_OCCLUSION_RATIO,
                   min_z: float = 1e-3) -> Visibility:
    """Points inside the image and, with a depth image, not occluded (OpenScene's test).

    A point is visible if it projects inside the (w, h) image in front of the camera and, given
    ``depth`` (h, w, metres, 0 or non-finite = no reading), ``|depth[v, u] - z| <= ratio * depth``.
    """
    w, h = image_size
    if depth is not None and depth.shape != (h, w):
        raise UserError(f"depth image is {depth.shape[1]}x{depth.shape[0]}, expected {w}x{h}")
    uv, z = project(world_to_camera(points, cam_to_world), K)
    with np.errstate(invalid="ignore"):
        u = np.round(uv[:, 0])
        v = np.round(uv[:, 1])
        inside = (z > min_z) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    idx = np.nonzero(inside)[0]
    u = u[idx].astype(np.int64)
    v = v[idx].astype(np.int64)
    z = z[idx]
    if depth is not None:
        d = depth[v, u]
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(d) & (d > 0) & (np.abs(d - z) <= occlusion_ratio * d)
        idx, u, v, z = idx[ok], u[ok], v[ok], z[ok]
    return Visibility(index=idx, v=v, u=u, z=z)


GREY = 128  # the colour of a point no camera saw (as the map gives LiDAR points)


def colors_from_camera(points_world: np.ndarray, rgb: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray
                       ) -> np.ndarray:
    """(N, 3) uint8 colours of world points seen by a camera (image ``rgb``, intrinsics ``K``, pose
    ``cam_to_world``): the nearest pixel each projects to; points behind it or outside its image are grey.
    For depth not registered to the colour camera (no occlusion test: the cameras sit close together)."""
    pts = np.asarray(points_world, np.float64).reshape(-1, 3)
    world_to_cam = np.linalg.inv(cam_to_world)
    p = pts @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    out = np.full((len(p), 3), GREY, np.uint8)
    front = np.flatnonzero(p[:, 2] > 1e-6)
    uvw = p[front] @ np.asarray(K, np.float64).T
    u = np.round(uvw[:, 0] / uvw[:, 2]).astype(np.int64)
    v = np.round(uvw[:, 1] / uvw[:, 2]).astype(np.int64)
    h, w = rgb.shape[:2]
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    out[front[inside]] = rgb[v[inside], u[inside], :3]
    return out
