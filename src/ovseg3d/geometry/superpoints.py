"""Superpoints by graph-based segmentation on normals (Felzenszwalb-Huttenlocher), as ScanNet's
segmentator computes the `.segs.json` over-segmentation of its meshes.

Edges are mesh edges (or k-NN edges for a bare point cloud) weighted by ``1 - n_a . n_b``; edges
are visited in increasing weight and two components merge when the weight is no larger than
either component's threshold ``w_internal + k_thresh / size``; components smaller than
``min_verts`` are then merged into a neighbour along the lightest edges.
"""

from __future__ import annotations

import numba
import numpy as np

from ovseg3d.geometry.neighbors import Neighbourhood, mesh_edges, mesh_vertex_normals

SCANNET_K_THRESH = 0.01  # ScanNet's `_vh_clean_2.0.010000.segs.json`
SCANNET_MIN_VERTS = 20


@numba.njit(cache=True, nogil=True)  # no GIL: the node's callbacks run meanwhile
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True, nogil=True)  # no GIL: the node's callbacks run meanwhile
def _segment(n, edges, weights, k_thresh, min_verts):
    parent = np.arange(n)
    size = np.ones(n, dtype=np.int64)
    thresh = np.full(n, k_thresh)
    order = np.argsort(weights)  # not stable, like ScanNet's std::sort; a stable sort cost 3x more
    for i in order:
        a = _find(parent, edges[i, 0])
        b = _find(parent, edges[i, 1])
        w = weights[i]
        if a != b and w <= thresh[a] and w <= thresh[b]:
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
            thresh[a] = w + k_thresh / size[a]
    for i in order:
        a = _find(parent, edges[i, 0])
        b = _find(parent, edges[i, 1])
        if a != b and (size[a] < min_verts or size[b] < min_verts):
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = _find(parent, i)
    return out


def segment_graph(num_vertices: int, edges: np.ndarray, normals: np.ndarray,
                  k_thresh: float = SCANNET_K_THRESH, min_verts: int = SCANNET_MIN_VERTS,
                  sign_invariant: bool = False, colors: np.ndarray | None = None,
                  color_weight: float = 0.0) -> np.ndarray:
    """Superpoint id per vertex (0..S-1, in order of first appearance) of a normal-weighted graph.

    With ``colors`` (N, 3) in [0, 1] and ``color_weight`` > 0, an edge also weighs
    ``color_weight * |c_a - c_b| / sqrt(3)``, which separates coplanar surfaces of different
    colour (a poster on a wall) that normals alone cannot.
    """
    edges = np.ascontiguousarray(edges, dtype=np.int64).reshape(-1, 2)
    if num_vertices == 0:
        return np.zeros(0, dtype=np.int64)
    dot = np.einsum("ij,ij->i", normals[edges[:, 0]], normals[edges[:, 1]])
    if sign_invariant:  # PCA normals of bare point clouds have no consistent sign
        dot = np.abs(dot)
    weights = np.clip(1.0 - dot, 0.0, 2.0)
    if colors is not None and color_weight > 0:
        c = np.asarray(colors, dtype=np.float64)
        weights = weights + color_weight * np.linalg.norm(c[edges[:, 0]] - c[edges[:, 1]], axis=1) / np.sqrt(3)
    roots = _segment(num_vertices, edges, weights, float(k_thresh), int(min_verts))
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # number segments by first vertex, like ScanNet's files
    return rank[inverse.reshape(-1)]


def mesh_superpoints(vertices: np.ndarray, faces: np.ndarray, k_thresh: float = SCANNET_K_THRESH,
                     min_verts: int = SCANNET_MIN_VERTS) -> np.ndarray:
    """Superpoints of a triangle mesh over its vertices (ScanNet's segmentator)."""
    return segment_graph(len(vertices), mesh_edges(faces), mesh_vertex_normals(vertices, faces),
                         k_thresh, min_verts)


def point_superpoints(points: np.ndarray, normals: np.ndarray | None = None, colors: np.ndarray | None = None,
                      k: int = 10, k_thresh: float = SCANNET_K_THRESH, min_verts: int = SCANNET_MIN_VERTS,
                      color_weight: float = 1.0, max_edge_factor: float = 2.5, normal_k: int = 16,
                      neighbours: Neighbourhood | None = None) -> np.ndarray:
    """Superpoints of a bare point cloud over its k-NN graph (PCA normals unless given).

    ``colors`` (N, 3, uint8 or [0, 1]) add a colour term to the edge weights; k-NN edges longer
    than ``max_edge_factor`` x the median nearest-neighbour spacing are dropped so that separate
    surfaces are not bridged across gaps. ``neighbours``: the cloud's k-NN query when the caller
    has one (at least ``max(k + 1, normal_k)`` of them), one query for everything otherwise.
    """
    points = np.asarray(points, dtype=np.float64)
    if neighbours is None or neighbours.k < min(len(points), max(k + 1, normal_k, 2)):
        neighbours = Neighbourhood.of(points, max(k + 1, normal_k, 2))
    if normals is None:
        normals = neighbours.normals(points, normal_k)
    edges = neighbours.edges(k)
    length = np.linalg.norm(points[edges[:, 0]] - points[edges[:, 1]], axis=1)
    spacing = np.median(neighbours.dist[:, 1]) if len(points) > 1 else 0.0
    edges = edges[length <= max_edge_factor * spacing + 1e-9]
    if colors is not None:
        colors = np.asarray(colors, dtype=np.float64)
        colors = colors / 255.0 if colors.max(initial=0) > 1.0 else colors
    return segment_graph(len(points), edges, normals, k_thresh, min_verts, sign_invariant=True,
                         colors=colors, color_weight=color_weight)


def label_purity(segments: np.ndarray, labels: np.ndarray, ignore: int | None = None) -> float:
    """Point-weighted purity: fraction of points carrying their superpoint's majority label."""
    segments, labels = np.asarray(segments), np.asarray(labels)
    if ignore is not None:
        keep = labels != ignore
        segments, labels = segments[keep], labels[keep]
    if len(labels) == 0:
        return float("nan")
    _, lab = np.unique(labels, return_inverse=True)
    _, seg = np.unique(segments, return_inverse=True)
    counts = np.zeros((seg.max() + 1, lab.max() + 1), dtype=np.int64)
    np.add.at(counts, (seg, lab), 1)
    return float(counts.max(axis=1).sum() / len(labels))
