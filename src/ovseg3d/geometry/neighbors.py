"""K nearest neighbours and normals (scipy's cKDTree, open3d's PCA normals)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ovseg3d.geometry.rows import unique_rows


def knn(points: np.ndarray, k: int, query: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices (M, k) of the k nearest points (a point is its own first neighbour)."""
    tree = cKDTree(np.asarray(points, dtype=np.float64))
    k = min(k, len(points))
    dist, idx = tree.query(points if query is None else query, k=k, workers=-1)
    if k == 1:
        dist, idx = dist[:, None], idx[:, None]
    return dist, idx


def estimate_normals(points: np.ndarray, k: int = 16, orient_towards: np.ndarray | None = None) -> np.ndarray:
    """Unit normals by PCA over k neighbours; oriented towards a viewpoint when one is given."""
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=k))
    normals = np.asarray(pcd.normals)
    if orient_towards is not None:
        flip = np.einsum("ij,ij->i", normals, np.asarray(orient_towards) - points) < 0
        normals[flip] *= -1
    return normals


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


def knn_edges(points: np.ndarray, k: int = 10) -> np.ndarray:
    """Unique undirected edges of the k-nearest-neighbour graph."""
    _, idx = knn(points, k + 1)
    src = np.repeat(np.arange(len(points)), idx.shape[1] - 1)
    e = np.stack([src, idx[:, 1:].reshape(-1)], axis=1)
    e = e[e[:, 0] != e[:, 1]]
    e.sort(axis=1)
    return unique_rows(e)
