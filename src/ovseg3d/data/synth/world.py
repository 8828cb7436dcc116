"""Procedural rooms: shell (floor, walls, ceiling) plus furniture of every ScanNet20 class.

Placement is rejection sampling of footprints on the floor (2D oriented rectangles), furniture
backs against walls where it belongs, chairs around tables, and wall-mounted items (doors,
windows, pictures, curtains) laid out along each wall without overlaps. Deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ovseg3d.data.synth.furniture import KINDS, SHELL_COLORS
from ovseg3d.data.synth.meshes import Part, grid_face


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of one synthetic room; ``test`` and ``demo`` presets below."""

    spacing: float = 0.05  # mesh vertex spacing (metres): the point density
    room_x: tuple[float, float] = (6.5, 8.5)
    room_y: tuple[float, float] = (5.5, 7.0)
    room_z: tuple[float, float] = (2.5, 2.8)
    # category -> (min, max) instances per room
    counts: dict[str, tuple[int, int]] = field(default_factory=lambda: {
        "table": (1, 2), "chair": (3, 6), "desk": (1, 1), "bed": (1, 1), "couch": (1, 1),
        "cabinet": (1, 3), "bookshelf": (1, 2), "counter": (1, 1), "refrigerator": (1, 1),
        "toilet": (1, 1), "sink": (1, 1), "bathtub": (1, 1), "ottoman": (1, 2), "box": (2, 4),
        "door": (1, 1), "window": (1, 2), "picture": (1, 3), "curtain": (1, 1), "shower curtain": (1, 1),
    })


PRESETS = {
    "test": WorldConfig(spacing=0.1),
    "demo": WorldConfig(spacing=0.05),
}


@dataclass
class Room:
    size: np.ndarray  # (3,) x, y, z extent; the room spans [0, size]
    parts: list[Part]
    instance_categories: list[str]  # raw category per instance (index = instance number)


def _rect_corners(cx, cy, w, d, yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[-w / 2, -d / 2], [w / 2, -d / 2], [w / 2, d / 2], [-w / 2, d / 2]])
    return local @ np.array([[c, s], [-s, c]]) + [cx, cy]


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quadrilaterals."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() <= pb.min() or pb.max() <= pa.min():
                return False
    return True


