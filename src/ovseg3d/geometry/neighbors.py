"""K nearest neighbours (scipy's cKDTree), point and mesh normals, graph edges."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ovseg3d.geometry.rows import unique_rows, unique_values


def knn(points: np.ndarray, k: int, query: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices (M, k) of the k nearest points (a point is its own first neighbour)."""
    tree = cKDTree(np.asarray(points, dtype=np.float64))
    k = min(k, len(points))
    dist, idx = tree.query(points if query is None else query, k=k, workers=-1)
    if k == 1:
        dist, idx = dist[:, None], idx[:, None]
    return dist, idx


def mesh_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals of a triangle mesh (ScanNet's segmentator uses the same)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    normals = np.zeros_like(v)
    for j in range(3):
        np.add.at(normals, f[:, j], face_n)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2) of a triangle mesh."""
    f = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e.sort(axis=1)
    return unique_rows(e)


@dataclass
class Neighbourhood:
    """One k-NN query of a cloud that normals, graph edges, point spacing and superpoint adjacency
    all read (each used to build its own tree: four queries of one cloud per instance regrouping)."""

    dist: np.ndarray  # (N, k) ascending; a point is its own first neighbour
    idx: np.ndarray  # (N, k)

    @classmethod
    def of(cls, points: np.ndarray, k: int) -> Neighbourhood:
        return cls(*knn(points, k))

    @property
    def k(self) -> int:
        return int(self.idx.shape[1])

    def edges(self, k: int) -> np.ndarray:
        """Unique undirected edges of the ``k``-nearest-neighbour graph."""
        idx = self.idx[:, : k + 1]
        n = len(idx)
        a = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1] - 1)
        b = idx[:, 1:].reshape(-1).astype(np.int64)
        # (min, max) packed as min * n + max: one sort of integers, in the rows' lexicographic order
        key = unique_values((np.minimum(a, b) * n + np.maximum(a, b))[a != b])
        return np.stack([key // n, key % n], axis=1)

    def normals(self, points: np.ndarray, k: int) -> np.ndarray:
        """Unit normals by PCA over the ``k`` nearest points (itself included): open3d's
        ``estimate_normals`` to 1e-15, without its own k-NN search; their sign is arbitrary."""
        nb = np.asarray(points, np.float64)[self.idx[:, :k]]
        nb -= nb.mean(1, keepdims=True)
        return np.linalg.eigh(np.einsum("nki,nkj->nij", nb, nb))[1][:, :, 0]  # least-variance axis
