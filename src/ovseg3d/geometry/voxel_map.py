"""A world-frame voxel map that accumulates RGB-D and LiDAR points for the robot.

One entry per occupied voxel (2 cm by default) holds the running mean of its points' positions
and colours (float32 means: 8 um at 100 m, where float32 sums would drift), how many points it
has seen, when it was last seen, and (once inference ran) the row of its feature in the live
map's feature table (``segment.feature_table``; -1: none yet), a label and a score. Voxels whose
input to inference changed are marked dirty so inference can update only what changed: new
voxels, and revisited ones whose mean position or colour moved (with ``input_cell``: only when
the mean position moved into another cell of that grid, which is all a geometry-only student
reads).

Bounds, and what is evicted: with ``extent`` set, voxels farther than ``extent`` metres (in x, y)
from the robot are dropped as soon as they are 1 % of the map (checked on every insert: a robot
moving a few centimetres a frame leaves a few behind each time); above ``max_voxels``, the voxels
seen longest ago are dropped first (ties: farthest from the robot first), down to 95 % of it at once.
"""

from __future__ import annotations

import numba
import numpy as np

from ovseg3d.errors import UserError
from ovseg3d.geometry.rows import take_rows
from ovseg3d.geometry.voxel_reduce import VoxelSums, home_slot, reduce_depth, reduce_points

GROWTH = 1.25  # storage grows by a quarter when full: at most 25 % of it unused
LOW_WATER = 0.95  # a map over max_voxels is cut to this share of it (the oldest voxels go first)
# voxels beyond the extent are dropped once they are this share of the map: a drop passes over every
# field's rows, and dropping the few that a moving robot leaves behind on every insert cost most of a merge
EXTENT_SLACK = 0.01


_FIELDS = ("keys", "xyz", "rgb", "count", "last_seen", "dirty", "feature_row", "labels", "scores", "instances")


