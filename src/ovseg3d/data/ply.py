"""PLY meshes and point clouds (plyfile): ScanNet's `_vh_clean_2.ply` and our exports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from ovseg3d.errors import UserError
from ovseg3d.serialization import atomic_write


@dataclass
class PlyMesh:
    points: np.ndarray  # (N, 3) float32
    colors: np.ndarray | None = None  # (N, 3) uint8
    faces: np.ndarray | None = None  # (F, 3) int64
    vertex_props: dict[str, np.ndarray] = field(default_factory=dict)  # other vertex properties


def read_ply(path: Path) -> PlyMesh:
    try:
        ply = PlyData.read(str(path))
        v = ply["vertex"].data
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read PLY {path}: {exc}") from None
    names = v.dtype.names
    if not all(c in names for c in "xyz"):
        raise UserError(f"PLY {path} has no x, y, z vertex properties")
    points = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
    colors = None
    if all(c in names for c in ("red", "green", "blue")):
        colors = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8)
    skip = {"x", "y", "z", "red", "green", "blue", "alpha"}
    props = {n: np.asarray(v[n]) for n in names if n not in skip}
    faces = None
    if "face" in ply and len(ply["face"].data):
        fd = ply["face"].data
        key = "vertex_indices" if "vertex_indices" in fd.dtype.names else fd.dtype.names[0]
        faces = np.vstack(fd[key]).astype(np.int64)
    return PlyMesh(points=points, colors=colors, faces=faces, vertex_props=props)


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray | None = None,
              faces: np.ndarray | None = None, binary: bool = True, alpha: bool = False,
              **vertex_props: np.ndarray) -> None:
    """Write vertices (+ colours, + any per-vertex arrays) and optional triangles."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    spec = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if colors is not None:
        spec += [("red", "u1"), ("green", "u1"), ("blue", "u1")] + ([("alpha", "u1")] if alpha else [])
    for name, arr in vertex_props.items():
        spec.append((name, np.asarray(arr).dtype.str.lstrip("<>|=")))
    vert = np.empty(len(points), dtype=spec)
    vert["x"], vert["y"], vert["z"] = points.T
    if colors is not None:
        c = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
        vert["red"], vert["green"], vert["blue"] = c.T
        if alpha:
            vert["alpha"] = 255
    for name, arr in vertex_props.items():
        vert[name] = arr
    elements = [PlyElement.describe(vert, "vertex")]
    if faces is not None:
        f = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        f["vertex_indices"] = np.asarray(faces, dtype=np.int32)
        elements.append(PlyElement.describe(f, "face"))
    with atomic_write(path) as tmp:
        PlyData(elements, text=not binary).write(str(tmp))
