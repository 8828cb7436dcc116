"""Ray casting against a triangle mesh (open3d's RaycastingScene): what a camera sees.

Serves the synthetic world's renderer and anything that needs per-pixel ground truth on a mesh
(ScanNet's meshes included), e.g. the simulated teacher.
"""

from __future__ import annotations

import numpy as np


class MeshRaycaster:
    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        import open3d as o3d

        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.faces = np.asarray(faces, dtype=np.int64)
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(o3d.core.Tensor(self.vertices.astype(np.float32)),
                                  o3d.core.Tensor(self.faces.astype(np.uint32)))
        self._o3d = o3d

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> dict[str, np.ndarray]:
        """Hits of rays (..., 3); ``t`` is in units of each direction vector (inf = miss)."""
        directions = np.asarray(directions, dtype=np.float64)
        rays = np.concatenate([np.broadcast_to(origins, directions.shape), directions], axis=-1)
        out = self._scene.cast_rays(self._o3d.core.Tensor(rays.astype(np.float32)), nthreads=0)
        t = out["t_hit"].numpy()
        prim = np.where(np.isfinite(t), out["primitive_ids"].numpy().astype(np.int64), -1)  # misses: -1
        return {"t": t, "prim": prim, "uv": out["primitive_uvs"].numpy(), "normal": out["primitive_normals"].numpy()}

    @staticmethod
    def camera_rays(cam_to_world: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Origin and per-pixel world directions (h, w, 3) with unit z in the camera frame."""
        w, h = size
        u, v = np.meshgrid(np.arange(w), np.arange(h))
        dirs = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((h, w))], -1)
        return cam_to_world[:3, 3], dirs @ cam_to_world[:3, :3].T

    def view(self, cam_to_world: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Camera hits; ``t`` is the z-depth because the directions have unit camera z."""
        origin, dirs = self.camera_rays(cam_to_world, K, size)
        hit = self.cast(origin, dirs)
        hit["dirs"] = dirs
        return hit

    def nearest_vertex(self, prim: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Index of the hit triangle's vertex nearest to each hit (-1 for misses)."""
        ok = prim >= 0
        tri = self.faces[np.where(ok, prim, 0)]
        bary = np.stack([1 - uv[..., 0] - uv[..., 1], uv[..., 0], uv[..., 1]], -1)
        best = np.take_along_axis(tri, bary.argmax(-1)[..., None], -1)[..., 0]
        return np.where(ok, best, -1)

    def interpolate(self, values: np.ndarray, prim: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Barycentric interpolation of per-vertex values at the hits (misses -> 0)."""
        ok = prim >= 0
        tri = self.faces[np.where(ok, prim, 0)]
        w1, w2 = uv[..., 0:1], uv[..., 1:2]
        out = (1 - w1 - w2) * values[tri[..., 0]] + w1 * values[tri[..., 1]] + w2 * values[tri[..., 2]]
        return np.where(ok[..., None], out, 0.0)

    def vertex_index_image(self, cam_to_world: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(h, w) index of the mesh vertex each pixel sees (-1 = nothing)."""
        hit = self.view(cam_to_world, K, size)
        return self.nearest_vertex(hit["prim"], hit["uv"])


def vertex_index_grid(caster: MeshRaycaster, cam_to_world: np.ndarray, K: np.ndarray,
                      image_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """(h', w') index of the vertex seen at the cell centres of an ``out_size`` grid over the image."""
    from ovseg3d.geometry.camera import scale_intrinsics

    return caster.vertex_index_image(cam_to_world, scale_intrinsics(K, image_size, out_size), out_size)


def vertex_label_image(caster: MeshRaycaster, cam_to_world: np.ndarray, K: np.ndarray,
                       image_size: tuple[int, int], out_size: tuple[int, int], vertex_labels: np.ndarray,
                       fill: int = -1) -> np.ndarray:
    """(h', w') per-vertex labels seen at the cell centres of an ``out_size`` grid over the image."""
    vi = vertex_index_grid(caster, cam_to_world, K, image_size, out_size)
    return np.where(vi >= 0, np.asarray(vertex_labels)[np.maximum(vi, 0)], fill)
