"""Dense box meshes: every face is a regular vertex grid, because mesh vertices are the points.

ScanNet's points are the vertices of a reconstructed mesh (about one per 1-2 cm); a 12-triangle
box would give 8 points. Each face here is tessellated at ``spacing`` so point density is uniform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Part:
    """A piece of one object: mesh, colour, raw ScanNet category and instance number."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64
    color: np.ndarray  # (3,) float in [0, 1]
    category: str
    instance: int


def grid_face(origin: np.ndarray, du: np.ndarray, dv: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle origin + s*du + t*dv (s, t in [0, 1]) as a grid mesh; normal = du x dv."""
    nu = max(1, int(np.ceil(np.linalg.norm(du) / spacing)))
    nv = max(1, int(np.ceil(np.linalg.norm(dv) / spacing)))
    s, t = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1), indexing="ij")
    verts = origin + s.reshape(-1, 1) * du + t.reshape(-1, 1) * dv
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return verts, faces


def box(center, size, spacing: float, yaw: float = 0.0,
        faces_to_skip: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """An oriented box (rotated by ``yaw`` about z) with outward-facing grid faces.

    ``faces_to_skip`` drops faces nobody can see (e.g. "-z" of furniture on the floor).
    """
    sx, sy, sz = np.asarray(size, dtype=np.float64) / 2
    ex, ey, ez = np.array([2 * sx, 0, 0]), np.array([0, 2 * sy, 0]), np.array([0, 0, 2 * sz])
    lo = np.array([-sx, -sy, -sz])
    specs = {  # origin, du, dv with du x dv pointing outwards
        "-z": (lo, ey, ex), "+z": (lo + ez, ex, ey),
        "-y": (lo, ex, ez), "+y": (lo + ey, ez, ex),
        "-x": (lo, ez, ey), "+x": (lo + ex, ey, ez),
    }
    verts, faces, offset = [], [], 0
    for name, (o, du, dv) in specs.items():
        if name in faces_to_skip:
            continue
        v, f = grid_face(o, du, dv, spacing)
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    v = np.concatenate(verts)
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return v @ R.T + np.asarray(center, dtype=np.float64), np.concatenate(faces)


def merge(meshes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    verts, faces, offset = [], [], 0
    for v, f in meshes:
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces)
