"""A live map written to files: PLY for viewers (points, colours, label, score, instance) and an npz
with every array for programs. Kept out of ``geometry/``, which holds the map itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovseg3d.data.ply import write_ply
from ovseg3d.geometry.voxel_map import VoxelMap
from ovseg3d.serialization import atomic_write


def save_map(vmap: VoxelMap, path: Path, extra: dict[str, np.ndarray] | None = None) -> tuple[Path, Path]:
    """``<path>.ply`` and ``<path>.npz`` (all arrays plus ``extra``, e.g. the label names), each
    written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ply, npz = path.with_suffix(".ply"), path.with_suffix(".npz")
    write_ply(ply, vmap.points, vmap.colors, label=vmap.labels.astype(np.int32), score=vmap.scores,
              instance=vmap.instances)
    with atomic_write(npz) as tmp, open(tmp, "wb") as fh:  # a file object: numpy adds no ".npz" to it
        np.savez_compressed(fh, points=vmap.points, colors=vmap.colors, count=vmap.count, labels=vmap.labels,
                            scores=vmap.scores, instances=vmap.instances, features=vmap.features,
                            voxel_size=vmap.voxel_size,
                            **({"instance_features": vmap.instance_features} if vmap.instance_dim else {}),
                            **(extra or {}))
    return ply, npz
