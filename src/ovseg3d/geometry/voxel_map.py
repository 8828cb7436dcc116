"""A world-frame voxel map that accumulates RGB-D and LiDAR points for the robot.

One entry per occupied voxel (2 cm by default) holds the running mean of its points' positions
and colours, how many points it has seen, when it was last seen, and (once inference ran) a
feature, label and score. New or changed voxels are marked dirty so inference can update only
what changed.

Bounds, and what is evicted: with ``extent`` set, voxels farther than ``extent`` metres (in x, y)
from the robot are dropped on every insert; above ``max_voxels``, the voxels seen longest ago are
dropped first (ties: farthest from the robot first).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ovseg3d.errors import UserError

_BIAS = 1 << 20  # voxel indices in [-2^20, 2^20) per axis: +-21 km at 2 cm


def pack_keys(ijk: np.ndarray) -> np.ndarray:
    ijk = np.asarray(ijk, dtype=np.int64) + _BIAS
    if (ijk < 0).any() or (ijk >= 2 * _BIAS).any():
        raise UserError("points too far from the map origin for the voxel grid")
    return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]


class VoxelMap:
    def __init__(self, voxel_size: float = 0.02, max_voxels: int = 2_000_000, extent: float | None = None,
                 feature_dim: int = 0):
        if voxel_size <= 0 or max_voxels < 1:
            raise UserError("voxel_size must be positive and max_voxels at least 1")
        self.voxel_size, self.max_voxels, self.extent, self.feature_dim = voxel_size, max_voxels, extent, feature_dim
        self.reset()

    def reset(self) -> None:
        self.keys = np.zeros(0, np.int64)  # sorted
        self.xyz_sum = np.zeros((0, 3), np.float64)
        self.rgb_sum = np.zeros((0, 3), np.float64)
        self.count = np.zeros(0, np.int64)
        self.last_seen = np.zeros(0, np.float64)
        self.dirty = np.zeros(0, bool)
        self.features = np.zeros((0, self.feature_dim), np.float16)
        self.labels = np.full(0, -1, np.int32)
        self.scores = np.zeros(0, np.float32)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def points(self) -> np.ndarray:
        return (self.xyz_sum / self.count[:, None]).astype(np.float32)

    @property
    def colors(self) -> np.ndarray:
        return np.clip(self.rgb_sum / self.count[:, None], 0, 255).astype(np.uint8)

    def _take(self, keep: np.ndarray) -> None:
        for name in ("keys", "xyz_sum", "rgb_sum", "count", "last_seen", "dirty", "features", "labels", "scores"):
            setattr(self, name, getattr(self, name)[keep])

    def insert(self, points: np.ndarray, colors: np.ndarray | None = None, stamp: float = 0.0,
               robot: np.ndarray | None = None) -> int:
        """Add world-frame points (non-finite rows are dropped); returns the number of new voxels."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        ok = np.isfinite(points).all(1)
        points = points[ok]
        rgb = np.full((len(points), 3), 128.0) if colors is None else np.asarray(colors, np.float64).reshape(-1, 3)[ok]
        if len(points):
            keys = pack_keys(np.floor(points / self.voxel_size))
            ukeys, inv = np.unique(keys, return_inverse=True)
            xyz = np.zeros((len(ukeys), 3))
            col = np.zeros((len(ukeys), 3))
            np.add.at(xyz, inv, points)
            np.add.at(col, inv, rgb)
            cnt = np.bincount(inv, minlength=len(ukeys))
            pos = np.searchsorted(self.keys, ukeys)
            found = (pos < len(self.keys)) & (self.keys[np.minimum(pos, len(self.keys) - 1)] == ukeys) \
                if len(self.keys) else np.zeros(len(ukeys), bool)
            old = pos[found]
            self.xyz_sum[old] += xyz[found]
            self.rgb_sum[old] += col[found]
            self.count[old] += cnt[found]
            self.last_seen[old] = stamp
            self.dirty[old] = True
            new = ~found
            n_new = int(new.sum())
            if n_new:
                self._append(ukeys[new], xyz[new], col[new], cnt[new], stamp)
        else:
            n_new = 0
        self._bound(robot)
        return n_new

    def _append(self, keys, xyz, col, cnt, stamp) -> None:
        n = len(keys)
        allk = np.concatenate([self.keys, keys])
        order = np.argsort(allk, kind="stable")
        self.keys = allk[order]
        self.xyz_sum = np.concatenate([self.xyz_sum, xyz])[order]
        self.rgb_sum = np.concatenate([self.rgb_sum, col])[order]
        self.count = np.concatenate([self.count, cnt])[order]
        self.last_seen = np.concatenate([self.last_seen, np.full(n, stamp)])[order]
        self.dirty = np.concatenate([self.dirty, np.ones(n, bool)])[order]
        self.features = np.concatenate([self.features, np.zeros((n, self.feature_dim), np.float16)])[order]
        self.labels = np.concatenate([self.labels, np.full(n, -1, np.int32)])[order]
        self.scores = np.concatenate([self.scores, np.zeros(n, np.float32)])[order]

    def _bound(self, robot: np.ndarray | None) -> None:
        before = len(self)
        if self.extent is not None and robot is not None and len(self):
            d = np.linalg.norm(self.points[:, :2] - np.asarray(robot, float)[:2], axis=1)
            if (d > self.extent).any():
                self._take(d <= self.extent)
        if len(self) > self.max_voxels:
            far = (np.linalg.norm(self.points[:, :2] - np.asarray(robot, float)[:2], axis=1) if robot is not None
                   else np.zeros(len(self)))
            order = np.lexsort((-far, -self.last_seen))  # newest first, then nearest
            keep = np.zeros(len(self), bool)
            keep[order[: self.max_voxels]] = True
            self._take(keep)
        self.evicted += before - len(self)

    def set_predictions(self, index: np.ndarray, features: np.ndarray | None, labels: np.ndarray,
                        scores: np.ndarray) -> None:
        if features is not None and self.feature_dim:
            self.features[index] = features
        self.labels[index] = labels
        self.scores[index] = scores
        self.dirty[index] = False

    def save(self, path: Path, label_colors: np.ndarray | None = None) -> tuple[Path, Path]:
        """``<path>.ply`` (points, colours, label, score) and ``<path>.npz`` (all arrays), atomically."""
        from ovseg3d.data.ply import write_ply

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ply, npz = path.with_suffix(".ply"), path.with_suffix(".npz")
        write_ply(ply, self.points, self.colors, label=self.labels.astype(np.int32), score=self.scores)
        tmp = npz.with_name(f".{npz.name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, points=self.points, colors=self.colors, count=self.count, labels=self.labels,
                            scores=self.scores, features=self.features, voxel_size=self.voxel_size)
        tmp.replace(npz)
        return ply, npz
