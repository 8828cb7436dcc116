"""A live map written to files and read back: PLY for viewers (points, colours, label, score,
instance) and an npz with every array for programs (the feature table, each voxel's row in it and
the code axes, the names the labels index, which student made it). Kept out of ``geometry/``,
which holds the map itself. Format 2 (int8 codes per voxel) is read too: its codes become a table
with a row per voxel."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ovseg3d.data.ply import write_ply
from ovseg3d.errors import UserError
from ovseg3d.geometry.voxel_map import VoxelMap
from ovseg3d.segment.feature_table import FeatureTable
from ovseg3d.serialization import atomic_write

FORMAT = "ovseg3d-map"
VERSION = 3  # 3: a feature table and a row per voxel; 2: int8 feature codes per voxel; 1: fp16 features
READS = (2, 3)
_ARRAYS = ("keys", "points", "colors", "count", "last_seen", "labels", "scores", "instances")
_TABLES = {2: ("codes", "instance_codes"), 3: ("table_codes", "table_instance_codes")}


def save_map(vmap: VoxelMap, path: Path, table: FeatureTable | None = None,
             extra: dict[str, np.ndarray] | None = None) -> tuple[Path, Path]:
    """``<path>.ply`` and ``<path>.npz`` (all arrays, the feature ``table`` the voxels' rows point
    into (none: an empty one), plus ``extra``, e.g. the label names and the code axes), each
    written atomically: a crash leaves the previous files whole."""
    table = FeatureTable(0, 0, np.int8) if table is None else table
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ply, npz = path.with_suffix(".ply"), path.with_suffix(".npz")
    with atomic_write(ply) as tmp:
        write_ply(tmp, vmap.points, vmap.colors, label=vmap.labels.astype(np.int32), score=vmap.scores,
                  instance=vmap.instances)
    with atomic_write(npz) as tmp, open(tmp, "wb") as fh:  # a file object: numpy adds no ".npz" to it
        np.savez_compressed(fh, format=FORMAT, version=VERSION, keys=vmap.keys, points=vmap.points,
                            colors=vmap.colors, count=vmap.count, last_seen=vmap.last_seen, labels=vmap.labels,
                            scores=vmap.scores, instances=vmap.instances, feature_row=vmap.feature_row,
                            table_codes=table.semantic, table_instance_codes=table.instance,
                            voxel_size=vmap.voxel_size, **(extra or {}))
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
    version = int(arrays.get("version", -1))
    if version not in READS:
        raise UserError(f"{path} is map format version {version}; this ovseg3d reads "
                        f"{' and '.join(map(str, READS))}")
    tables = _TABLES[version]
    missing = [k for k in (*_ARRAYS, *tables, "voxel_size", "label_names") if k not in arrays]
    if version == 3 and "feature_row" not in arrays:
        missing.append("feature_row")
    if missing:
        raise UserError(f"{path} is an incomplete map (no {', '.join(missing)})")
    n = len(arrays["keys"])
    if any(len(arrays[k]) != n for k in _ARRAYS) or arrays["points"].shape != (n, 3):
        raise UserError(f"{path} is a damaged map: its arrays disagree on the number of voxels")
    semantic, instance = (arrays[k] for k in tables)
    if version == 2:  # a row of codes per voxel: a table of them, each labelled voxel pointing at its own
        if len(semantic) != n or len(instance) != n or semantic.dtype != np.int8 or instance.dtype != np.int8:
            raise UserError(f"{path} is a damaged map: its feature codes are not int8, one row a voxel")
        arrays["feature_row"] = np.where(arrays["labels"] >= 0, np.arange(n, dtype=np.int32), np.int32(-1))
    rows = arrays["feature_row"]
    if (semantic.ndim != 2 or instance.ndim != 2 or len(semantic) != len(instance)
            or semantic.dtype != instance.dtype or semantic.dtype not in (np.int8, np.float16)):
        raise UserError(f"{path} is a damaged map: its feature table is not int8 or float16 rows")
    if rows.shape != (n,) or not np.issubdtype(rows.dtype, np.integer) or (
            n and not -1 <= int(rows.min()) <= int(rows.max()) < len(semantic)):
        raise UserError(f"{path} is a damaged map: its voxels' feature rows point outside its table")
    if not np.array_equal(arrays["labels"] >= 0, rows >= 0):
        raise UserError(f"{path} is a damaged map: its labelled voxels and those with a feature row differ")
    if semantic.dtype == np.float16 and not (np.isfinite(semantic).all() and np.isfinite(instance).all()):
        raise UserError(f"{path} is a damaged map: its feature table holds NaN or inf")
    if not np.isfinite(arrays["points"]).all():
        raise UserError(f"{path} is a damaged map: positions hold NaN or inf")
    arrays["table_codes"], arrays["table_instance_codes"] = semantic, instance
    return arrays


def map_from_arrays(arrays: dict[str, np.ndarray], max_voxels: int, extent: float | None
                    ) -> tuple[VoxelMap, FeatureTable]:
    """A VoxelMap holding a saved map's voxels (clean: nothing to re-run), bounded as configured, and
    the feature table its voxels' rows point into (``read_map_file``'s arrays)."""
    n = len(arrays["keys"])
    vmap = VoxelMap(float(arrays["voxel_size"]), max(max_voxels, n), extent)
    vmap.restore({"keys": arrays["keys"], "xyz": arrays["points"], "rgb": arrays["colors"], "count": arrays["count"],
                  "last_seen": arrays["last_seen"], "labels": arrays["labels"], "scores": arrays["scores"],
                  "instances": arrays["instances"], "feature_row": arrays["feature_row"]})
    vmap.max_voxels = max_voxels
    return vmap, FeatureTable.of(arrays["table_codes"], arrays["table_instance_codes"])
