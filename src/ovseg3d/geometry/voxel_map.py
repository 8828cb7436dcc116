"""A world-frame voxel map that accumulates RGB-D and LiDAR points for the robot.

One entry per occupied voxel (2 cm by default) holds the running mean of its points' positions
and colours (float32 means: 8 um at 100 m, where float32 sums would drift), how many points it
has seen, when it was last seen, and (once inference ran) the compact codes of its feature
(``segment.feature_codes``), a label and a score. Voxels whose input to inference changed are
marked dirty so inference can update only what changed: new voxels, and revisited ones whose
mean position or colour moved (with ``input_cell``: only when the mean position moved into
another cell of that grid, which is all a geometry-only student reads).

Bounds, and what is evicted: with ``extent`` set, voxels farther than ``extent`` metres (in x, y)
from the robot are dropped on every insert; above ``max_voxels``, the voxels seen longest ago are
dropped first (ties: farthest from the robot first), down to 95 % of it at once.
"""

from __future__ import annotations

import numba
import numpy as np

from ovseg3d.errors import UserError
from ovseg3d.geometry.voxel_reduce import VoxelSums, reduce_depth, reduce_points

GROWTH = 1.25  # storage grows by a quarter when full: at most 25 % of it unused
LOW_WATER = 0.95  # a map over max_voxels is cut to this share of it (the oldest voxels go first)


_FIELDS = ("keys", "xyz", "rgb", "count", "last_seen", "dirty", "codes", "instance_codes", "labels",
           "scores", "instances")


