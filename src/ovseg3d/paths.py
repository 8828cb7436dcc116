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


MAX_PATH_PARTS = 16  # folders deep
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255  # one file or folder name (Linux NAME_MAX)


def path_inside(root: Path, name: str, what: str = "path") -> Path:
    """``root / name`` resolved, for a relative ``name`` that stays inside ``root``.

    A name sent by a client (the node's save and load services) is checked as text before the
    filesystem sees it: empty, absolute, '..', control characters, too deep or too long are each
    one clear error (a name 10,000 folders deep would otherwise exhaust the recursion of mkdir).
    After that, resolving follows symbolic links, and a link that points out of ``root`` is refused too.
    """
    from pathlib import PurePosixPath

    from ovseg3d.errors import UserError

    name = name.strip()
    if not name:
        raise UserError(f"{what} is empty")
    if any(ord(c) < 32 for c in name):
        raise UserError(f"{what} contains control characters")
    if len(name) > MAX_PATH_CHARS:
        raise UserError(f"{what} is {len(name)} characters long; the limit is {MAX_PATH_CHARS}")
    pure = PurePosixPath(name)
    root = Path(root).expanduser().resolve()
    if pure.is_absolute() or ".." in pure.parts:
        raise UserError(f"{what} {name[:80]!r} leaves the allowed folder {root}; give a name inside it")
    if len(pure.parts) > MAX_PATH_PARTS:
        raise UserError(f"{what} is {len(pure.parts)} folders deep; the limit is {MAX_PATH_PARTS}")
    if any(len(part.encode()) > MAX_NAME_BYTES for part in pure.parts):
        raise UserError(f"{what} has a file or folder name longer than {MAX_NAME_BYTES} bytes")
    target = (root / pure).resolve()
    if root not in target.parents:
        raise UserError(f"{what} {name[:80]!r} leads out of the allowed folder {root}; give a name inside it")
    return target
