"""Where the shipped configuration lives, for a source checkout and for an installed package."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def config_dir() -> Path:
    """The `config/` folder: $OVSEG3D_CONFIG_DIR, the source tree's, or the ament share folder."""
    candidates = []
    if os.environ.get("OVSEG3D_CONFIG_DIR"):
        candidates.append(Path(os.environ["OVSEG3D_CONFIG_DIR"]))
    candidates.append(Path(__file__).resolve().parents[2] / "config")  # editable / source checkout
    candidates.append(Path(sys.prefix) / "share" / "ovseg3d" / "config")  # pip or colcon install
    for path in candidates:
        if (path / "label_sets").is_dir():
            return path
    raise FileNotFoundError("ovseg3d's config/ folder was not found (looked in: "
                            + ", ".join(str(p) for p in candidates) + "); set OVSEG3D_CONFIG_DIR")


def benchmarks_dir() -> Path:
    """The source tree's benchmarks/ folder (benchmarks are not installed with the package)."""
    from ovseg3d.errors import UserError

    path = Path(__file__).resolve().parents[2] / "benchmarks"
    if not path.is_dir():
        raise UserError("benchmarks/ is not here: `ovseg3d bench` runs from a source checkout")
    return path
