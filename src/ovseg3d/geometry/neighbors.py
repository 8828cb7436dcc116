"""K nearest neighbours (scipy's cKDTree), point and mesh normals, graph edges."""

from __future__ import annotations

from dataclasses import dataclass

import numba
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
        """Unit normals by PCA over the ``k`` nearest points (itself included), like open3d's
        ``estimate_normals`` without its own k-NN search; their sign is arbitrary."""
        return _least_variance_axes(np.asarray(points, np.float64), np.ascontiguousarray(self.idx[:, :k]))


@numba.njit(cache=True, nogil=True)  # no GIL: the node's callbacks run meanwhile
def _least_variance_axes(points: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(N, 3) eigenvector of the smallest eigenvalue of each neighbourhood's scatter matrix, in closed
    form: the eigenvalues by the trigonometric formula for symmetric 3x3 matrices, the vector as the
    longest cross product of two rows of (A - lambda I). ``np.linalg.eigh`` per 3x3 matrix cost most
    of an instance regrouping's superpoints; this agrees with it to ~1e-12 wherever the axis is
    defined (a smallest eigenvalue apart from the middle one)."""
    n, k = idx.shape
    out = np.empty((n, 3))
    for i in range(n):
        mx = my = mz = 0.0
        for j in range(k):
            p = points[idx[i, j]]
            mx += p[0]
            my += p[1]
            mz += p[2]
        mx, my, mz = mx / k, my / k, mz / k
        a00 = a01 = a02 = a11 = a12 = a22 = 0.0
        for j in range(k):
            p = points[idx[i, j]]
            x, y, z = p[0] - mx, p[1] - my, p[2] - mz
            a00 += x * x
            a01 += x * y
            a02 += x * z
            a11 += y * y
            a12 += y * z
            a22 += z * z
        scale = max(abs(a00), abs(a01), abs(a02), abs(a11), abs(a12), abs(a22))
        if scale == 0.0:  # all neighbours at one spot: no axis, any unit vector
            out[i, 0], out[i, 1], out[i, 2] = 1.0, 0.0, 0.0
            continue
        a00, a01, a02, a11, a12, a22 = a00 / scale, a01 / scale, a02 / scale, a11 / scale, a12 / scale, a22 / scale
        q = (a00 + a11 + a22) / 3.0
        off = a01 * a01 + a02 * a02 + a12 * a12
        b00, b11, b22 = a00 - q, a11 - q, a22 - q
        p = np.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * off) / 6.0)
        if p == 0.0:  # a multiple of the identity: every axis is one
            out[i, 0], out[i, 1], out[i, 2] = 1.0, 0.0, 0.0
            continue
        det = (b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02))
        r = min(1.0, max(-1.0, det / (2.0 * p * p * p)))
        smallest = q + 2.0 * p * np.cos(np.arccos(r) / 3.0 + 2.0 * np.pi / 3.0)
        r0 = (a00 - smallest, a01, a02)
        r1 = (a01, a11 - smallest, a12)
        r2 = (a02, a12, a22 - smallest)
        best, bx, by, bz = -1.0, 1.0, 0.0, 0.0
        for u, v in ((r0, r1), (r0, r2), (r1, r2)):
            cx = u[1] * v[2] - u[2] * v[1]
            cy = u[2] * v[0] - u[0] * v[2]
            cz = u[0] * v[1] - u[1] * v[0]
            d = cx * cx + cy * cy + cz * cz
            if d > best:
                best, bx, by, bz = d, cx, cy, cz
        if best <= 0.0:  # two rows parallel everywhere: not reached for a matrix with a distinct axis
            out[i, 0], out[i, 1], out[i, 2] = 1.0, 0.0, 0.0
            continue
        norm = np.sqrt(best)
        out[i, 0], out[i, 1], out[i, 2] = bx / norm, by / norm, bz / norm
    return out
