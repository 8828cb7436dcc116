"""RGB-D rendering and LiDAR sweeps by ray casting (open3d's RaycastingScene), with sensor noise.

Depth noise follows the structured-light model of Nguyen et al. (2012): axial sigma
0.0012 + 0.0019 (z - 0.4)^2 metres; readings vanish at grazing incidence, along depth
discontinuities, in random blobs and outside the sensor's range, as real RGB-D holes do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d.data.synth.meshes import Part
from ovseg3d.geometry.raycast import MeshRaycaster


@dataclass(frozen=True)
class DepthNoise:
    min_range: float = 0.3
    max_range: float = 8.0
    grazing_cos: float = 0.12  # |cos(incidence)| below this gives no reading
    edge_dropout: float = 0.6  # probability of losing a pixel at a depth discontinuity
    blob_fraction: float = 0.01  # area of random holes
    axial: bool = True


@dataclass(frozen=True)
class LidarModel:
    beams: int = 16
    fov_deg: tuple[float, float] = (-15.0, 15.0)
    azimuth_steps: int = 1024
    max_range: float = 30.0
    range_sigma: float = 0.01


class SceneRaycaster(MeshRaycaster):
    """All parts of a room in one ray-casting scene, with per-vertex colours and instances."""

    def __init__(self, parts: list[Part], rng: np.random.Generator):
        verts, faces, colors, inst = [], [], [], []
        offset = 0
        for p in parts:
            verts.append(p.vertices)
            faces.append(p.faces + offset)
            offset += len(p.vertices)
            texture = rng.normal(0.0, 0.025, size=(len(p.vertices), 1))
            if p.category == "floor":  # wooden planks
                texture += 0.06 * np.sign(np.sin(2 * np.pi * p.vertices[:, 1:2] / 0.3))
            colors.append(np.clip(p.color + texture, 0, 1))
            inst.append(np.full(len(p.vertices), p.instance))
        super().__init__(np.concatenate(verts), np.concatenate(faces))
        self.vertex_colors = np.concatenate(colors)  # float [0, 1]
        self.vertex_instance = np.concatenate(inst)

    def render_rgbd(self, cam_to_world: np.ndarray, K: np.ndarray, size: tuple[int, int],
                    rng: np.random.Generator, noise: DepthNoise | None = DepthNoise()) -> tuple[np.ndarray, np.ndarray]:
        """(rgb uint8 (h, w, 3), depth float32 metres (h, w), 0 = no reading)."""
        hit = self.view(cam_to_world, K, size)
        z = hit["t"]
        miss = ~np.isfinite(z)
        view = hit["dirs"] / np.linalg.norm(hit["dirs"], axis=-1, keepdims=True)
        cos_inc = np.abs(np.einsum("hwc,hwc->hw", hit["normal"], view))
        # Lambert shading from a ceiling light plus a headlight, over the surface colour.
        light = np.array([0.3, 0.2, 0.93])
        shade = 0.35 + 0.35 * np.abs(hit["normal"] @ light) + 0.3 * cos_inc
        rgb = self.interpolate(self.vertex_colors, hit["prim"], hit["uv"]) * shade[..., None]
        rgb = np.clip(rgb + rng.normal(0, 0.01, rgb.shape), 0, 1)
        rgb[miss] = 0
        depth = np.where(miss, 0.0, z).astype(np.float64)
        if noise is not None:
            depth = self._corrupt(depth, cos_inc, rng, noise)
        return (rgb * 255).round().astype(np.uint8), depth.astype(np.float32)

    @staticmethod
    def _corrupt(z: np.ndarray, cos_inc: np.ndarray, rng: np.random.Generator, n: DepthNoise) -> np.ndarray:
        h, w = z.shape
        valid = (z >= n.min_range) & (z <= n.max_range) & (cos_inc >= n.grazing_cos)
        if n.axial:
            z = z + rng.normal(0, 1, z.shape) * (0.0012 + 0.0019 * (z - 0.4) ** 2)
        gy, gx = np.gradient(np.where(np.isfinite(z), z, 0))
        edges = np.hypot(gx, gy) > 0.05 * np.maximum(z, 0.1)
        valid &= ~(edges & (rng.random(z.shape) < n.edge_dropout))
        if n.blob_fraction > 0:  # random round holes: smooth noise, thresholded at its quantile
            from scipy.ndimage import zoom

            coarse = rng.random((h // 24 + 2, w // 24 + 2))
            smooth = zoom(coarse, 24, order=3)[:h, :w]
            valid &= smooth > np.quantile(smooth, n.blob_fraction)
        return np.where(valid, z, 0.0)

    def lidar_sweep(self, sensor_to_world: np.ndarray, model: LidarModel, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(points (M, 3) float32 in the sensor frame, intensity (M,) float32 in [0, 1])."""
        elev = np.deg2rad(np.linspace(model.fov_deg[0], model.fov_deg[1], model.beams))
        azim = np.linspace(0, 2 * np.pi, model.azimuth_steps, endpoint=False)
        el, az = np.meshgrid(elev, azim, indexing="ij")
        dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
        R, t = sensor_to_world[:3, :3], sensor_to_world[:3, 3]
        hit = self.cast(t, dirs @ R.T)
        r = hit["t"]
        ok = np.isfinite(r) & (r < model.max_range)
        r = r[ok] + rng.normal(0, model.range_sigma, ok.sum())
        pts = dirs[ok] * r[:, None]
        albedo = self.interpolate(self.vertex_colors, hit["prim"][ok], hit["uv"][ok]).mean(-1)
        cos_inc = np.abs(np.einsum("ij,ij->i", hit["normal"][ok], dirs[ok] @ R.T))
        return pts.astype(np.float32), np.clip(albedo * (0.3 + 0.7 * cos_inc), 0, 1).astype(np.float32)


