"""Voxel grids consistent with the student's: integer cell = floor(point / voxel_size)."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

from ovseg3d.geometry.rows import unique_rows

STUDENT_VOXEL_SIZE = 0.02  # metres; MinkUNet students of OpenScene and this project


@dataclass
class Voxelization:
    coords: np.ndarray  # (V, 3) int32 cell coordinates
    point_to_voxel: np.ndarray  # (N,) index of each point's voxel
    first_point: np.ndarray  # (V,) index of one representative point per voxel

    @property
    def num_voxels(self) -> int:
        return len(self.coords)


def voxel_cells(points: np.ndarray, voxel_size: float = STUDENT_VOXEL_SIZE) -> np.ndarray:
    return np.floor(np.asarray(points, dtype=np.float64) / voxel_size).astype(np.int32)


def voxelize(points: np.ndarray, voxel_size: float = STUDENT_VOXEL_SIZE) -> Voxelization:
    """Unique occupied cells, each point's cell, and a representative point per cell."""
    cells = voxel_cells(points, voxel_size)
    coords, first, inverse = unique_rows(cells, return_index=True, return_inverse=True)
    return Voxelization(coords=coords.astype(np.int32), point_to_voxel=inverse.reshape(-1),
                        first_point=first)


def isolated_voxel_fraction(points: np.ndarray, voxel_size: float) -> float:
    """Share of occupied cells with no occupied cell among their 26 neighbours: high when the
    voxels are finer than the point spacing, and then a 3x3x3 sparse convolution sees only itself."""
    from scipy.spatial import cKDTree

    coords = voxelize(points, voxel_size).coords
    if len(coords) == 0:
        return 0.0
    counts = cKDTree(coords).query_ball_point(coords, r=1.0, p=np.inf, return_length=True)
    return float(np.mean(counts <= 1))


def segment_mean(values: torch.Tensor | np.ndarray, segments: torch.Tensor | np.ndarray,
                 num_segments: int, rows: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, C) mean of the rows in each segment (voxel, superpoint, instance) and (S,) row counts.

    A tensor is pooled in its own dtype and stays differentiable (training losses); a numpy array
    (a map's feature rows, positions, colours) is summed in float64 by one compiled pass over its
    rows as they are, never converted whole, and the means come back as float32 (a float32 copy
    and torch's ``index_add_`` cost 2-3x more for a room map's codes: instance regrouping pools
    them on every update). ``rows`` (numpy only): item i is ``values[rows[i]]`` (map voxels
    pointing at the feature rows they share: pooled without a copy of a row per voxel)."""
    if isinstance(values, np.ndarray):
        seg = np.ascontiguousarray(segments.numpy() if isinstance(segments, torch.Tensor) else segments,
                                   dtype=np.int64).reshape(-1)
        items = len(values) if rows is None else len(rows)
        if len(seg) != items or (len(seg) and not 0 <= int(seg.min()) <= int(seg.max()) < num_segments):
            raise IndexError(f"{len(seg)} segment ids in [0, {num_segments}) needed for {items} rows")
        table = values.reshape(len(values), -1)
        table = table.astype(np.float32) if table.dtype == np.float16 else table  # numba has no float16
        index = np.arange(len(table)) if rows is None else np.ascontiguousarray(rows, np.int64)
        if len(index) and not 0 <= int(index.min()) <= int(index.max()) < len(table):
            raise IndexError(f"row index out of range for {len(table)} rows")
        sums, counts = _segment_sums(table, index, seg, num_segments)
        means = sums / np.maximum(counts, 1)[:, None]
        return torch.from_numpy(means.astype(np.float32)), torch.from_numpy(counts.astype(np.float32))
    segments = torch.as_tensor(segments)
    sums = values.new_zeros(num_segments, values.shape[1]).index_add_(0, segments, values)
    counts = torch.bincount(segments, minlength=num_segments).to(sums.dtype)
    return sums / counts.clamp(min=1)[:, None], counts


@numba.njit(cache=True, nogil=True)  # no GIL: the node's callbacks run meanwhile
def _segment_sums(values: np.ndarray, index: np.ndarray, segments: np.ndarray, n: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    sums = np.zeros((n, values.shape[1]), np.float64)
    counts = np.zeros(n, np.int64)
    for i in range(index.shape[0]):
        s, r = segments[i], index[i]
        counts[s] += 1
        for j in range(values.shape[1]):
            sums[s, j] += values[r, j]
    return sums, counts


def segment_majority(values: np.ndarray, segments: np.ndarray, num_segments: int) -> np.ndarray:
    """(S,) the most common value of the rows in each segment (ties: the smallest value); segments
    with no row get -1. One sort, no loop over segments."""
    values, segments = np.asarray(values).reshape(-1), np.asarray(segments).reshape(-1)
    out = np.full(num_segments, -1, dtype=values.dtype)
    if len(values) == 0:
        return out
    pairs, counts = unique_rows(np.stack([segments, values], axis=1), return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # per segment: most rows first, then smallest value
    seg_sorted = pairs[order, 0]
    first = np.ones(len(order), bool)
    first[1:] = seg_sorted[1:] != seg_sorted[:-1]
    out[seg_sorted[first]] = pairs[order[first], 1]
    return out


def voxel_points(points: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) float32 centroid of each occupied voxel's points, and (N,) each point's voxel."""
    vox = voxelize(points, voxel_size)
    centroids, _ = segment_mean(np.asarray(points, np.float32), vox.point_to_voxel, vox.num_voxels)
    return centroids.numpy(), vox.point_to_voxel
