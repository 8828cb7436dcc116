"""Render a coloured point cloud to a PNG from a chosen viewpoint (numpy z-buffer splatting).

Used for segmentation pictures: colour points by labels (``LabelSet.colorize``) or by any
per-point value (``values_to_colors``) and render. Indoor scenes drop their ceiling by default
so a view from above shows the room.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ovseg3d.data.synth.render import look_at
from ovseg3d.errors import UserError


def values_to_colors(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(N, 3) uint8 colours of scalar values on a perceptual blue-to-yellow ramp (viridis-like)."""
    v = np.asarray(values, dtype=np.float64)
    lo = np.nanmin(v) if vmin is None else vmin
    hi = np.nanmax(v) if vmax is None else vmax
    finite = np.isfinite(v)
    t = np.clip(np.nan_to_num((v - lo) / max(hi - lo, 1e-12)), 0, 1)
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], float)
    pos = t * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[:, None]
    out = (1 - f) * stops[i] + f * stops[i + 1]
    out[~finite] = 0
    return out.round().astype(np.uint8)


def default_view(points: np.ndarray, kind: str = "oblique") -> np.ndarray:
    """Camera-to-world pose looking at the cloud: 'oblique' from above a corner, or 'top'."""
    lo, hi = points.min(0), points.max(0)
    centre, extent = (lo + hi) / 2, float(np.linalg.norm(hi - lo))
    if kind == "top":
        eye = centre + np.array([0.0, -1e-3 * extent, 1.1 * extent])
    elif kind == "oblique":
        eye = centre + np.array([-0.45, -0.6, 0.75]) * extent
    else:
        raise UserError(f"unknown view {kind!r}; use 'oblique' or 'top'")
    return look_at(eye, centre)


def render_points(points: np.ndarray, colors: np.ndarray, cam_to_world: np.ndarray | None = None,
                  size: tuple[int, int] = (960, 720), fov_deg: float = 55.0, radius: int | None = None,
                  drop_ceiling: bool = True, background=(255, 255, 255)) -> np.ndarray:
    """(h, w, 3) uint8 image of the points, nearest point wins each pixel."""
    points = np.asarray(points, dtype=np.float64)
    colors = np.asarray(colors, dtype=np.uint8)
    if len(points) != len(colors):
        raise UserError(f"{len(points)} points but {len(colors)} colours")
    if len(points) == 0:
        raise UserError("nothing to render: the point cloud is empty")
    if drop_ceiling:
        keep = points[:, 2] < points[:, 2].max() - 0.15 * max(np.ptp(points[:, 2]), 1e-6)
        if keep.sum() > 0.5 * len(points):
            points, colors = points[keep], colors[keep]
    pose = default_view(points) if cam_to_world is None else cam_to_world
    w, h = size
    f = 0.5 * w / np.tan(np.deg2rad(fov_deg) / 2)
    cam = (points - pose[:3, 3]) @ pose[:3, :3]
    z = cam[:, 2]
    front = z > 1e-3
    u = (f * cam[front, 0] / z[front] + (w - 1) / 2)
    v = (f * cam[front, 1] / z[front] + (h - 1) / 2)
    z, c = z[front], colors[front]
    if radius is None:  # close the gaps: half the typical point spacing, projected at median depth
        from scipy.spatial import cKDTree

        sample = points[:: max(1, len(points) // 4000)]
        spacing = float(np.median(cKDTree(sample).query(sample, k=2)[0][:, 1])) * np.sqrt(len(sample) / len(points))
        radius = int(np.clip(np.ceil(0.6 * spacing * f / np.median(z)), 1, 6))
    zbuf = np.full(h * w, np.inf)
    idx_all, z_all, c_all = [], [], []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius:
                continue
            ui, vi = np.round(u).astype(np.int64) + dx, np.round(v).astype(np.int64) + dy
            ok = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
            idx_all.append(vi[ok] * w + ui[ok])
            z_all.append(z[ok])
            c_all.append(c[ok])
    idx, zz, cc = np.concatenate(idx_all), np.concatenate(z_all), np.concatenate(c_all)
    np.minimum.at(zbuf, idx, zz)
    win = zz <= zbuf[idx]
    img = np.empty((h * w, 3), dtype=np.float64)
    img[:] = background
    # Darken with depth for a sense of shape (simple depth cueing).
    near, far = np.percentile(zz[win], [2, 98]) if win.any() else (0, 1)
    shade = 1.0 - 0.35 * np.clip((zz[win] - near) / max(far - near, 1e-6), 0, 1)
    img[idx[win]] = cc[win] * shade[:, None]
    return img.reshape(h, w, 3).round().astype(np.uint8)


def save_png(path: Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
