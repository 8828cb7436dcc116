"""ScanNet's raw scene layout: mesh vertices as the points, labels, instances and posed RGB-D frames.

The same reader serves real ScanNet scenes (exported with ScanNet's SensReader) and the synthetic
world's, which are written in this layout. Frames stream lazily; frames with an invalid pose
(ScanNet writes -inf), a missing or unreadable file, or an image of the wrong size are skipped and
counted in ``scene.skipped``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ovseg3d.data.images import read_color, read_depth, read_matrix
from ovseg3d.data.ply import read_ply
from ovseg3d.errors import UserError
from ovseg3d.geometry.camera import scale_intrinsics
from ovseg3d.labels import LabelSet

LABEL_MAP_FILE = "scannetv2-labels.combined.tsv"


@dataclass
class Frame:
    """One posed RGB-D view; depth is aligned to the colour camera at the same resolution."""

    frame_id: int
    color: np.ndarray  # (h, w, 3) uint8
    depth: np.ndarray  # (h, w) float32 metres, 0 = no reading
    pose: np.ndarray  # (4, 4) camera-to-world
    K: np.ndarray  # (3, 3) intrinsics of both images

    @property
    def image_size(self) -> tuple[int, int]:
        return self.color.shape[1], self.color.shape[0]


def read_label_map(path: Path, key: str = "raw_category", value: str = "nyu40id") -> dict[str, int]:
    """ScanNet's label TSV as {raw category: id} (ids as in ScanNet's BenchmarkScripts util)."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise UserError(f"cannot read label map {path}: {exc}") from None
    if not rows or key not in rows[0] or value not in rows[0]:
        raise UserError(f"label map {path} lacks the columns {key!r} and {value!r}")
    return {r[key]: int(r[value]) for r in rows if r[value].strip().lstrip("-").isdigit()}


def find_label_map(start: Path) -> Path | None:
    for folder in [start, *start.parents][:3]:
        if (folder / LABEL_MAP_FILE).exists():
            return folder / LABEL_MAP_FILE
    return None


def align_depth(depth: np.ndarray, K_depth: np.ndarray, K_target: np.ndarray,
                target_size: tuple[int, int]) -> np.ndarray:
    """Resample a depth image into another pinhole camera at the same pose (nearest pixel).

    ScanNet's depth and colour cameras are registered and differ only in intrinsics, so each target
    pixel's ray maps to one depth pixel; nearest sampling never blends across depth edges.
    """
    w, h = target_size
    u = (np.arange(w) - K_target[0, 2]) / K_target[0, 0] * K_depth[0, 0] + K_depth[0, 2]
    v = (np.arange(h) - K_target[1, 2]) / K_target[1, 1] * K_depth[1, 1] + K_depth[1, 2]
    ui, vi = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
    okx = (ui >= 0) & (ui < depth.shape[1])
    oky = (vi >= 0) & (vi < depth.shape[0])
    out = np.zeros((h, w), dtype=np.float32)
    out[np.ix_(oky, okx)] = depth[np.ix_(vi[oky], ui[okx])]
    return out


