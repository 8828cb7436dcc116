"""What the node counts, in one object: /diagnostics, replay reports, the node bench and the tests
all read ``NodeStats.snapshot()``, never the node's attributes one by one.

Counters gain keys from several threads (callbacks, the ingest worker, services) while readers
iterate them, so every change and every snapshot happens under one lock. Keys are the code's own
words (topics, input kinds, rejection kinds), never input text, so the tables stay small.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

# what is timed: ingest per input kind (wall time, and the worker thread's own CPU time: *_cpu), the
# student's update, the instances' regrouping after it, a text query inside the map (query_map) and the
# whole ~/text_query service call (query: text encoder, map, answer cloud)
TIMED = ("rgbd", "lidar", "rgbd_cpu", "lidar_cpu", "update", "regroup", "query_map", "query", "autosave", "data_lag",
         "tf_lag")
NOT_QUEUED = ("rgbd_rate",)  # skipped in the callback, before the ingest queue


@dataclass(frozen=True)
class StatsSnapshot:
    received: dict[str, int]  # messages per input topic, as the callbacks saw them
    missed: dict[str, int]  # messages per input topic that never reached its callback (``SequenceGaps``)
    ingested: dict[str, int]  # inputs put into the map, per kind (rgbd, lidar)
    rejected: dict[str, int]  # inputs dropped, per kind (bad_lidar, tf, queue_full, nonfinite_points ...)
    skipped: dict[str, int]  # inputs passed over on purpose (rgbd_keyframe: not a keyframe; rgbd_rate: too
    # soon after the last one, told from the stamp in the callback, never queued)
    warned: dict[str, int]  # warnings logged per kind (the rest were throttled)
    queued: int  # inputs put on the ingest queue (RGB-D frames once matched, LiDAR sweeps)
    queue_dropped: int  # of those, dropped for newer ones when the queue was full
    queue_length: int
    camera_unmatched: int  # camera messages that never found their RGB-D partners
    published: int  # label updates published
    seconds: dict[str, list[float]] = field(default_factory=dict)  # the last timings per TIMED kind

    def mean_ms(self, kind: str, last: int = 100) -> float | None:
        values = self.seconds.get(kind, [])[-last:]
        return 1000 * float(np.mean(values)) if values else None

    def handled(self, queued_only: bool = False) -> int:
        """Inputs that reached an end: ingested, skipped (not a keyframe, or too soon: the rate cap),
        rejected, or dropped from the queue; ``queued_only``: not the rate-capped frames, which the
        callback passes over before the queue (compare with ``queued``).
        (NaN points inside a kept cloud and queue drops are counted apart.)"""
        rejected = sum(v for k, v in self.rejected.items() if k not in ("nonfinite_points", "queue_full"))
        skipped = sum(v for k, v in self.skipped.items() if not (queued_only and k in NOT_QUEUED))
        return sum(self.ingested.values()) + skipped + self.queue_dropped + rejected


class NodeStats:
    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, Counter] = {name: Counter() for name in ("received", "missed", "ingested", "rejected",
                                                                        "skipped", "warned")}
        self._seconds = {kind: deque(maxlen=1000) for kind in TIMED}
        self._published = 0
        self.queue = None  # the ingest queue and the camera sync, while the node is active: they count too
        self.sync = None

    def add(self, table: str, key: str, n: int = 1) -> int:
        """Count ``n`` under ``key`` in ``table`` (received, missed, ingested, rejected, skipped, warned); the new
        count."""
        with self._lock:
            self._counts[table][key] += n
            return self._counts[table][key]

    def time(self, kind: str, seconds: float) -> None:
        with self._lock:
            self._seconds[kind].append(seconds)

    def published(self) -> None:
        with self._lock:
            self._published += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            queue, sync = self.queue, self.sync  # (an empty queue is falsy: compare with None)
            return StatsSnapshot(**{name: dict(c) for name, c in self._counts.items()},
                                 queued=0 if queue is None else queue.pushed,
                                 queue_dropped=0 if queue is None else queue.dropped,
                                 queue_length=0 if queue is None else len(queue),
                                 camera_unmatched=0 if sync is None else sync.unmatched, published=self._published,
                                 seconds={k: list(v) for k, v in self._seconds.items()})


class SequenceGaps:
    """Messages a subscription never saw, told from the gaps in each publisher's sequence numbers
    (rmw's MessageInfo): with best-effort sensor QoS, a DDS history (``qos_depth``) overwritten while
    the executor was busy, or a message lost on the way, is otherwise silent. Cannot be told: what
    a publisher sent before the first message seen from it, and after the last. Not thread-safe:
    one callback group's callbacks call it, one at a time."""

    def __init__(self, max_publishers: int = 256):
        self._last: dict[tuple[str, bytes], int] = {}
        self._max = max_publishers  # publishers come and go: the longest unheard are forgotten

    def missed(self, topic: str, info: dict) -> int:
        """Messages of ``topic``'s publisher skipped since the last one seen (0 without sequence numbers)."""
        seq, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
        if seq is None or not gid:
            return 0
        key = (topic, bytes(gid.get("data", b"")))
        last = self._last.pop(key, None)  # re-inserted: the dict stays ordered by when each was heard
        self._last[key] = seq if last is None else max(seq, last)
        if len(self._last) > self._max:
            del self._last[next(iter(self._last))]
        return 0 if last is None or seq <= last else seq - last - 1
