"""Image and matrix files of the ScanNet layout: colour JPEG/PNG, uint16 millimetre depth, 4x4 text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ovseg3d.errors import UserError

DEPTH_SHIFT = 1000.0  # ScanNet depth PNGs hold millimetres


def read_color(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"cannot read colour image {path}: {exc}") from None


def read_depth(path: Path, depth_shift: float = DEPTH_SHIFT) -> np.ndarray:
    """Depth in metres (float32); 0 where the sensor gave no reading."""
    try:
        with Image.open(path) as im:
            raw = np.asarray(im)
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"cannot read depth image {path}: {exc}") from None
    if raw.ndim != 2:
        raise UserError(f"depth image {path} has {raw.ndim} dims; expected a single-channel uint16 PNG")
    return raw.astype(np.float32) / depth_shift


def write_color(path: Path, rgb: np.ndarray, quality: int = 92) -> None:
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path, quality=quality)


def write_depth(path: Path, depth_m: np.ndarray, depth_shift: float = DEPTH_SHIFT) -> None:
    """uint16 millimetre PNG; invalid (non-finite, <= 0, too far) pixels become 0."""
    d = np.asarray(depth_m, dtype=np.float64) * depth_shift
    d = np.where(np.isfinite(d) & (d > 0) & (d < 65535), np.round(d), 0)
    Image.fromarray(d.astype(np.uint16)).save(path, compress_level=1)  # 5x faster, ~same size


def read_matrix(path: Path) -> np.ndarray:
    """A whitespace-separated 4x4 matrix (may contain inf/nan: ScanNet marks invalid poses so)."""
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read matrix file {path}: {exc}") from None
    if m.shape != (4, 4):
        raise UserError(f"matrix file {path} holds shape {m.shape}, expected 4x4")
    return m


def write_matrix(path: Path, m: np.ndarray) -> None:
    np.savetxt(path, np.asarray(m, dtype=np.float64).reshape(4, 4), fmt="%.9f")
