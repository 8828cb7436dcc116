"""Informative-frame selection: run the teacher on fewer frames for the same coverage.

HAS-KD filters an image sequence down to its informative images before the teacher sees them.
Our version is a greedy set cover over the scene's points (on a coarse voxel grid): each step
takes the frame that sees the most surface not yet seen, plus a bonus for points it sees from a
direction at least ``angle_deg`` away from their first view (viewpoint variety helps fusion
average out view-dependent teacher errors), and stops at a coverage target, a frame budget, or
when no frame adds at least ``min_gain`` of the points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.geometry.camera import DEFAULT_OCCLUSION_RATIO, visible_points
from ovseg3d.geometry.voxels import voxelize


@dataclass
class FrameVisibility:
    frame_ids: list[int]
    seen: list[np.ndarray]  # per frame: indices of the (downsampled) points it sees
    directions: list[np.ndarray]  # per frame: unit vectors from those points to the camera
    num_points: int


def frame_visibility(scene: ScanNetScene, voxel: float = 0.05, stride: int = 1,
                     occlusion_ratio: float = DEFAULT_OCCLUSION_RATIO) -> FrameVisibility:
    """Which points of a ``voxel`` downsampling of the scene each frame sees."""
    pts = scene.points[voxelize(scene.points, voxel).first_point].astype(np.float64)
    ids, seen, dirs = [], [], []
    for f in scene.frames(stride=stride, with_color=False):
        vis = visible_points(pts, f.pose, f.K, f.image_size, f.depth, occlusion_ratio)
        d = f.pose[:3, 3] - pts[vis.index]
        ids.append(f.frame_id)
        seen.append(vis.index)
        dirs.append(d / np.linalg.norm(d, axis=1, keepdims=True))
    return FrameVisibility(ids, seen, dirs, len(pts))


def coverage(fv: FrameVisibility, chosen: list[int]) -> float:
    """Fraction of the downsampled points seen by at least one chosen frame."""
    covered = np.zeros(fv.num_points, dtype=bool)
    pos = {fid: i for i, fid in enumerate(fv.frame_ids)}
    for fid in chosen:
        covered[fv.seen[pos[fid]]] = True
    return float(covered.mean()) if fv.num_points else 0.0


def select_frames(fv: FrameVisibility, target_coverage: float | None = None, max_frames: int | None = None,
                  diversity_weight: float = 0.25, angle_deg: float = 40.0, min_gain: float = 0.002) -> list[int]:
    """Frame ids in the order chosen (greedy maximum new coverage + viewpoint variety)."""
    covered = np.zeros(fv.num_points, dtype=bool)
    varied = np.zeros(fv.num_points, dtype=bool)  # seen from two sufficiently different directions
    first_dir = np.zeros((fv.num_points, 3))
    cos_max = np.cos(np.deg2rad(angle_deg))
    chosen: list[int] = []
    available = set(range(len(fv.frame_ids)))
    while available and (max_frames is None or len(chosen) < max_frames):
        if target_coverage is not None and covered.mean() >= target_coverage:
            break
        best, best_gain = -1, -1.0
        for i in available:
            idx, d = fv.seen[i], fv.directions[i]
            new = ~covered[idx]
            diverse = covered[idx] & ~varied[idx] & (np.einsum("ij,ij->i", first_dir[idx], d) < cos_max)
            gain = new.sum() + diversity_weight * diverse.sum()
            if gain > best_gain:
                best, best_gain = i, gain
        if best_gain < min_gain * fv.num_points:
            break
        idx, d = fv.seen[best], fv.directions[best]
        new = ~covered[idx]
        first_dir[idx[new]] = d[new]
        varied[idx[~new & (np.einsum("ij,ij->i", first_dir[idx], d) < cos_max)]] = True
        covered[idx] = True
        chosen.append(fv.frame_ids[best])
        available.remove(best)
    return chosen