class _Layout:
    def __init__(self, rng: np.random.Generator, size: np.ndarray):
        self.rng, self.size = rng, size
        self.footprints: list[np.ndarray] = []
        self.wall_spans: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 2: [], 3: []}
        # per wall: (position along it, width, depth) of what hangs out of it down to the floor
        self.hanging: dict[int, list[tuple[float, float, float]]] = {0: [], 1: [], 2: [], 3: []}

    def wall_frame(self, wall: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(origin, along-wall unit vector, inward normal, wall length) of wall 0..3."""
        X, Y = self.size[0], self.size[1]
        return [
            (np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), X),  # y = 0
            (np.array([X, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), Y),  # x = X
            (np.array([X, Y]), np.array([-1.0, 0.0]), np.array([0.0, -1.0]), X),  # y = Y
            (np.array([0.0, Y]), np.array([0.0, -1.0]), np.array([1.0, 0.0]), Y),  # x = 0
        ][wall]

    def free(self, rect: np.ndarray) -> bool:
        lo, hi = rect.min(0), rect.max(0)
        if lo[0] < 0.02 or lo[1] < 0.02 or hi[0] > self.size[0] - 0.02 or hi[1] > self.size[1] - 0.02:
            return False
        return not any(_overlap(rect, f) for f in self.footprints)

    def wall_spot(self, w: float, end_margin: float):
        """A random wall and a position along it for something ``w`` wide, or None if too short."""
        wall = int(self.rng.integers(4))
        origin, along, inward, length = self.wall_frame(wall)
        if length < w + 2 * end_margin + 0.1:
            return None
        return wall, origin, along, inward, self.rng.uniform(w / 2 + end_margin, length - w / 2 - end_margin)

    def place_against_wall(self, w: float, d: float) -> tuple[float, float, float] | None:
        for _ in range(200):
            spot = self.wall_spot(w, 0.05)
            if spot is None:
                continue
            wall, origin, along, inward, s = spot
            # furniture stands in front of a curtain hanging there, not through it
            gap = max([0.02] + [hd + 0.03 for hs, hw, hd in self.hanging[wall] if abs(s - hs) < (w + hw) / 2])
            centre = origin + along * s + inward * (d / 2 + gap)
            # the object's back (+y in its frame) faces the wall: rotate +y onto -inward
            yaw = float(np.arctan2(inward[0], -inward[1]))
            rect = _rect_corners(centre[0], centre[1], w, d, yaw)
            if self.free(rect):
                self.footprints.append(rect)
                return centre[0], centre[1], yaw
        return None

    def place_free(self, w: float, d: float, margin: float = 0.5) -> tuple[float, float, float] | None:
        for _ in range(80):
            cx = self.rng.uniform(margin, self.size[0] - margin)
            cy = self.rng.uniform(margin, self.size[1] - margin)
            yaw = float(self.rng.uniform(0, 2 * np.pi))
            rect = _rect_corners(cx, cy, w + 0.3, d + 0.3, yaw)  # keep walkways between objects
            if self.free(rect):
                self.footprints.append(_rect_corners(cx, cy, w, d, yaw))
                return cx, cy, yaw
        return None

    def place_on_wall(self, w: float, z_range: tuple[float, float], floor_clearance: float = 0.0,
                      hangs: bool = False) -> tuple[float, float, float, float] | None:
        """(x, y, yaw, bottom z) of a wall-mounted object of width w.

        ``floor_clearance`` (metres out from the wall) is kept free of furniture and reserved: the
        swing of a door, or the depth of a curtain; furniture placed later against a curtain
        (``hangs``) stands in front of it.
        """
        for _ in range(60):
            spot = self.wall_spot(w, 0.15)
            if spot is None:
                continue
            wall, origin, along, inward, s = spot
            if any(abs(s - c) < (w + sw) / 2 + 0.1 for c, sw in self.wall_spans[wall]):
                continue
            pos = origin + along * s + inward * 0.03
            yaw = float(np.arctan2(inward[0], -inward[1]))
            if floor_clearance > 0:
                centre = origin + along * s + inward * (floor_clearance / 2 + 0.02)
                rect = _rect_corners(centre[0], centre[1], w, floor_clearance, yaw)
                if not self.free(rect):
                    continue
                self.footprints.append(rect)
            self.wall_spans[wall].append((s, w))
            if hangs:
                self.hanging[wall].append((s, w, floor_clearance))
            return pos[0], pos[1], yaw, float(self.rng.uniform(*z_range))
        return None


def _transform(vertices: np.ndarray, x: float, y: float, z: float, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return vertices @ R.T + np.array([x, y, z])


def _shell(size: np.ndarray, sp: float) -> list[tuple[str, tuple[np.ndarray, np.ndarray]]]:
    """Floor, ceiling and four walls, normals into the room.

    Walls stop ``inset`` short of the floor, the ceiling and each other, so no two surfaces
    share a vertex position: a real scan's corner vertex has one label, not two.
    """
    X, Y, Z = size
    e = 0.3 * sp
    ex, ey = np.array([X - 2 * e, 0, 0.0]), np.array([0, Y - 2 * e, 0.0])
    ez = np.array([0, 0, Z - 2 * e])
    return [
        ("floor", grid_face(np.zeros(3), np.array([X, 0, 0.0]), np.array([0, Y, 0.0]), sp)),
        ("ceiling", grid_face(np.array([0, 0, Z]), np.array([0, Y, 0.0]), np.array([X, 0, 0.0]), sp)),
        ("wall", grid_face(np.array([e, 0, e]), ez, ex, sp)),  # y = 0, normal +y
        ("wall", grid_face(np.array([e, Y, e]), ex, ez, sp)),  # y = Y, normal -y
        ("wall", grid_face(np.array([0, e, e]), ey, ez, sp)),  # x = 0, normal +x
        ("wall", grid_face(np.array([X, e, e]), ez, ey, sp)),  # x = X, normal -x
    ]


def generate_room(rng: np.random.Generator, cfg: WorldConfig, attempts: int = 10) -> Room:
    """One furnished room holding every required category; ``rng`` drives every random choice.

    A layout that could not place some category with a minimum count of at least one is drawn
    again (up to ``attempts`` times), so each room covers the whole label set where it fits.
    """
    required = {c for c, (lo, _) in cfg.counts.items() if lo > 0}
    room = _furnished_room(rng, cfg)
    for _ in range(attempts - 1):
        if required <= set(room.instance_categories):
            break
        room = _furnished_room(rng, cfg)
    return room


def _furnished_room(rng: np.random.Generator, cfg: WorldConfig) -> Room:
    size = np.array([rng.uniform(*cfg.room_x), rng.uniform(*cfg.room_y), rng.uniform(*cfg.room_z)])
    layout = _Layout(rng, size)
    parts: list[Part] = []
    categories: list[str] = []

    def add(category: str, mesh: tuple[np.ndarray, np.ndarray], base_color) -> None:
        if category not in SHELL_COLORS:
            mesh = _drop_faces_against_walls(*mesh, size)
        tint = rng.uniform(-0.08, 0.08, size=3)
        color = np.clip(np.asarray(base_color) + tint, 0.02, 0.98)
        parts.append(Part(vertices=mesh[0], faces=mesh[1], color=color, category=category,
                          instance=len(categories)))
        categories.append(category)

    for category, mesh in _shell(size, cfg.spacing):
        add(category, mesh, SHELL_COLORS[category])

    # What needs free floor along a wall first (doors, curtains), then wall furniture widest first,
    # free objects, chairs around tables, the other wall-mounted items (window sills are above
    # most furniture, and inside a tall piece in front where no camera sees them); every category
    # keeps its own random draws in that order.
    stage = {"wall": 1, "free": 2, "around_table": 3, "wall_mounted": 4}
    jobs = []
    for category, (lo, hi) in cfg.counts.items():
        for _ in range(int(rng.integers(lo, hi + 1))):
            mesh, dims = KINDS[category].build(rng, cfg.spacing)
            first = 0 if category == "door" or KINDS[category].hangs else stage[KINDS[category].placement]
            jobs.append((first, -dims[0] * dims[1], len(jobs), category, mesh, dims))
    jobs.sort(key=lambda j: j[:3])
    tables: list[tuple[float, float, float, tuple[float, float, float]]] = []
    for *_, category, mesh, (w, d, h) in jobs:
        kind = KINDS[category]
        if kind.placement == "wall_mounted":
            z_range = (size[2] - h - 0.05, size[2] - h - 0.02) if category == "curtain" else kind.mount_height
            # doors need free floor in front of them; a curtain needs its own depth
            clearance = 0.9 if category == "door" else (d if kind.hangs else 0.0)
            placed = layout.place_on_wall(w, z_range, floor_clearance=clearance, hangs=kind.hangs)
            if placed is None:
                continue
            x, y, yaw, z = placed
        else:
            if kind.placement == "wall":
                pose = layout.place_against_wall(w, d)
            elif kind.placement == "around_table":
                pose = _chair_pose(rng, layout, tables, w, d)
            else:
                pose = layout.place_free(w, d)
            if pose is None:
                continue
            (x, y, yaw), z = pose, 0.0
            if category == "table":
                tables.append((x, y, yaw, (w, d, h)))
        add(category, (_transform(mesh[0], x, y, z, yaw), mesh[1]), kind.color)
    return Room(size=size, parts=parts, instance_categories=categories)


def _drop_faces_against_walls(vertices: np.ndarray, faces: np.ndarray, size: np.ndarray,
                              gap: float = 0.035) -> tuple[np.ndarray, np.ndarray]:
    """Remove triangles lying flat against a wall and facing it: a scan never sees them."""
    tri = vertices[faces]
    centre = tri.mean(1)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    hidden = np.zeros(len(faces), dtype=bool)
    for axis in (0, 1):
        hidden |= (centre[:, axis] < gap) & (normal[:, axis] < 0) & (np.abs(normal[:, 1 - axis]) < 1e-9)
        hidden |= (centre[:, axis] > size[axis] - gap) & (normal[:, axis] > 0) & (np.abs(normal[:, 1 - axis]) < 1e-9)
    faces = faces[~hidden]
    used = np.unique(faces)
    remap = np.full(len(vertices), -1)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


def _chair_pose(rng, layout: _Layout, tables, w: float, d: float) -> tuple[float, float, float] | None:
    """A chair at a random side of a random table, facing it; else anywhere free."""
    for _ in range(30):
        if not tables:
            break
        tx, ty, tyaw, (tw, td, _) = tables[int(rng.integers(len(tables)))]
        side = int(rng.integers(4))
        half = (td if side in (0, 2) else tw) / 2
        along = rng.uniform(-0.25, 0.25) * (tw if side in (0, 2) else td)
        dist = half + d / 2 - 0.05
        # local offset in the table frame, then the chair faces the table centre
        local = {0: (along, -dist), 1: (dist, along), 2: (along, dist), 3: (-dist, along)}[side]
        c, s = np.cos(tyaw), np.sin(tyaw)
        cx, cy = tx + c * local[0] - s * local[1], ty + s * local[0] + c * local[1]
        yaw = float(np.arctan2(-(tx - cx), (ty - cy)) + np.pi)  # chair front (-y) towards the table
        rect = _rect_corners(cx, cy, w, d, yaw)
        if layout.free(rect):
            layout.footprints.append(rect)
            return cx, cy, yaw
    return layout.place_free(w, d)
