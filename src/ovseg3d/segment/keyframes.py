"""Which camera frames the map integrates: keyframes, as mapping systems choose them.

A 30 Hz camera on a slow robot sees nearly the same view thirty times a second; integrating every
frame costs the CPU that inference needs and adds nothing. A frame is taken when the camera has
moved or turned enough since the last one taken, or when ``max_interval`` has passed (so a still
robot still sees a person walk by), and never sooner than ``min_interval`` after the last one (a
fast robot would otherwise make every frame a keyframe: 1.5 m/s is 5 cm a frame at 30 Hz). Frames
passed over are counted as skipped, never lost to a full queue.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

TICK = 1e-3  # stamps this close count as the rate cap's interval (a 10 Hz camera's 0.0999... s)


@dataclass
class KeyframeGate:
    min_translation: float = 0.05  # metres since the last keyframe; 0 takes every frame
    min_rotation_deg: float = 5.0  # degrees of camera rotation since the last keyframe
    max_interval: float = 1.0  # seconds after which a frame is taken however still the camera is
    min_interval: float = 0.0  # seconds a frame must follow the last keyframe by however it moved (a rate cap)
    _last: tuple[np.ndarray, float] | None = field(default=None, repr=False)

    def wants(self, pose: np.ndarray, stamp: float) -> bool:
        """Whether the frame at ``pose`` (camera to map, 4x4) and ``stamp`` would be a keyframe (asked
        before its images are decoded; ``taken`` once it is in the map)."""
        if self._last is not None and too_soon(self._last[1], stamp, self.min_interval):
            return False  # however far the camera went
        if self.min_translation > 0 and self._last is not None:
            last, last_stamp = self._last
            moved = float(np.linalg.norm(pose[:3, 3] - last[:3, 3]))
            cos = (np.trace(last[:3, :3].T @ pose[:3, :3]) - 1.0) / 2.0
            turned = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
            recent = 0 <= stamp - last_stamp < self.max_interval
            if moved < self.min_translation and turned < self.min_rotation_deg and recent:
                return False
        return True

    def taken(self, pose: np.ndarray, stamp: float) -> None:
        """The frame at ``pose`` went into the map: the reference for the next ones."""
        self._last = (np.array(pose, np.float64), float(stamp))

    def take(self, pose: np.ndarray, stamp: float) -> bool:
        """``wants`` and, if so, ``taken`` at once."""
        if not self.wants(pose, stamp):
            return False
        self.taken(pose, stamp)
        return True

    def reset(self) -> None:
        self._last = None


class RateCap:
    """Frames let through at most one per ``min_interval`` of their stamps: where frames arrive,
    before any queue. (Measured from the last frame let through, not the last keyframe taken:
    while the map's worker is behind, its last keyframe is old and would let every frame through.)"""

    def __init__(self):
        self._last = -np.inf
        self._lock = threading.Lock()

    def admit(self, stamp: float, min_interval: float) -> bool:
        with self._lock:
            if too_soon(self._last, stamp, min_interval):
                return False
            self._last = stamp
            return True

    def clear(self) -> None:
        with self._lock:
            self._last = -np.inf


def too_soon(last: float, stamp: float, min_interval: float) -> bool:
    """Whether ``stamp`` follows ``last`` by less than ``min_interval`` (a stamp going back is not)."""
    return 0 <= stamp - last < min_interval - TICK
