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

import numpy as np

from ovseg3d.errors import UserError

_BIAS = 1 << 20  # voxel indices in [-2^20, 2^20) per axis: +-21 km at 2 cm


def pack_keys(ijk: np.ndarray) -> np.ndarray:
    ijk = np.asarray(ijk, dtype=np.int64) + _BIAS
    if (ijk < 0).any() or (ijk >= 2 * _BIAS).any():
        raise UserError("points too far from the map origin for the voxel grid")
    return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]


_FIELDS = ("keys", "xyz_sum", "rgb_sum", "count", "last_seen", "dirty", "features", "instance_features", "labels",
           "scores", "instances")


class VoxelMap:
    """Voxel storage in insertion order (grown by doubling) plus a sorted key index for lookups,
    so an insert costs O(new points + map size) in cheap memory moves, never a full sort."""

    def __init__(self, voxel_size: float = 0.02, max_voxels: int = 2_000_000, extent: float | None = None,
                 feature_dim: int = 0, instance_dim: int = 0):
        """``instance_dim`` > 0 also stores an instance-head feature per voxel (FOLK students)."""
        if voxel_size <= 0 or max_voxels < 1:
            raise UserError("voxel_size must be positive and max_voxels at least 1")
        self.voxel_size, self.max_voxels, self.extent, self.feature_dim = voxel_size, max_voxels, extent, feature_dim
        self.instance_dim = instance_dim
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._store = self._empty(1024)
        self._sorted_keys = np.zeros(0, np.int64)
        self._sorted_idx = np.zeros(0, np.int64)
        self.evicted = 0

    def _empty(self, cap: int) -> dict[str, np.ndarray]:
        return {"keys": np.zeros(cap, np.int64), "xyz_sum": np.zeros((cap, 3)), "rgb_sum": np.zeros((cap, 3)),
                "count": np.zeros(cap, np.int64), "last_seen": np.zeros(cap), "dirty": np.zeros(cap, bool),
                "features": np.zeros((cap, self.feature_dim), np.float16),
                "instance_features": np.zeros((cap, self.instance_dim), np.float16),
                "labels": np.full(cap, -1, np.int32),
                "scores": np.zeros(cap, np.float32), "instances": np.full(cap, -1, np.int32)}

    def __getattr__(self, name: str) -> np.ndarray:
        if name in _FIELDS:
            return self.__dict__["_store"][name][: self.__dict__["_n"]]
        raise AttributeError(name)

    def __len__(self) -> int:
        return self._n

    @property
    def points(self) -> np.ndarray:
        return (self.xyz_sum / self.count[:, None]).astype(np.float32)

    @property
    def colors(self) -> np.ndarray:
        return np.clip(self.rgb_sum / self.count[:, None], 0, 255).astype(np.uint8)

    def _take(self, keep: np.ndarray) -> None:
        n = int(keep.sum())
        for name in _FIELDS:
            self._store[name][:n] = self._store[name][: self._n][keep]
        self._n = n
        self._sorted_idx = np.argsort(self.keys, kind="stable")
        self._sorted_keys = self.keys[self._sorted_idx]

    def insert(self, points: np.ndarray, colors: np.ndarray | None = None, stamp: float = 0.0,
               robot: np.ndarray | None = None) -> int:
        """Add world-frame points (non-finite rows are dropped); returns the number of new voxels."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        ok = np.isfinite(points).all(1)
        points = points[ok]
        n_new = 0
        if len(points):
            rgb = (np.full((len(points), 3), 128.0) if colors is None
                   else np.asarray(colors, np.float64).reshape(-1, 3)[ok])
            keys = pack_keys(np.floor(points / self.voxel_size))
            ukeys, inv = np.unique(keys, return_inverse=True)
            m = len(ukeys)  # per-voxel sums; bincount is many times faster than np.add.at
            xyz = np.stack([np.bincount(inv, points[:, c], minlength=m) for c in range(3)], axis=1)
            col = np.stack([np.bincount(inv, rgb[:, c], minlength=m) for c in range(3)], axis=1)
            cnt = np.bincount(inv, minlength=m)
            pos = np.searchsorted(self._sorted_keys, ukeys)
            found = np.zeros(len(ukeys), bool)
            if self._n:
                found = self._sorted_keys[np.minimum(pos, self._n - 1)] == ukeys
            old = self._sorted_idx[pos[found]]
            st = self._store
            st["xyz_sum"][old] += xyz[found]
            st["rgb_sum"][old] += col[found]
            st["count"][old] += cnt[found]
            st["last_seen"][old] = stamp
            st["dirty"][old] = True
            new = ~found
            n_new = int(new.sum())
            if n_new:
                self._append(ukeys[new], xyz[new], col[new], cnt[new], stamp, pos[new])
        self._bound(robot)
        return n_new

    def _append(self, keys, xyz, col, cnt, stamp, sorted_pos) -> None:
        n, k = self._n, len(keys)
        cap = len(self._store["keys"])
        if n + k > cap:
            grown = self._empty(max(2 * cap, n + k))
            for name in _FIELDS:
                grown[name][:n] = self._store[name][:n]
            self._store = grown
        st = self._store
        st["keys"][n:n + k] = keys
        st["xyz_sum"][n:n + k] = xyz
        st["rgb_sum"][n:n + k] = col
        st["count"][n:n + k] = cnt
        st["last_seen"][n:n + k] = stamp
        st["dirty"][n:n + k] = True
        st["features"][n:n + k] = 0
        st["instance_features"][n:n + k] = 0
        st["labels"][n:n + k] = -1
        st["scores"][n:n + k] = 0
        st["instances"][n:n + k] = -1
        self._sorted_keys = np.insert(self._sorted_keys, sorted_pos, keys)
        self._sorted_idx = np.insert(self._sorted_idx, sorted_pos, np.arange(n, n + k))
        self._n = n + k

    def _bound(self, robot: np.ndarray | None) -> None:
        before = len(self)
        if self.extent is not None and robot is not None and len(self):
            d = np.linalg.norm(self.points[:, :2] - np.asarray(robot, float)[:2], axis=1)
            if (d > self.extent).any():
                self._take(d <= self.extent)
        if len(self) > self.max_voxels:
            far = (np.linalg.norm(self.points[:, :2] - np.asarray(robot, float)[:2], axis=1) if robot is not None
                   else np.zeros(len(self)))
            order = np.lexsort((far, -self.last_seen))  # newest first, then nearest
            keep = np.zeros(len(self), bool)
            keep[order[: self.max_voxels]] = True
            self._take(keep)
        self.evicted += before - len(self)

    def copy(self) -> VoxelMap:
        """A copy of the occupied part, to write out while this map goes on changing."""
        other = VoxelMap(self.voxel_size, self.max_voxels, self.extent, self.feature_dim, self.instance_dim)
        other._n, other.evicted = self._n, self.evicted
        other._store = {name: array[: self._n].copy() for name, array in self._store.items()}
        other._sorted_keys, other._sorted_idx = self._sorted_keys.copy(), self._sorted_idx.copy()
        return other

    def index_of(self, keys: np.ndarray) -> np.ndarray:
        """Current storage index of each voxel key, -1 where the voxel is gone (evicted or reset)."""
        keys = np.asarray(keys, np.int64)
        if not self._n:
            return np.full(len(keys), -1, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_keys, keys), self._n - 1)
        return np.where(self._sorted_keys[pos] == keys, self._sorted_idx[pos], -1)

    def take_dirty(self) -> np.ndarray:
        """Indices of the voxels changed since the last call, marking them clean: whatever is
        inserted while inference runs on a snapshot is dirty again for the next round."""
        idx = np.flatnonzero(self.dirty)
        self._store["dirty"][idx] = False
        return idx

    def set_predictions(self, index: np.ndarray, features: np.ndarray | None, labels: np.ndarray,
                        scores: np.ndarray, instance_features: np.ndarray | None = None) -> None:
        st = self._store
        if features is not None and self.feature_dim:
            st["features"][index] = features
        if instance_features is not None and self.instance_dim:
            st["instance_features"][index] = instance_features
        st["labels"][index] = labels
        st["scores"][index] = scores