class ScanNetScene:
    """A scene folder `sceneXXXX_YY/` in ScanNet's raw layout."""

    def __init__(self, path: str | Path, label_map: Path | None = None):
        self.path = Path(path)
        self.name = self.path.name
        if not self.path.is_dir():
            raise UserError(f"{self.path} is not a directory")
        has_mesh = self.mesh_path.exists()
        has_frames = all((self.path / d).is_dir() for d in ("color", "depth", "pose"))
        if not (has_mesh or has_frames):
            raise UserError(f"{self.path} is not a ScanNet scene folder: it has neither "
                            f"{self.mesh_path.name} nor color/, depth/ and pose/ folders")
        self.label_map_path = label_map or find_label_map(self.path.parent)
        self.skipped: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"ScanNetScene({str(self.path)!r})"

    # ---------------------------------------------------------------- geometry and labels
    def source_mesh(self) -> ScanNetScene | None:
        """The generating mesh of a scene whose points were re-made from its depth
        (`ovseg3d synth --reconstruct`), as a scene folder of its own; None for ordinary scenes."""
        folder = self.path / "mesh" / self.name
        if not (folder / f"{self.name}_vh_clean_2.ply").exists():
            return None
        return ScanNetScene(folder, label_map=self.label_map_path)

    @property
    def mesh_path(self) -> Path:
        return self.path / f"{self.name}_vh_clean_2.ply"

    @cached_property
    def _mesh(self):
        if not self.mesh_path.exists():
            raise UserError(f"scene {self.name} has no mesh {self.mesh_path.name}")
        return read_ply(self.mesh_path)

    @property
    def points(self) -> np.ndarray:
        return self._mesh.points

    @property
    def colors(self) -> np.ndarray:
        if self._mesh.colors is None:
            return np.full((len(self.points), 3), 128, dtype=np.uint8)
        return self._mesh.colors

    @property
    def faces(self) -> np.ndarray | None:
        return self._mesh.faces

    @property
    def num_points(self) -> int:
        return len(self.points)

    @cached_property
    def nyu40(self) -> np.ndarray:
        """NYU40 id per vertex (0 = unannotated) from `_vh_clean_2.labels.ply`."""
        path = self.path / f"{self.name}_vh_clean_2.labels.ply"
        if not path.exists():
            raise UserError(f"scene {self.name} has no semantic labels ({path.name})")
        labels = read_ply(path).vertex_props.get("label")
        if labels is None or len(labels) != self.num_points:
            raise UserError(f"{path.name} has no per-vertex 'label' matching the mesh's {self.num_points} vertices")
        return labels.astype(np.int64)

    @cached_property
    def _aggregation(self) -> tuple[np.ndarray, list[str]]:
        agg_path = self.path / f"{self.name}.aggregation.json"
        segs = sorted(self.path.glob(f"{self.name}_vh_clean*.segs.json"))
        if not agg_path.exists() or not segs:
            raise UserError(f"scene {self.name} has no instance annotation (.aggregation.json + .segs.json)")
        try:
            seg_indices = self.segments
            groups = json.loads(agg_path.read_text())["segGroups"]
        except (json.JSONDecodeError, KeyError, OSError, UserError) as exc:
            raise UserError(f"cannot read the instance annotation of {self.name}: {exc}") from None
        instance = np.zeros(self.num_points, dtype=np.int64)
        labels = [""]
        seg_to_vertices: dict[int, np.ndarray] = {}
        order = np.argsort(seg_indices, kind="stable")
        uniq, starts = np.unique(seg_indices[order], return_index=True)
        for s, a, b in zip(uniq, starts, [*starts[1:], len(order)]):
            seg_to_vertices[int(s)] = order[a:b]
        for g in groups:
            obj = int(g["objectId"]) + 1  # ScanNet's export: instance id = objectId + 1, 0 = none
            while len(labels) <= obj:
                labels.append("")
            labels[obj] = str(g["label"])
            for s in g["segments"]:
                if int(s) in seg_to_vertices:
                    instance[seg_to_vertices[int(s)]] = obj
        return instance, labels

    @cached_property
    def segments(self) -> np.ndarray:
        """Per-vertex superpoint id from the scene's `.segs.json` (ScanNet's segmentator)."""
        segs = sorted(self.path.glob(f"{self.name}_vh_clean*.segs.json"))
        if not segs:
            raise UserError(f"scene {self.name} has no .segs.json over-segmentation")
        try:
            seg = np.asarray(json.loads(segs[0].read_text())["segIndices"], dtype=np.int64)
        except (json.JSONDecodeError, KeyError, OSError) as exc:
            raise UserError(f"cannot read {segs[0].name}: {exc}") from None
        if len(seg) != self.num_points:
            raise UserError(f"{segs[0].name} has {len(seg)} entries for {self.num_points} vertices")
        return seg

    @property
    def instance_ids(self) -> np.ndarray:
        """Instance id per vertex (objectId + 1; 0 = no instance)."""
        return self._aggregation[0]

    @property
    def instance_raw_labels(self) -> list[str]:
        """Raw category name of each instance id (index 0 is unused)."""
        return self._aggregation[1]

    def raw_category_ids(self) -> np.ndarray:
        """Per-vertex ScanNet raw-category id (the TSV's `id`, ScanNet200's id space); 0 = none."""
        if self.label_map_path is None:
            raise UserError(f"no {LABEL_MAP_FILE} found next to {self.path}; pass label_map=")
        ids = read_label_map(self.label_map_path, value="id")
        inst, names = self._aggregation
        per_instance = np.array([ids.get(n, 0) for n in names], dtype=np.int64)
        return per_instance[inst]

    def semantic(self, label_set: LabelSet) -> np.ndarray:
        """Class index per vertex in ``label_set`` (IGNORE outside it)."""
        if label_set.id_space == "nyu40":
            return label_set.index_of(self.nyu40)
        if label_set.id_space == "scannet_raw":
            return label_set.index_of(self.raw_category_ids())
        raise UserError(f"label set {label_set.name} uses id space {label_set.id_space!r}, "
                        "which ScanNet scenes do not carry (nyu40 or scannet_raw)")

    # ---------------------------------------------------------------- frames
    @cached_property
    def intrinsics(self) -> tuple[np.ndarray, np.ndarray]:
        """(K_color, K_depth), 3x3."""
        folder = self.path / "intrinsic"
        try:
            return (read_matrix(folder / "intrinsic_color.txt")[:3, :3],
                    read_matrix(folder / "intrinsic_depth.txt")[:3, :3])
        except UserError as exc:
            raise UserError(f"scene {self.name} has no usable intrinsics: {exc}") from None

    def frame_ids(self) -> list[int]:
        folder = self.path / "color"
        if not folder.is_dir():
            return []
        return sorted(int(p.stem) for p in folder.iterdir() if p.stem.isdigit())

    def _color_path(self, fid: int) -> Path:
        for ext in (".jpg", ".png"):
            p = self.path / "color" / f"{fid}{ext}"
            if p.exists():
                return p
        return self.path / "color" / f"{fid}.jpg"

    def pose(self, fid: int) -> np.ndarray:
        return read_matrix(self.path / "pose" / f"{fid}.txt")

    def valid_pose(self, fid: int) -> np.ndarray | None:
        try:
            pose = self.pose(fid)
        except UserError:
            return None
        return pose if np.isfinite(pose).all() else None

    def frames(self, stride: int = 1, image_size: tuple[int, int] | None = None,
               frame_ids: list[int] | None = None, with_color: bool = True) -> Iterator[Frame]:
        """Posed frames, lazily; ``image_size`` (w, h) resizes colour and aligns depth to it.

        Without ``image_size`` frames come at the depth camera's resolution (ScanNet: 640x480).
        ``with_color=False`` skips decoding colour (geometry-only passes); the colour is then black.
        """
        if stride < 1:
            raise UserError(f"frame stride must be >= 1, got {stride}")
        K_color, K_depth = self.intrinsics
        ids = self.frame_ids()[::stride] if frame_ids is None else frame_ids
        color_size = depth_size = None
        for fid in ids:
            pose = self.valid_pose(fid)
            if pose is None:
                self.skipped["invalid or missing pose"] += 1
                continue
            dpath = self.path / "depth" / f"{fid}.png"
            try:
                cpath = self._color_path(fid)
                if with_color:
                    color = read_color(cpath)
                else:
                    with Image.open(cpath) as im:  # reads the header only
                        color = np.zeros((im.height, im.width, 3), np.uint8)
                depth = read_depth(dpath)
            except (UserError, OSError, UnidentifiedImageError):
                self.skipped["missing or unreadable image"] += 1
                continue
            csize, dsize = (color.shape[1], color.shape[0]), (depth.shape[1], depth.shape[0])
            color_size = color_size or csize
            depth_size = depth_size or dsize
            if csize != color_size or dsize != depth_size:
                self.skipped["image size differs from the scene's first frame"] += 1
                continue
            if not np.any(depth > 0):
                self.skipped["depth has no valid pixel"] += 1
                continue
            size = image_size or dsize
            K = scale_intrinsics(K_color, csize, size)
            if csize != size:
                color = (np.asarray(Image.fromarray(color).resize(size, Image.BILINEAR)) if with_color
                         else np.zeros((size[1], size[0], 3), np.uint8))
            depth = align_depth(depth, K_depth, K, size)
            yield Frame(frame_id=fid, color=color, depth=depth, pose=pose, K=K)


def list_scenes(root: str | Path) -> list[Path]:
    """Scene folders under a dataset root (or the root itself if it is a scene)."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root} does not exist")
    if (root / f"{root.name}_vh_clean_2.ply").exists() or (root / "color").is_dir():
        return [root]
    scenes = sorted(p for p in root.iterdir() if p.is_dir() and
                    ((p / f"{p.name}_vh_clean_2.ply").exists() or (p / "color").is_dir()))
    if not scenes:
        raise UserError(f"{root} holds no ScanNet scene folders")
    return scenes