class VoxelMap:
    """Voxel storage (grown by a quarter; rows in insertion order until an eviction moves the last
    ones into the holes) plus a hash index of the keys (``_KeyIndex``), so an insert costs
    O(its own points): before, a sorted key index was searched (20 cache misses a key at 1M
    voxels) and copied whole for every frame that brought new voxels (16 MB at 1M, 64 at 4M)."""

    def __init__(self, voxel_size: float = 0.02, max_voxels: int = 2_000_000, extent: float | None = None,
                 input_cell: float | None = None):
        """``input_cell``: see the module's docstring (a camera looking at what is already mapped
        then costs no inference)."""
        if voxel_size <= 0 or max_voxels < 1:
            raise UserError("voxel_size must be positive and max_voxels at least 1")
        if input_cell is not None and not input_cell > 0:
            raise UserError(f"input_cell must be positive, got {input_cell}")
        self.voxel_size, self.max_voxels, self.extent, self.input_cell = voxel_size, max_voxels, extent, input_cell
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._store = self._empty(1024)
        self._index = _KeyIndex()
        self.evicted = 0

    def _empty(self, cap: int) -> dict[str, np.ndarray]:
        return {"keys": np.zeros(cap, np.int64), "xyz": np.zeros((cap, 3), np.float32),
                "rgb": np.zeros((cap, 3), np.float32), "count": np.zeros(cap, np.int32),
                "last_seen": np.zeros(cap), "dirty": np.zeros(cap, bool),
                "feature_row": np.full(cap, -1, np.int32),
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
        """Positions of the voxels at ``index`` (integer or boolean) only: a copy of those rows, not
        of the whole map (``take_rows``: these are taken under the live map's lock)."""
        return take_rows(self.xyz, index)

    @property
    def colors(self) -> np.ndarray:
        return _colors(self.rgb)

    def colors_at(self, index: np.ndarray) -> np.ndarray:
        """uint8 colours of the voxels at ``index`` only (as ``points_at``)."""
        return _colors(take_rows(self.rgb, index))

    def _take(self, keep: np.ndarray) -> None:
        """Keep the voxels where ``keep`` is set (``_drop`` the others)."""
        self._drop(np.flatnonzero(~keep[: self._n]))

    def _drop(self, dropped: np.ndarray) -> None:
        """Drop the voxels at the ascending rows ``dropped``: the kept rows from the end of the
        storage move into the holes the dropped ones leave (rows moved: as many as were dropped,
        not the whole map), and the key index forgets the dropped keys and re-points the moved
        ones (work in proportion to what was dropped, not to the map)."""
        n = self._n - len(dropped)
        split = int(np.searchsorted(dropped, n))
        holes = dropped[:split]  # the dropped rows below the new size
        tail = np.ones(self._n - n, bool)  # rows [n, old size): the kept ones move into the holes
        tail[dropped[split:] - n] = False
        movers = n + np.flatnonzero(tail)  # as many as there are holes
        self._index.forget(self._store["keys"], dropped, movers, holes)
        for name in _FIELDS:
            field = self._store[name]
            field[holes] = field[movers]
        self._n = n
        if n < _FILL / 2 * len(self._index.slots) and len(self._index.slots) > 1024:  # a map cut to a fraction
            self._index.rebuild(self._store["keys"], n)

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
            st, index = self._store, self._index
            found = _merge(index.slots, index.shift, st["keys"], st["xyz"], st["rgb"], st["count"],
                           st["last_seen"], st["dirty"], sums.keys, sums.xyz, rgb, sums.count, float(stamp),
                           -1.0 if self.input_cell is None else float(self.input_cell))
            new = np.flatnonzero(~found)
            n_new = len(new)
            if n_new:
                cnt = sums.count[new]
                self._append(sums.keys[new], sums.xyz[new] / cnt[:, None], rgb[new] / cnt[:, None], cnt, stamp)
        self._bound(robot)
        return n_new

    def _append(self, keys, xyz, col, cnt, stamp) -> None:
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
        st["feature_row"][n:n + k] = -1
        st["labels"][n:n + k] = -1
        st["scores"][n:n + k] = 0
        st["instances"][n:n + k] = -1
        self._index.add(st["keys"], n, n + k)
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
            reach2 = np.float32(self.extent) ** 2
            # counted in one compiled pass (this runs on every insert); only when that many are to go, a
            # second pass lists their rows (no distance array or mask of the whole map)
            xyz, rx, ry = self._store["xyz"], np.float32(robot[0]), np.float32(robot[1])
            beyond = _beyond(xyz, self._n, rx, ry, reach2, np.empty(0, np.int64))
            if beyond >= max(1, EXTENT_SLACK * len(self)):
                rows = np.empty(beyond, np.int64)
                _beyond(xyz, self._n, rx, ry, reach2, rows)
                self._drop(rows)
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
        other = VoxelMap(self.voxel_size, self.max_voxels, self.extent, self.input_cell)
        other._n, other.evicted = self._n, self.evicted
        other._store = {name: array[: self._n].copy() for name, array in self._store.items()}
        other._index = self._index.copy()
        return other

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the contents with saved per-voxel arrays (one row per voxel, every field but
        ``dirty``): a map read back from disk, all clean."""
        n = len(arrays["keys"])
        store, index = self._empty(max(n, 1024)), _KeyIndex()
        for name in _FIELDS:
            if name != "dirty":
                store[name][:n] = arrays[name]
        if index.rebuild(store["keys"], n):  # checked while indexing (numpy's unique hashed: 1 s at 1M)
            raise UserError("the saved map holds the same voxel twice")
        self._store, self._index, self._n = store, index, n

    def index_of(self, keys: np.ndarray) -> np.ndarray:
        """Current storage index of each voxel key, -1 where the voxel is gone (evicted or reset)."""
        keys = np.ascontiguousarray(keys, np.int64).reshape(-1)
        return _find_all(self._index.slots, self._index.shift, self._store["keys"], keys)

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

    def set_predictions(self, index: np.ndarray, rows: np.ndarray | None, labels: np.ndarray,
                        scores: np.ndarray) -> None:
        """Labels and scores of the voxels at ``index`` and, unless None, their feature rows."""
        st = self._store
        if rows is not None:
            st["feature_row"][index] = rows
        st["labels"][index] = labels
        st["scores"][index] = scores

    def nbytes_per_voxel(self) -> dict[str, float]:
        """Bytes each voxel costs in storage (all fields and the key index; the index alone; the
        feature row index alone: the rows are the live map's), the allocated share (capacity over
        occupied voxels: up to 1.25 after growing) and the bytes held per voxel with it."""
        per = {name: self._store[name].itemsize * int(np.prod(self._store[name].shape[1:])) for name in _FIELDS}
        index = self._index.slots.nbytes / max(self._n, 1)  # 4-byte slots, 2.5-5 a voxel
        allocated = len(self._store["keys"]) / max(self._n, 1)
        return {"map": float(sum(per.values()) + index), "index": float(index),
                "features": float(per["feature_row"]), "allocated": allocated,
                "held": float(sum(per.values()) * allocated + index)}


def _colors(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def key_rows(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Row of each of ``keys`` in ``table`` (distinct int64 keys), -1 where it is absent: hashed, one
    pass over ``keys`` (``np.isin`` sorts both: 5.6 against 0.5 ms for 190k keys in 900)."""
    table = np.ascontiguousarray(table, np.int64)
    index = _KeyIndex()
    index.rebuild(table, len(table))
    return _find_all(index.slots, index.shift, table, np.ascontiguousarray(keys, np.int64).reshape(-1))


_EMPTY, _GONE = -1, -2  # index slots: never used / a dropped voxel's (probe chains run on past it)
_MAX_LOAD = 0.5  # used slots (with the dropped ones) at most half the table: short probe chains
_FILL = 0.4  # a rebuilt table is at most this full (0.2-0.4): a map grows by a quarter before the next
# rebuild, and the index costs 10-20 bytes a voxel (a table left at under _FILL / 2 by a cut is rebuilt)


class _KeyIndex:
    """Open-addressing hash table from voxel key to storage row: int32 slots holding a row, the
    key compared in the storage itself (4 bytes a slot, 2.5-5 slots a voxel: about what a sorted
    index of keys and rows cost). Linear probing from the Fibonacci hash of the key; dropped
    voxels leave tombstones, swept out whenever the table is rebuilt for size."""

    def __init__(self) -> None:
        self.slots = np.full(1024, _EMPTY, np.int32)
        self.shift = np.uint64(64 - 10)
        self.used = 0  # slots holding a row or a tombstone

    def copy(self) -> _KeyIndex:
        other = _KeyIndex()
        other.slots, other.shift, other.used = self.slots.copy(), self.shift, self.used
        return other

    def add(self, keys: np.ndarray, start: int, stop: int) -> None:
        """Index storage rows [start, stop), whose keys are not in it yet (rows [0, start) are).
        Rebuilt from all rows, tombstones swept out, when it would be more than half full."""
        if self.used + (stop - start) > _MAX_LOAD * len(self.slots):
            self.rebuild(keys, stop)
        else:
            _insert_rows(self.slots, self.shift, keys, start, stop)
            self.used += stop - start

    def rebuild(self, keys: np.ndarray, n: int) -> bool:
        """A table sized for rows [0, n) alone, holding them (tombstones swept out); whether some
        key is in two of those rows."""
        bits = max(10, int(np.ceil(np.log2(max(n, 1) / _FILL))))
        self.slots = np.full(1 << bits, _EMPTY, np.int32)
        self.shift, self.used = np.uint64(64 - bits), n
        return _insert_rows(self.slots, self.shift, keys, 0, n)

    def forget(self, keys: np.ndarray, dropped: np.ndarray, movers: np.ndarray, holes: np.ndarray) -> None:
        """Before storage rows ``movers`` move into ``holes`` and ``dropped`` rows go."""
        _forget(self.slots, self.shift, keys, dropped.astype(np.int64), movers.astype(np.int64),
                holes.astype(np.int64))


@numba.njit(cache=True, inline="always")
def _slot_of(slots, shift, keys, key) -> np.int64:
    """The slot holding ``key``'s row, or -1."""
    mask = len(slots) - 1
    s = home_slot(key, shift)
    while True:
        r = slots[s]
        if r == _EMPTY:
            return np.int64(-1)
        if r >= 0 and keys[r] == key:
            return s
        s = (s + 1) & mask


@numba.njit(cache=True, nogil=True)
def _insert_rows(slots, shift, keys, start, stop):
    """Index rows [start, stop), each in the first free slot (empty or a tombstone) of its probe
    chain; whether a key met itself on the way (a duplicate: only seen before a tombstone)."""
    mask = len(slots) - 1
    twice = False
    for r in range(start, stop):
        key = keys[r]
        s = home_slot(key, shift)
        while slots[s] >= 0:
            if keys[slots[s]] == key:
                twice = True
            s = (s + 1) & mask
        slots[s] = r
    return twice


@numba.njit(cache=True, nogil=True)
def _forget(slots, shift, keys, dropped, movers, holes):
    for r in dropped:
        s = _slot_of(slots, shift, keys, keys[r])
        if s >= 0:
            slots[s] = _GONE
    for q in range(len(movers)):
        s = _slot_of(slots, shift, keys, keys[movers[q]])
        if s >= 0:
            slots[s] = holes[q]


@numba.njit(cache=True, nogil=True)
def _find_all(slots, shift, keys, queries):
    out = np.empty(len(queries), np.int64)
    for q in range(len(queries)):
        s = _slot_of(slots, shift, keys, queries[q])
        out[q] = -1 if s < 0 else slots[s]
    return out


@numba.njit(cache=True, nogil=True)
def _beyond(xyz, n, rx, ry, reach2, rows) -> int:
    """How many of the first ``n`` voxels lie farther than sqrt(reach2) from (rx, ry) in x-y, in
    float32 as ``VoxelMap._far2`` computes it; their rows, ascending, in ``rows`` if it has room."""
    beyond = 0
    keep_rows = len(rows) > 0
    for i in range(n):
        dx, dy = xyz[i, 0] - rx, xyz[i, 1] - ry
        if dx * dx + dy * dy > reach2:
            if keep_rows:
                rows[beyond] = i
            beyond += 1
    return beyond


@numba.njit(cache=True, nogil=True)  # no GIL: the student and the node's callbacks run meanwhile
def _merge(slots, shift, stored_keys, xyz, rgb, count, last_seen, dirty, keys, sum_xyz, sum_rgb, cnt, stamp,
           input_cell):
    """Fold per-voxel sums into the voxels the map already has (running means in float64, stored
    float32); returns whether each key was found. A revisited voxel is dirty when its mean moved
    (``input_cell`` > 0: into another cell of that grid). Two passes: every key's row first (a
    short loop, so the CPU keeps many of its cache misses in flight), then the running means
    (0.55 against 1.0 ms for a 17k-voxel frame into a 500k-voxel map, when this was one loop)."""
    rows = _find_all(slots, shift, stored_keys, keys)
    found = rows >= 0
    for q in range(len(keys)):
        i = rows[q]
        if i < 0:
            continue
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
    return found


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
    m.index_of(m.keys)  # the update's look-ups
    m.extent = 1.0
    m.insert(np.full((3, 3), 5.0), robot=np.full(3, 5.0))  # an eviction: the index forgets and re-points
