"""A live map written to files and read back: PLY for viewers (points, colours, label, score,
instance) and an npz with every array for programs (the feature codes and their axes, the names
the labels index, which student made it). Kept out of ``geometry/``, which holds the map itself."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ovseg3d.data.ply import write_ply
from ovseg3d.errors import UserError
from ovseg3d.geometry.voxel_map import VoxelMap
from ovseg3d.serialization import atomic_write

FORMAT = "ovseg3d-map"
VERSION = 2  # 2: int8 feature codes and their axes (1 held fp16 features)
_ARRAYS = ("keys", "points", "colors", "count", "last_seen", "labels", "scores", "instances", "codes",
           "instance_codes")


def save_map(vmap: VoxelMap, path: Path, extra: dict[str, np.ndarray] | None = None) -> tuple[Path, Path]:
    """``<path>.ply`` and ``<path>.npz`` (all arrays plus ``extra``, e.g. the label names and the
    code axes), each written atomically: a crash leaves the previous files whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ply, npz = path.with_suffix(".ply"), path.with_suffix(".npz")
    with atomic_write(ply) as tmp:
        write_ply(tmp, vmap.points, vmap.colors, label=vmap.labels.astype(np.int32), score=vmap.scores,
                  instance=vmap.instances)
    with atomic_write(npz) as tmp, open(tmp, "wb") as fh:  # a file object: numpy adds no ".npz" to it
        np.savez_compressed(fh, format=FORMAT, version=VERSION, keys=vmap.keys, points=vmap.points,
                            colors=vmap.colors, count=vmap.count, last_seen=vmap.last_seen, labels=vmap.labels,
                            scores=vmap.scores, instances=vmap.instances, codes=vmap.codes,
                            instance_codes=vmap.instance_codes, voxel_size=vmap.voxel_size, **(extra or {}))
    return ply, npz


def read_map_file(path: Path) -> dict[str, np.ndarray]:
    """Every array of a saved ``.npz`` map, checked for shape and kind; one clear error otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise UserError(f"no saved map at {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path} is not a readable map file ({type(exc).__name__}: {exc})") from None
    if str(arrays.get("format", "")) != FORMAT:
        raise UserError(f"{path} is not an ovseg3d map (no '{FORMAT}' format tag)")
    if int(arrays.get("version", -1)) != VERSION:
        raise UserError(f"{path} is map format version {int(arrays.get('version', -1))}; this ovseg3d reads {VERSION}")
    missing = [k for k in (*_ARRAYS, "voxel_size", "label_names") if k not in arrays]
    if missing:
        raise UserError(f"{path} is an incomplete map (no {', '.join(missing)})")
    n = len(arrays["keys"])
    if any(len(arrays[k]) != n for k in _ARRAYS) or arrays["points"].shape != (n, 3):
        raise UserError(f"{path} is a damaged map: its arrays disagree on the number of voxels")
    if arrays["codes"].dtype != np.int8 or arrays["instance_codes"].dtype != np.int8:
        raise UserError(f"{path} is a damaged map: feature codes are not int8")
    if not np.isfinite(arrays["points"]).all():
        raise UserError(f"{path} is a damaged map: positions hold NaN or inf")
    return arrays


def map_from_arrays(arrays: dict[str, np.ndarray], max_voxels: int, extent: float | None) -> VoxelMap:
    """A VoxelMap holding a saved map's voxels (clean: nothing to re-run), bounded as configured."""
    codes, inst = arrays["codes"], arrays["instance_codes"]
    vmap = VoxelMap(float(arrays["voxel_size"]), max(max_voxels, len(codes)), extent, codes.shape[1], inst.shape[1])
    vmap.restore({"keys": arrays["keys"], "xyz": arrays["points"], "rgb": arrays["colors"], "count": arrays["count"],
                  "last_seen": arrays["last_seen"], "labels": arrays["labels"], "scores": arrays["scores"],
                  "instances": arrays["instances"], "codes": codes, "instance_codes": inst})
    vmap.max_voxels = max_voxels
    return vmap