def cull_unseen(parts: list[Part], eyes: np.ndarray, angular_step_deg: float = 0.5) -> list[Part]:
    """Keep only the triangles some viewpoint sees, as a reconstruction from a scan would.

    Floors under cabinets and walls behind pictures would otherwise be points that no camera
    ever observes yet that a lenient visibility test credits with the occluder's features.
    Each eye casts a full sphere of rays ``angular_step_deg`` apart.
    """
    offsets = np.cumsum([0] + [len(p.faces) for p in parts])
    vertex_offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
    caster = MeshRaycaster(np.concatenate([p.vertices for p in parts]),
                           np.concatenate([p.faces + o for p, o in zip(parts, vertex_offsets)]))
    el = np.deg2rad(np.arange(-90 + angular_step_deg / 2, 90, angular_step_deg))
    az = np.deg2rad(np.arange(0, 360, angular_step_deg))
    E, A = np.meshgrid(el, az, indexing="ij")
    dirs = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], -1).reshape(-1, 3)
    seen = np.zeros(offsets[-1], dtype=bool)
    for eye in eyes:
        prim = caster.cast(eye, dirs)["prim"]
        seen[prim[prim >= 0]] = True
    kept = []
    for p, lo, hi in zip(parts, offsets[:-1], offsets[1:]):
        faces = p.faces[seen[lo:hi]]
        if len(faces) == 0:
            continue
        used = np.unique(faces)
        remap = np.full(len(p.vertices), -1)
        remap[used] = np.arange(len(used))
        kept.append(Part(vertices=p.vertices[used], faces=remap[faces], color=p.color, category=p.category,
                         instance=p.instance))
    return kept


def survey_eyes(size: np.ndarray, camera_poses: list[np.ndarray], rng: np.random.Generator, n: int = 24) -> np.ndarray:
    """Viewpoints for ``cull_unseen``: the camera path plus free space above the furniture."""
    path = np.array([T[:3, 3] for T in camera_poses])
    extra = np.column_stack([rng.uniform(0.3, 0.7, n) * size[0], rng.uniform(0.3, 0.7, n) * size[1],
                             rng.uniform(1.05, min(2.2, size[2] - 0.2), n)])
    return np.concatenate([path[:: max(1, len(path) // 12)], extra])


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world pose of a camera at ``eye`` looking at ``target`` (x right, y down, z forward)."""
    f = np.asarray(target, float) - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = r, d, f, eye
    return T


def camera_path(size: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A smooth loop through the room at head height, looking across it at varying heights.

    Like a person scanning a room, the camera slows down and lingers in places (its speed
    varies between 0.2x and 1.8x the mean), so consecutive frames are sometimes redundant.
    """
    c = size / 2
    a, b = 0.25 * size[0], 0.25 * size[1]
    phase, lag = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.2)
    k, speed_phase = int(rng.integers(2, 5)), rng.uniform(0, 2 * np.pi)
    poses = []
    for i in range(n):
        s = i / n  # progress g(s) = s + 0.8 sin(2 pi k s + p) / (2 pi k), speed 1 + 0.8 cos(...)
        g = s + 0.8 * (np.sin(2 * np.pi * k * s + speed_phase) - np.sin(speed_phase)) / (2 * np.pi * k)
        th = phase + 2 * np.pi * g
        eye = np.array([c[0] + a * np.cos(th), c[1] + b * np.sin(th), 1.45 + 0.1 * np.sin(2 * th)])
        tgt = np.array([c[0] - 0.9 * size[0] / 2 * np.cos(th + lag), c[1] - 0.9 * size[1] / 2 * np.sin(th + lag),
                        0.7 + 0.5 * np.sin(3 * th)])
        poses.append(look_at(eye, tgt))
    return poses


def lidar_path(size: np.ndarray, n: int, rng: np.random.Generator, height: float = 1.2) -> list[np.ndarray]:
    """Sensor-to-world poses of a LiDAR carried around the room (x forward along the path)."""
    c = size / 2
    a, b = 0.22 * size[0], 0.22 * size[1]
    phase = rng.uniform(0, 2 * np.pi)
    poses = []
    for i in range(n):
        th = phase + 2 * np.pi * i / n
        heading = np.arctan2(b * np.cos(th), -a * np.sin(th))
        T = np.eye(4)
        T[:3, :3] = [[np.cos(heading), -np.sin(heading), 0], [np.sin(heading), np.cos(heading), 0], [0, 0, 1]]
        T[:3, 3] = [c[0] + a * np.cos(th), c[1] + b * np.sin(th), height]
        poses.append(T)
    return poses
