"""Bounded drop-oldest queues and approximate-time matching of camera streams (no message_filters
on PyPI). Both are plain Python, so they are tested without ROS."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class DropOldestQueue:
    """A bounded queue for a worker: when full, the oldest item is dropped and counted, so a slow
    worker always sees the newest data and memory stays bounded."""

    def __init__(self, maxsize: int):
        self._items: deque = deque()
        self.maxsize = max(1, int(maxsize))
        self.dropped = 0
        self.pushed = 0
        self._cond = threading.Condition()

    def put(self, item: Any) -> bool:
        """Add ``item``; returns False when an older item had to be dropped for it."""
        with self._cond:
            dropped = False
            while len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
            self.pushed += 1
            self._cond.notify()
            return not dropped

    def get(self, timeout: float) -> Any | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class ApproximateSync:
    """Match one message from each of ``n`` streams whose stamps lie within ``slop`` seconds.

    Each stream keeps its last ``queue_size`` messages. When a message arrives, the newest message
    of every other stream nearest in time is looked up; if all lie within ``slop`` of it, the set is
    returned and everything up to it is discarded. Messages that never match age out and are
    counted in ``unmatched``.
    """

    def __init__(self, n: int, slop: float, queue_size: int = 10):
        self.slop, self.queue_size = slop, max(1, queue_size)
        self._queues: list[deque] = [deque() for _ in range(n)]
        self.unmatched = 0
        self._lock = threading.Lock()

    def add(self, stream: int, stamp: float, msg: Any) -> tuple | None:
        with self._lock:
            q = self._queues[stream]
            q.append((stamp, msg))
            while len(q) > self.queue_size:
                q.popleft()
                self.unmatched += 1
            picks = []
            for i, other in enumerate(self._queues):
                if i == stream:
                    picks.append(len(q) - 1)
                    continue
                if not other:
                    return None
                j = min(range(len(other)), key=lambda k: abs(other[k][0] - stamp))
                if abs(other[j][0] - stamp) > self.slop:
                    return None
                picks.append(j)
            matched = tuple(self._queues[i][j][1] for i, j in enumerate(picks))
            for i, j in enumerate(picks):
                self.unmatched += j  # older messages skipped over
                for _ in range(j + 1):
                    self._queues[i].popleft()
            return matched

    def clear(self) -> None:
        with self._lock:
            for q in self._queues:
                q.clear()
