"""The node's order of time per input stream, in plain Python (tested without ROS).

A message older than the last one accepted on its stream is late (reordered in transit) and is
dropped. But a stream that stays behind, message after message, means time itself went back: a
bag restarted without /clock, a simulator reset. Then the stamp state and the TF buffer must be
cleared, as tf2 does when the ROS clock jumps back, or the node would drop everything from then on.
One stray old message cannot do that: any message accepted in between resets the count.
"""

from __future__ import annotations

import threading


class StreamOrder:
    def __init__(self, confirm_seconds: float = 1.0, confirm_count: int = 3):
        self.confirm_seconds, self.confirm_count = confirm_seconds, confirm_count
        self._last: dict[str, float] = {}  # stream -> last accepted stamp
        self._behind: dict[str, tuple[float, int]] = {}  # stream -> (wall time of the first late message, count)
        self._lock = threading.Lock()

    def check(self, stream: str, stamp: float, wall: float) -> str:
        """'ok'; 'late' (older than the last accepted stamp: drop it); or 'jump' (the stream has stayed
        behind for ``confirm_count`` messages over ``confirm_seconds`` of ``wall`` time: time went back)."""
        with self._lock:
            last = self._last.get(stream)
            if last is None or stamp >= last:
                return "ok"
            first, count = self._behind.get(stream, (wall, 0))
            self._behind[stream] = (first, count + 1)
            return "jump" if count + 1 >= self.confirm_count and wall - first >= self.confirm_seconds else "late"

    def last(self, stream: str) -> float | None:
        with self._lock:
            return self._last.get(stream)

    def accept(self, stream: str, stamp: float) -> None:
        with self._lock:
            self._last[stream] = max(stamp, self._last.get(stream, stamp))
            self._behind.pop(stream, None)

    def clear(self) -> None:
        with self._lock:
            self._last.clear()
            self._behind.clear()
