"""Voxel grids consistent with the student's: integer cell = floor(point / voxel_size)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    coords, first, inverse = np.unique(cells, axis=0, return_index=True, return_inverse=True)
    return Voxelization(coords=coords.astype(np.int32), point_to_voxel=inverse.reshape(-1),
                        first_point=first)
