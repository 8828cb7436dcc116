"""Write a synthetic room in ScanNet's raw layout, byte-compatible with what ScanNet's tools read.

Per scene: `_vh_clean_2.ply` (vertices = points, faces), `_vh_clean_2.labels.ply` (vertex
`label` = NYU40 id), `.aggregation.json` + `_vh_clean_2.0.010000.segs.json` (instances as groups
of segmentator segments), `color/ depth/ pose/ intrinsic/` as ScanNet's SensReader exports them,
`<scene>.txt` metadata, and beyond ScanNet: `lidar/<i>.bin` (KITTI-style float32 x, y, z,
intensity in the sensor frame), `lidar_pose/<i>.txt` and `synth.json` (what generated it).
At the dataset root: `scannetv2-labels.combined.tsv` for the categories used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ovseg3d.data.images import write_color, write_depth, write_matrix
from ovseg3d.data.ply import write_ply
from ovseg3d.data.scannet import LABEL_MAP_FILE
from ovseg3d.data.synth.furniture import NYU40
from ovseg3d.geometry.superpoints import SCANNET_K_THRESH, SCANNET_MIN_VERTS
from ovseg3d.labels import load_label_set

TSV_COLUMNS = ["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class",
               "eigen13class", "ModelNet40", "ModelNet10", "ShapeNetCore55", "synsetoffset", "wnsynsetid",
               "wnsynsetkey", "mpcat40", "mpcat40index"]


def write_label_map(root: Path) -> Path:
    """ScanNet's label TSV for the synthetic categories; `id` follows ScanNet200's raw-category ids."""
    s200 = load_label_set("scannet200")
    ids = dict(zip(s200.names, s200.ids))
    aliases = {"couch": "couch", "ottoman": "ottoman"}
    lines = ["\t".join(TSV_COLUMNS)]
    for raw, (nyu_id, nyu_name) in NYU40.items():
        row = dict.fromkeys(TSV_COLUMNS, "")
        row.update(id=str(ids[aliases.get(raw, raw)]), raw_category=raw, category=raw, count="1",
                   nyu40id=str(nyu_id), nyuClass=nyu_name, nyu40class=nyu_name)
        lines.append("\t".join(row[c] for c in TSV_COLUMNS))
    path = root / LABEL_MAP_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mesh_and_labels(scene_dir: Path, name: str, vertices: np.ndarray, faces: np.ndarray,
                          colors: np.ndarray, nyu40: np.ndarray) -> None:
    write_ply(scene_dir / f"{name}_vh_clean_2.ply", vertices, colors, faces, alpha=True)
    write_ply(scene_dir / f"{name}_vh_clean_2.labels.ply", vertices, colors, faces, alpha=True,
              label=nyu40.astype(np.uint16))


def write_instances(scene_dir: Path, name: str, segments: np.ndarray, instance: np.ndarray,
                    categories: list[str]) -> None:
    """`.segs.json` (segment per vertex) and `.aggregation.json` (instances as segment groups)."""
    segs_name = f"{name}_vh_clean_2.0.010000.segs.json"
    (scene_dir / segs_name).write_text(json.dumps({
        "params": {"kThresh": f"{SCANNET_K_THRESH}", "segMinVerts": f"{SCANNET_MIN_VERTS}"},
        "sceneId": name, "segIndices": segments.tolist()}))
    groups = []
    for obj, category in enumerate(categories):
        segs = np.unique(segments[instance == obj]).tolist()
        if segs:
            groups.append({"id": obj, "objectId": obj, "segments": segs, "label": category})
    (scene_dir / f"{name}.aggregation.json").write_text(json.dumps({
        "sceneId": f"scannet.{name}", "appId": "ovseg3d.synth", "segGroups": groups,
        "segmentsFile": f"scannet.{segs_name}"}))


def write_intrinsics(scene_dir: Path, name: str, K: np.ndarray, size: tuple[int, int], num_frames: int) -> None:
    folder = scene_dir / "intrinsic"
    folder.mkdir(parents=True, exist_ok=True)
    K4 = np.eye(4)
    K4[:3, :3] = K
    for stem in ("intrinsic_color", "intrinsic_depth"):
        write_matrix(folder / f"{stem}.txt", K4)
    for stem in ("extrinsic_color", "extrinsic_depth"):
        write_matrix(folder / f"{stem}.txt", np.eye(4))
    w, h = size
    meta = {"colorHeight": h, "colorWidth": w, "depthHeight": h, "depthWidth": w,
            "fx_color": K[0, 0], "fy_color": K[1, 1], "mx_color": K[0, 2], "my_color": K[1, 2],
            "fx_depth": K[0, 0], "fy_depth": K[1, 1], "mx_depth": K[0, 2], "my_depth": K[1, 2],
            "numColorFrames": num_frames, "numDepthFrames": num_frames, "numIMUmeasurements": 0,
            "sceneType": "Synthetic (ovseg3d test instrument)",
            "axisAlignment": " ".join(["1", "0", "0", "0", "0", "1", "0", "0", "0", "0", "1", "0", "0", "0", "0", "1"])}
    (scene_dir / f"{name}.txt").write_text("".join(f"{k} = {v}\n" for k, v in meta.items()))


def write_frame(scene_dir: Path, i: int, rgb: np.ndarray, depth: np.ndarray, pose: np.ndarray) -> None:
    for sub in ("color", "depth", "pose"):
        (scene_dir / sub).mkdir(exist_ok=True)
    write_color(scene_dir / "color" / f"{i}.jpg", rgb)
    write_depth(scene_dir / "depth" / f"{i}.png", depth)
    write_matrix(scene_dir / "pose" / f"{i}.txt", pose)


def write_sweep(scene_dir: Path, i: int, points: np.ndarray, intensity: np.ndarray, pose: np.ndarray) -> None:
    (scene_dir / "lidar").mkdir(exist_ok=True)
    (scene_dir / "lidar_pose").mkdir(exist_ok=True)
    np.concatenate([points, intensity[:, None]], axis=1).astype(np.float32).tofile(scene_dir / "lidar" / f"{i}.bin")
    write_matrix(scene_dir / "lidar_pose" / f"{i}.txt", pose)


def read_sweep(scene_dir: Path, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points (M, 3) sensor frame, intensity (M,), sensor-to-world pose) of LiDAR sweep i."""
    from ovseg3d.data.images import read_matrix

    data = np.fromfile(scene_dir / "lidar" / f"{i}.bin", dtype=np.float32).reshape(-1, 4)
    return data[:, :3], data[:, 3], read_matrix(scene_dir / "lidar_pose" / f"{i}.txt")
