"""Furniture of the ScanNet20 classes as compositions of dense boxes, with randomized proportions.

Each builder returns meshes in the object's frame: footprint centred on the origin, resting on
z = 0, front facing -y (the back is at +y, against a wall where the object stands by one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ovseg3d.data.synth.meshes import box, merge

Mesh = tuple[np.ndarray, np.ndarray]
FLOOR = ("-z",)  # faces on the floor are never seen


@dataclass(frozen=True)
class Kind:
    """How one raw ScanNet category is built and placed."""

    category: str  # raw category name (aggregation label), mapped to NYU40 by the label TSV
    build: Callable[[np.random.Generator, float], tuple[Mesh, tuple[float, float, float]]]
    placement: str  # "wall" (back to a wall), "free", "wall_mounted" or "around_table"
    color: tuple[float, float, float]
    mount_height: tuple[float, float] = (0.0, 0.0)  # wall-mounted: bottom height range
    # wall-mounted and hanging out of the wall down to the floor (curtains): it keeps its floor,
    # and furniture against the same wall stands in front of it
    hangs: bool = False


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def chair(rng, sp):
    w, d, sh, bh, leg = _u(rng, 0.42, 0.55), _u(rng, 0.42, 0.52), _u(rng, 0.42, 0.5), _u(rng, 0.35, 0.5), 0.04
    parts = [box((0, 0, sh - 0.025), (w, d, 0.05), sp), box((0, d / 2 - 0.025, sh + bh / 2), (w, 0.05, bh), sp)]
    for x in (-1, 1):
        for y in (-1, 1):
            centre = (x * (w - leg) / 2, y * (d - leg) / 2, (sh - 0.05) / 2)
            parts.append(box(centre, (leg, leg, sh - 0.05), sp, faces_to_skip=FLOOR))
    return merge(parts), (w, d, sh + bh)


def table(rng, sp):
    w, d, h, leg = _u(rng, 1.0, 1.7), _u(rng, 0.7, 1.0), _u(rng, 0.7, 0.78), 0.06
    parts = [box((0, 0, h - 0.02), (w, d, 0.04), sp)]
    for x in (-1, 1):
        for y in (-1, 1):
            centre = (x * (w / 2 - 0.08), y * (d / 2 - 0.08), (h - 0.04) / 2)
            parts.append(box(centre, (leg, leg, h - 0.04), sp, faces_to_skip=FLOOR))
    return merge(parts), (w, d, h)


def desk(rng, sp):
    w, d, h = _u(rng, 1.1, 1.6), _u(rng, 0.55, 0.75), _u(rng, 0.72, 0.76)
    parts = [box((0, 0, h - 0.015), (w, d, 0.03), sp),
             box((-(w / 2 - 0.015), 0, (h - 0.03) / 2), (0.03, d, h - 0.03), sp, faces_to_skip=FLOOR),
             box((w / 2 - 0.015, 0, (h - 0.03) / 2), (0.03, d, h - 0.03), sp, faces_to_skip=FLOOR),
             box((0, d / 2 - 0.05, h * 0.55), (w - 0.06, 0.02, h * 0.4), sp)]
    return merge(parts), (w, d, h)


def bed(rng, sp):
    w, length, h = _u(rng, 1.0, 1.8), _u(rng, 1.95, 2.1), _u(rng, 0.4, 0.55)
    parts = [box((0, -0.04, h / 2), (w, length - 0.08, h), sp, faces_to_skip=FLOOR),
             box((0, length / 2 - 0.04, 0.5), (w + 0.04, 0.08, 1.0), sp, faces_to_skip=FLOOR)]
    return merge(parts), (w + 0.04, length, 1.0)


def sofa(rng, sp):
    w, d, sh = _u(rng, 1.6, 2.3), _u(rng, 0.8, 0.95), _u(rng, 0.38, 0.45)
    parts = [box((0, 0, sh / 2), (w, d, sh), sp, faces_to_skip=FLOOR),
             box((0, d / 2 - 0.1, sh + 0.2), (w, 0.2, 0.4), sp),
             box((-(w / 2 - 0.09), -0.1, sh + 0.11), (0.18, d - 0.2, 0.22), sp),
             box((w / 2 - 0.09, -0.1, sh + 0.11), (0.18, d - 0.2, 0.22), sp)]
    return merge(parts), (w, d, sh + 0.4)


def cabinet(rng, sp):
    w, d, h = _u(rng, 0.5, 1.2), _u(rng, 0.4, 0.6), _u(rng, 0.7, 1.2)
    return box((0, 0, h / 2), (w, d, h), sp, faces_to_skip=FLOOR), (w, d, h)


def bookshelf(rng, sp):
    w, d, h, t = _u(rng, 0.7, 1.0), _u(rng, 0.28, 0.36), _u(rng, 1.6, 2.0), 0.03
    parts = [box((-(w - t) / 2, 0, h / 2), (t, d, h), sp, faces_to_skip=FLOOR),
             box(((w - t) / 2, 0, h / 2), (t, d, h), sp, faces_to_skip=FLOOR),
             box((0, (d - 0.02) / 2, h / 2), (w - 2 * t, 0.02, h), sp),
             box((0, 0, h - t / 2), (w, d, t), sp), box((0, 0, t / 2), (w - 2 * t, d, t), sp, faces_to_skip=FLOOR)]
    n = int(rng.integers(3, 5))
    for i in range(1, n):
        parts.append(box((0, -0.01, i * h / n), (w - 2 * t, d - 0.02, 0.025), sp))
    return merge(parts), (w, d, h)


def counter(rng, sp):
    w, d, h = _u(rng, 1.5, 2.4), _u(rng, 0.58, 0.65), _u(rng, 0.88, 0.92)
    parts = [box((0, 0.03, (h - 0.04) / 2), (w, d - 0.06, h - 0.04), sp, faces_to_skip=FLOOR),
             box((0, 0, h - 0.02), (w, d, 0.04), sp)]
    return merge(parts), (w, d, h)


def refrigerator(rng, sp):
    w, d, h = _u(rng, 0.6, 0.8), _u(rng, 0.65, 0.75), _u(rng, 1.6, 1.9)
    return box((0, 0, h / 2), (w, d, h), sp, faces_to_skip=FLOOR), (w, d, h)


def toilet(rng, sp):
    w = _u(rng, 0.36, 0.42)
    parts = [box((0, -0.05, 0.2), (w, 0.5, 0.4), sp, faces_to_skip=FLOOR),
             box((0, 0.2, 0.55), (w + 0.04, 0.18, 0.35), sp)]
    return merge(parts), (w + 0.04, 0.6, 0.72)


def sink(rng, sp):
    w, d = _u(rng, 0.5, 0.65), _u(rng, 0.4, 0.5)
    parts = [box((0, 0.05, 0.35), (0.18, 0.18, 0.7), sp, faces_to_skip=FLOOR),
             box((0, 0, 0.79), (w, d, 0.18), sp)]
    return merge(parts), (w, d, 0.88)


def bathtub(rng, sp):
    w, d, h, t = _u(rng, 1.5, 1.7), _u(rng, 0.7, 0.8), _u(rng, 0.5, 0.6), 0.07
    parts = [box((0, -(d - t) / 2, h / 2), (w, t, h), sp, faces_to_skip=FLOOR),
             box((0, (d - t) / 2, h / 2), (w, t, h), sp, faces_to_skip=FLOOR),
             box((-(w - t) / 2, 0, h / 2), (t, d - 2 * t, h), sp, faces_to_skip=FLOOR),
             box(((w - t) / 2, 0, h / 2), (t, d - 2 * t, h), sp, faces_to_skip=FLOOR),
             box((0, 0, 0.05), (w - 2 * t, d - 2 * t, 0.1), sp, faces_to_skip=FLOOR)]
    return merge(parts), (w, d, h)


def ottoman(rng, sp):
    w, d, h = _u(rng, 0.4, 0.7), _u(rng, 0.4, 0.7), _u(rng, 0.35, 0.45)
    return box((0, 0, h / 2), (w, d, h), sp, faces_to_skip=FLOOR), (w, d, h)


def clutter_box(rng, sp):
    w, d, h = _u(rng, 0.2, 0.45), _u(rng, 0.2, 0.45), _u(rng, 0.15, 0.4)
    return box((0, 0, h / 2), (w, d, h), sp, faces_to_skip=FLOOR), (w, d, h)


def _panel(w_range, h_range, depth):
    def build(rng, sp):
        w, h = _u(rng, *w_range), _u(rng, *h_range)
        return box((0, 0, h / 2), (w, depth, h), sp), (w, depth, h)
    return build


# Wall-mounted objects are placed with their local origin 3 cm in front of the wall (local +y
# points at the wall), so the wall lies at local y = WALL_Y and "d cm from the wall" is WALL_Y - d.
WALL_Y = 0.03


def window(rng, sp):
    """Glazing and frame as a thin panel, with an interior sill below it standing out of the wall.

    A real window sits in the wall's thickness with a sill (stool) at the bottom of the opening,
    so the geometry alone shows where it is; a flat panel would be below the voxel size.
    """
    w, h = _u(rng, 0.8, 1.5), _u(rng, 0.9, 1.3)
    sill_depth, sill_t = _u(rng, 0.15, 0.22), 0.04
    parts = [box((0, 0, h / 2), (w, 0.05, h), sp),
             box((0, WALL_Y - sill_depth / 2, -sill_t / 2), (w + 0.1, sill_depth, sill_t), sp)]
    return merge(parts), (w + 0.1, sill_depth, h + sill_t)


def _pleated(w_range, h_range, standoff_range, fold_range, thickness=0.015):
    """Fabric hung from a rod out from the wall, in vertical folds (a zig-zag of thin strips).

    Curtains hang 10-15 cm in front of the wall, the rod's bracket depth, and never lie flat: the
    folds make a surface the geometry can tell from the wall behind it.
    """
    def build(rng, sp):
        pitch = _u(rng, 0.12, 0.16)  # width of one strip along the wall
        n = max(2, round(_u(rng, *w_range) / (2 * pitch)))  # folds; each a pair of strips
        h, standoff, fold = _u(rng, *h_range), _u(rng, *standoff_range), _u(rng, *fold_range)
        strip = float(np.hypot(pitch, fold))
        angle = float(np.arctan2(fold, pitch))
        w = 2 * n * pitch
        parts = []
        for i in range(2 * n):
            x = -w / 2 + (i + 0.5) * pitch
            yaw = angle if i % 2 == 0 else -angle  # strips alternate towards and away from the wall
            parts.append(box((x, WALL_Y - standoff, h / 2), (strip, thickness, h), sp, yaw=yaw))
        return merge(parts), (w, standoff + fold / 2 + thickness, h)
    return build


# category -> how to build and place it; the category strings are ScanNet raw categories.
KINDS: dict[str, Kind] = {k.category: k for k in [
    Kind("chair", chair, "around_table", (0.45, 0.3, 0.2)),
    Kind("table", table, "free", (0.6, 0.45, 0.3)),
    Kind("desk", desk, "wall", (0.75, 0.7, 0.62)),
    Kind("bed", bed, "wall", (0.35, 0.45, 0.65)),
    Kind("couch", sofa, "wall", (0.55, 0.2, 0.2)),
    Kind("cabinet", cabinet, "wall", (0.8, 0.75, 0.65)),
    Kind("bookshelf", bookshelf, "wall", (0.5, 0.35, 0.22)),
    Kind("counter", counter, "wall", (0.85, 0.85, 0.85)),
    Kind("refrigerator", refrigerator, "wall", (0.92, 0.93, 0.95)),
    Kind("toilet", toilet, "wall", (0.96, 0.96, 0.96)),
    Kind("sink", sink, "wall", (0.9, 0.92, 0.93)),
    Kind("bathtub", bathtub, "wall", (0.93, 0.93, 0.9)),
    Kind("ottoman", ottoman, "free", (0.3, 0.5, 0.35)),
    Kind("box", clutter_box, "free", (0.7, 0.55, 0.35)),
    Kind("door", _panel((0.8, 0.95), (2.0, 2.1), 0.04), "wall_mounted", (0.65, 0.5, 0.35), (0.0, 0.0)),
    Kind("window", window, "wall_mounted", (0.6, 0.75, 0.9), (0.8, 1.0)),
    Kind("picture", _panel((0.3, 0.9), (0.3, 0.7), 0.03), "wall_mounted", (0.8, 0.4, 0.5), (1.2, 1.5)),
    Kind("curtain", _pleated((0.8, 1.6), (1.8, 2.2), (0.10, 0.15), (0.06, 0.10)), "wall_mounted", (0.75, 0.65, 0.5),
         (0.2, 0.35), hangs=True),
    Kind("shower curtain", _pleated((0.8, 1.2), (1.6, 1.8), (0.10, 0.15), (0.04, 0.07)), "wall_mounted",
         (0.85, 0.9, 0.95), (0.3, 0.4), hangs=True),
]}

# Raw categories of the room shell, not built by a Kind.
SHELL_COLORS = {"wall": (0.86, 0.84, 0.8), "floor": (0.55, 0.42, 0.3), "ceiling": (0.93, 0.93, 0.92)}

# raw category -> (NYU40 id, NYU40 class name): the rows of our scannetv2-labels.combined.tsv.
NYU40 = {
    "wall": (1, "wall"), "floor": (2, "floor"), "cabinet": (3, "cabinet"), "bed": (4, "bed"),
    "chair": (5, "chair"), "couch": (6, "sofa"), "table": (7, "table"), "door": (8, "door"),
    "window": (9, "window"), "bookshelf": (10, "bookshelf"), "picture": (11, "picture"),
    "counter": (12, "counter"), "desk": (14, "desk"), "curtain": (16, "curtain"),
    "ceiling": (22, "ceiling"), "refrigerator": (24, "refridgerator"), "shower curtain": (28, "shower curtain"),
    "box": (29, "box"), "toilet": (33, "toilet"), "sink": (34, "sink"), "bathtub": (36, "bathtub"),
    "ottoman": (39, "otherfurniture"),
}
