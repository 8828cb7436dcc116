"""The live map's features as a table of rows that voxels point at, one row per student voxel.

Why a table: a student coarser than the map (the demo's 10 cm voxels on a 2-5 cm map) gives the
25-125 map voxels of one of its voxels the same feature, so storing it once and a 4-byte row index
per voxel costs less than any per-voxel code, and leaves room for exact rows: float16 coordinates
in the code axes rank a query's best answers as the uncompressed features do, where int8 codes
swapped near-ties (top-1,000 overlap 91-98 % with demo students, ``benchmarks/bench_map.py``).
A student as fine as the map gives every voxel its own row: there the rows are int8 codes
(``LiveConfig.feature_rows``), so the budget still holds.

An update writes fresh rows for the student voxels it ran on and points the voxels at them; rows
no voxel points at any more (rewritten or evicted voxels) are dropped by ``compact`` when they
are a quarter of the live ones. Scoring a text costs one pass over the rows and one gather per voxel.
"""

from __future__ import annotations

import numpy as np

GROWTH = 1.25  # storage grows by a quarter when full and is kept (as the voxel map's): a robot going from
#                room to room re-fills it, and giving it back each time made the node's memory creep
#                (5-minute replay: 1.10 second half / first, against 1.01 without)
GARBAGE = 1.25  # compacted when its rows are this many times those in use at the last compaction ...
COMPACT_MIN = 4096  # ... plus this many (a small table is not worth the pass)


class FeatureTable:
    """``semantic`` (and ``instance``: the instance head's, width 0 without one) rows of one dtype:
    float16 coordinates or int8 codes (``feature_codes.FeatureCodec``)."""

    def __init__(self, width: int, instance_width: int, dtype: type, capacity: int = 1024):
        self.dtype = np.dtype(dtype)
        self._semantic = np.zeros((capacity, width), self.dtype)
        self._instance = np.zeros((capacity, instance_width), self.dtype)
        self.n = 0
        self.live = 0  # rows in use after the last compaction

    @property
    def semantic(self) -> np.ndarray:
        return self._semantic[: self.n]

    @property
    def instance(self) -> np.ndarray:
        return self._instance[: self.n]

    @property
    def widths(self) -> tuple[int, int]:
        return self._semantic.shape[1], self._instance.shape[1]

    def fits(self, width: int, instance_width: int, dtype: type) -> bool:
        return self.widths == (width, instance_width) and self.dtype == np.dtype(dtype)

    def append(self, semantic: np.ndarray, instance: np.ndarray | None) -> np.ndarray:
        """Add rows; their row numbers."""
        k, n = len(semantic), self.n
        if n + k > len(self._semantic):
            cap = max(int(len(self._semantic) * GROWTH), n + k)
            for name in ("_semantic", "_instance"):
                old = getattr(self, name)
                grown = np.zeros((cap, old.shape[1]), self.dtype)
                grown[:n] = old[:n]
                setattr(self, name, grown)
        self._semantic[n:n + k] = semantic
        if instance is not None and self._instance.shape[1]:
            self._instance[n:n + k] = instance
        self.n = n + k
        return np.arange(n, n + k, dtype=np.int32)

    def wants_compaction(self) -> bool:
        """Whether the rows nobody points at may be a quarter of the live ones (a pass over the
        voxels' rows: a few ms at 1M voxels, against an update's hundreds)."""
        return self.n > GARBAGE * self.live + COMPACT_MIN

    def _used(self, voxel_rows: np.ndarray) -> np.ndarray:
        """(n,) whether some voxel of ``voxel_rows`` (-1: none) points at each row."""
        used = np.zeros(self.n + 1, bool)  # the last slot takes the -1s
        used[voxel_rows] = True
        return used[: self.n]

    def in_use(self, voxel_rows: np.ndarray) -> int:
        """How many rows ``voxel_rows`` point at (one pass over them)."""
        return int(np.count_nonzero(self._used(voxel_rows)))

    def _renumbered(self, voxel_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the rows ``voxel_rows`` point at, ascending; each voxel's place among them, -1: none)."""
        keep = np.flatnonzero(self._used(voxel_rows))
        new = np.full(self.n + 1, -1, np.int32)
        new[keep] = np.arange(len(keep), dtype=np.int32)
        return keep, new[voxel_rows]

    def compact(self, voxel_rows: np.ndarray) -> None:
        """Keep the rows ``voxel_rows`` (each voxel's row, -1: none) point at, in their order, and
        re-point ``voxel_rows`` (written in place) at their new places."""
        keep, voxel_rows[:] = self._renumbered(voxel_rows)
        self._semantic[: len(keep)] = self._semantic[keep]
        self._instance[: len(keep)] = self._instance[keep]
        self.n = self.live = len(keep)

    def subset(self, voxel_rows: np.ndarray) -> tuple[FeatureTable, np.ndarray]:
        """A compact copy of the rows ``voxel_rows`` point at, and the voxels' rows in it (a saved
        map, a regrouping's snapshot)."""
        keep, rows = self._renumbered(voxel_rows)
        return FeatureTable.of(self._semantic[keep], self._instance[keep]), rows

    @classmethod
    def of(cls, semantic: np.ndarray, instance: np.ndarray) -> FeatureTable:
        """A table holding these rows (a saved map's)."""
        table = cls(semantic.shape[1], instance.shape[1], semantic.dtype, capacity=0)
        table._semantic, table._instance = np.ascontiguousarray(semantic), np.ascontiguousarray(instance)
        table.n = table.live = len(semantic)
        return table

    def nbytes(self) -> int:
        """Bytes the table holds (its capacity, garbage rows included)."""
        return self._semantic.nbytes + self._instance.nbytes
