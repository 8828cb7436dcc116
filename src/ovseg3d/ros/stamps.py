"""The node's order of time per input stream, in plain Python (tested without ROS).

A message older than the last one accepted on its stream is late (reordered in transit) and is
dropped. But when every stream stays behind, message after message, time itself went back: a
bag restarted without /clock, a simulator reset. Then the stamp state and the TF buffer must be
cleared, as tf2 does when the ROS clock jumps back, or the node would drop everything from then on.
Stray old messages cannot do that while the robot streams: one stream must stay behind for
``confirm_count`` messages over ``confirm_seconds``, and no stream may have been accepted meanwhile.
"""

from __future__ import annotations

import threading


class StreamOrder:
    def __init__(self, confirm_seconds: float = 1.0, confirm_count: int = 3):
        self.confirm_seconds, self.confirm_count = confirm_seconds, confirm_count
        self._last: dict[str, float] = {}  # stream -> last accepted stamp
        self._behind: dict[str, tuple[float, int]] = {}  # stream -> (wall time of the first late message, count)
        self._accepted_wall = -float("inf")  # wall time anything was last accepted, on any stream
        self._lock = threading.Lock()

    def check(self, stream: str, stamp: float, wall: float) -> tuple[str, float | None]:
        """(verdict, the stream's last accepted stamp). The verdict is 'ok'; 'late' (older than the
        last accepted stamp: drop it); or 'jump' (time went back: this stream has stayed behind for
        ``confirm_count`` messages over ``confirm_seconds`` of ``wall`` time and no stream was
        accepted in that time)."""
        with self._lock:
            last = self._last.get(stream)
            if last is None or stamp >= last:
                return "ok", last
            first, count = self._behind.get(stream, (wall, 0))
            self._behind[stream] = (first, count + 1)
            stuck = wall - max(first, self._accepted_wall) >= self.confirm_seconds
            return ("jump" if count + 1 >= self.confirm_count and stuck else "late"), last

    def accept(self, stream: str, stamp: float, wall: float) -> None:
        with self._lock:
            self._last[stream] = max(stamp, self._last.get(stream, stamp))
            self._behind.pop(stream, None)
            self._accepted_wall = wall

    def clear(self) -> None:
        with self._lock:
            self._last.clear()
            self._behind.clear()
