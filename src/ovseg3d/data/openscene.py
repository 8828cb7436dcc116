"""OpenScene's file formats: fused 2D features `<scene>_<k>.pt` and preprocessed scenes `.pth`.

Fused features: ``torch.save({"feat": fp16 [M, C], "mask_full": bool [N]})`` where N is the
scene's point count in vertex order and M = mask_full.sum(). Preprocessed 3D scenes:
``torch.save((coords [N,3] float, colors [N,3] in [-1, 1], labels [N] with 255 = ignore))``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ovseg3d.errors import UserError
from ovseg3d.serialization import atomic_write, torch_load

OPENSCENE_IGNORE = 255

# What unpickling numpy arrays needs, under both numpy 2 and numpy 1 module names (OpenScene's
# files were written with numpy 1).
_reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
_NUMPY_GLOBALS = [
    _reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
    *{type(np.dtype(t)) for t in ("f2", "f4", "f8", "i8", "i4", "i2", "u1", "u2", "b1")},
]


def fused_path(out_dir: Path, scene: str, k: int = 0) -> Path:
    return Path(out_dir) / f"{scene}_{k}.pt"


def save_fused(path: Path, features: torch.Tensor, mask: torch.Tensor) -> None:
    """Write seen points' features (fp16) and the full-scene mask, atomically."""
    mask = torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
    features = torch.as_tensor(features)
    if features.shape[0] == mask.shape[0] and int(mask.sum()) != mask.shape[0]:
        features = features[mask]
    if features.shape[0] != int(mask.sum()):
        raise UserError(f"{features.shape[0]} feature rows for {int(mask.sum())} seen points")
    with atomic_write(path) as tmp:
        torch.save({"feat": features.half().contiguous(), "mask_full": mask.contiguous()}, tmp)


def load_fused(path: Path, num_points: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(feat [M, C] fp16, mask_full [N] bool), checked against the scene's point count."""
    data = torch_load(path, "OpenScene fused-feature file")
    if not isinstance(data, dict) or "feat" not in data or "mask_full" not in data:
        raise UserError(f"{path} is not a valid OpenScene fused-feature file (no 'feat' and 'mask_full' keys)")
    feat, mask = data["feat"], data["mask_full"]
    feat = torch.as_tensor(feat)
    mask = torch.as_tensor(mask).bool().reshape(-1)
    if feat.ndim != 2 or feat.shape[0] != int(mask.sum()):
        raise UserError(f"{path}: feat has shape {tuple(feat.shape)} but mask_full marks {int(mask.sum())} points")
    if num_points is not None and mask.shape[0] != num_points:
        raise UserError(f"{path}: mask_full covers {mask.shape[0]} points, the scene has {num_points}")
    return feat, mask


def load_fused_dense(path: Path, num_points: int, dtype: torch.dtype = torch.float32
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, C] with zero rows where no camera saw the point, mask_full [N]): one row per scene point."""
    feat, mask = load_fused(path, num_points)
    full = torch.zeros(num_points, feat.shape[1], dtype=dtype)
    full[mask] = feat.to(dtype)
    return full, mask


def load_openscene_scene(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coords [N,3] float32, colors [N,3] uint8, labels [N] int64 with -1 = ignore)."""
    data = torch_load(path, "OpenScene scene file", _NUMPY_GLOBALS)
    if not isinstance(data, (tuple, list)) or len(data) < 2:
        raise UserError(f"{path}: expected a tuple (coords, colors[, labels])")
    coords = np.asarray(data[0], dtype=np.float32)
    colors = np.asarray(data[1], dtype=np.float32)
    colors = np.clip((colors + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    if len(data) > 2 and data[2] is not None:
        labels = np.asarray(data[2]).astype(np.int64)
        labels[labels == OPENSCENE_IGNORE] = -1
    else:
        labels = np.full(len(coords), -1, dtype=np.int64)
    return coords, colors, labels


def save_openscene_scene(path: Path, coords: np.ndarray, colors: np.ndarray, labels: np.ndarray) -> None:
    """The inverse of ``load_openscene_scene`` (labels -1 -> 255), for interchange with OpenScene."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    labels[labels < 0] = OPENSCENE_IGNORE
    torch.save((np.asarray(coords, dtype=np.float32), np.asarray(colors, dtype=np.float32) / 127.5 - 1.0,
                labels.astype(np.float64)), path)