class VoxelMap:
    """Voxel storage in insertion order (grown by a quarter) plus a sorted key index for lookups,
    so an insert costs O(new points + map size) in cheap memory moves, never a full sort."""

    def __init__(self, voxel_size: float = 0.02, max_voxels: int = 2_000_000, extent: float | None = None,
                 code_dim: int = 0, instance_code_dim: int = 0, input_cell: float | None = None):
        """``code_dim``: int8 feature codes per voxel; ``instance_code_dim`` > 0 also stores codes
        of an instance-head feature (FOLK students). ``input_cell``: see the module's docstring
        (a camera looking at what is already mapped then costs no inference)."""
        if voxel_size <= 0 or max_voxels < 1:
            raise UserError("voxel_size must be positive and max_voxels at least 1")
        if input_cell is not None and not input_cell > 0:
            raise UserError(f"input_cell must be positive, got {input_cell}")
        self.voxel_size, self.max_voxels, self.extent, self.code_dim = voxel_size, max_voxels, extent, code_dim
        self.instance_code_dim, self.input_cell = instance_code_dim, input_cell
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._store = self._empty(1024)
        self._sorted_keys = np.zeros(0, np.int64)
        self._sorted_idx = np.zeros(0, np.int64)
        self.evicted = 0

    def _empty(self, cap: int) -> dict[str, np.ndarray]:
        return {"keys": np.zeros(cap, np.int64), "xyz": np.zeros((cap, 3), np.float32),
                "rgb": np.zeros((cap, 3), np.float32), "count": np.zeros(cap, np.int32),
                "last_seen": np.zeros(cap), "dirty": np.zeros(cap, bool),
                "codes": np.zeros((cap, self.code_dim), np.int8),
                "instance_codes": np.zeros((cap, self.instance_code_dim), np.int8),
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
        return self.xyz.copy()

    def points_at(self, index: np.ndarray) -> np.ndarray:
        """Positions of the voxels at ``index`` only (a query's answer, not the whole map)."""
        return self._store["xyz"][index]  # fancy indexing: a copy

    @property
    def colors(self) -> np.ndarray:
        return np.clip(np.rint(self.rgb), 0, 255).astype(np.uint8)

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
        return self.insert_sums(reduce_points(points, colors, self.voxel_size), stamp, robot)

    def insert_sums(self, sums: VoxelSums, stamp: float = 0.0, robot: np.ndarray | None = None) -> int:
        """Add a frame already reduced to this map's voxels (``voxel_reduce``: done before taking
        the map's lock); returns the number of new voxels."""
        if sums.voxel != self.voxel_size:  # the map was replaced while the frame was reduced
            raise UserError(f"a frame reduced to {sums.voxel} m voxels does not fit this {self.voxel_size} m map")
        n_new = 0
        if len(sums):
            # no colours: grey, as sums (three columns: the merge reads each)
            rgb = np.repeat(128.0 * sums.count[:, None], 3, axis=1) if sums.rgb is None else sums.rgb
            st = self._store
            pos, found = _merge(self._sorted_keys, self._sorted_idx, st["xyz"], st["rgb"], st["count"],
                                st["last_seen"], st["dirty"], sums.keys, sums.xyz, rgb, sums.count, float(stamp),
                                -1.0 if self.input_cell is None else float(self.input_cell))
            new = ~found
            n_new = int(new.sum())
            if n_new:
                new = np.flatnonzero(new)
                new = new[np.argsort(sums.keys[new])]  # np.insert takes equal positions in the order given
                cnt = sums.count[new]
                self._append(sums.keys[new], sums.xyz[new] / cnt[:, None], rgb[new] / cnt[:, None], cnt, stamp,
                             pos[new])
        self._bound(robot)
        return n_new

    def _append(self, keys, xyz, col, cnt, stamp, sorted_pos) -> None:
        n, k = self._n, len(keys)
        cap = len(self._store["keys"])
        if n + k > cap:
            grown = self._empty(max(int(cap * GROWTH), n + k))  # memory stays near the map's size
            for name in _FIELDS:
                grown[name][:n] = self._store[name][:n]
            self._store = grown
        st = self._store
        st["keys"][n:n + k] = keys
        st["xyz"][n:n + k] = xyz
        st["rgb"][n:n + k] = col
        st["count"][n:n + k] = cnt
        st["last_seen"][n:n + k] = stamp
        st["dirty"][n:n + k] = True
        st["codes"][n:n + k] = 0
        st["instance_codes"][n:n + k] = 0
        st["labels"][n:n + k] = -1
        st["scores"][n:n + k] = 0
        st["instances"][n:n + k] = -1
        self._sorted_keys = np.insert(self._sorted_keys, sorted_pos, keys)
        self._sorted_idx = np.insert(self._sorted_idx, sorted_pos, np.arange(n, n + k))
        self._n = n + k

    def _far2(self, robot: np.ndarray) -> np.ndarray:
        """(N,) squared x-y distance of every voxel from the robot, in float32 on the stored
        positions (no copy of the map: this runs on every insert)."""
        xy = self._store["xyz"][: self._n]
        dx = xy[:, 0] - np.float32(robot[0])
        dy = xy[:, 1] - np.float32(robot[1])
        dx *= dx
        dy *= dy
        dx += dy
        return dx

    def _bound(self, robot: np.ndarray | None) -> None:
        before = len(self)
        robot = None if robot is None else np.asarray(robot, float)
        if self.extent is not None and robot is not None and len(self):
            inside = self._far2(robot) <= np.float32(self.extent) ** 2
            if not inside.all():
                self._take(inside)
        if len(self) > self.max_voxels:
            # down to LOW_WATER of the bound at once: one sort of the map per few percent of it
            # inserted, not one per insert once the map is full
            far = self._far2(robot) if robot is not None else np.zeros(len(self), np.float32)
            order = np.lexsort((far, -self.last_seen))  # newest first, then nearest
            keep = np.zeros(len(self), bool)
            keep[order[: max(1, int(self.max_voxels * LOW_WATER))]] = True
            self._take(keep)
        self.evicted += before - len(self)

    def copy(self) -> VoxelMap:
        """A copy of the occupied part, to write out while this map goes on changing."""
        other = VoxelMap(self.voxel_size, self.max_voxels, self.extent, self.code_dim, self.instance_code_dim,
                         self.input_cell)
        other._n, other.evicted = self._n, self.evicted
        other._store = {name: array[: self._n].copy() for name, array in self._store.items()}
        other._sorted_keys, other._sorted_idx = self._sorted_keys.copy(), self._sorted_idx.copy()
        return other

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the contents with saved per-voxel arrays (one row per voxel, every field but
        ``dirty``): a map read back from disk, all clean."""
        n = len(arrays["keys"])
        order = np.argsort(arrays["keys"], kind="stable")
        if (np.diff(arrays["keys"][order]) == 0).any():
            raise UserError("the saved map holds the same voxel twice")
        self._store = self._empty(max(n, 1024))
        for name in _FIELDS:
            if name != "dirty":
                self._store[name][:n] = arrays[name]
        self._n = n
        self._sorted_idx = order
        self._sorted_keys = self.keys[order]

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

    def mark_dirty(self, keys: np.ndarray) -> None:
        """Mark these voxels (those still in the map) changed again: an update that failed after
        ``take_dirty`` gives its changes back, so the next one labels them."""
        idx = self.index_of(keys)
        self._store["dirty"][idx[idx >= 0]] = True

    def set_predictions(self, index: np.ndarray, codes: np.ndarray | None, labels: np.ndarray,
                        scores: np.ndarray, instance_codes: np.ndarray | None = None) -> None:
        st = self._store
        if codes is not None and self.code_dim:
            st["codes"][index] = codes
        if instance_codes is not None and self.instance_code_dim:
            st["instance_codes"][index] = instance_codes
        st["labels"][index] = labels
        st["scores"][index] = scores

    def nbytes_per_voxel(self) -> dict[str, float]:
        """Bytes each voxel costs in storage (all fields and the key index; the feature codes alone)
        and the allocated share (capacity over occupied voxels: up to 1.25 after growing)."""
        per = {name: self._store[name].itemsize * int(np.prod(self._store[name].shape[1:])) for name in _FIELDS}
        index = 2 * 8  # the sorted key index: a key and a position per voxel
        return {"map": float(sum(per.values()) + index), "features": float(per["codes"] + per["instance_codes"]),
                "allocated": len(self._store["keys"]) / max(self._n, 1)}


@numba.njit(cache=True, nogil=True)  # no GIL: the student and the node's callbacks run meanwhile
def _merge(sorted_keys, sorted_idx, xyz, rgb, count, last_seen, dirty, keys, sum_xyz, sum_rgb, cnt, stamp,
           input_cell):
    """Fold per-voxel sums into the voxels the map already has (running means in float64, stored
    float32); returns each key's position in the sorted index and whether it was found there. A
    revisited voxel is dirty when its mean moved (``input_cell`` > 0: into another cell of that grid)."""
    pos = np.searchsorted(sorted_keys, keys)
    found = np.zeros(len(keys), np.bool_)
    n = len(sorted_keys)
    for q in range(len(keys)):
        p = pos[q]
        if p >= n or sorted_keys[p] != keys[q]:
            continue
        found[q] = True
        i = sorted_idx[p]
        before = np.float64(count[i])
        total = before + cnt[q]
        moved = input_cell <= 0.0
        for c in range(3):
            old = np.float64(xyz[i, c])
            mean = np.float32((old * before + sum_xyz[q, c]) / total)
            if not moved and np.floor(old / input_cell) != np.floor(np.float64(mean) / input_cell):
                moved = True
            xyz[i, c] = mean
            rgb[i, c] = np.float32((np.float64(rgb[i, c]) * before + sum_rgb[q, c]) / total)
        count[i] += cnt[q]
        last_seen[i] = stamp
        if moved:
            dirty[i] = True
    return pos, found


def compile_ingest() -> None:
    """Compile (or load from numba's cache) every ingest kernel for the array types the live map
    feeds them, on a toy map: on a fresh install that takes seconds, which must not fall on the
    first sensor frames (a node would drop them at a full queue)."""
    m = VoxelMap(0.1, input_cell=0.2)
    depth, rgb, K = np.ones((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8), np.eye(3)
    rgb.flags.writeable = False  # as decoded images and message buffers come: reduce_depth copies them
    m.insert_sums(reduce_depth(depth, K, np.eye(4), 0.1, 1, rgb=rgb))  # colour sums: a column view
    m.insert_sums(reduce_depth(depth, K, np.eye(4), 0.1, 2))
    m.insert_sums(reduce_points(np.ones((3, 3)), None, 0.1, pose=np.eye(4)))  # LiDAR: no colours
    m.insert(np.ones((3, 3)), np.zeros((3, 3), np.uint8))
