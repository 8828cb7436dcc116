"""Poses from TF: tf2_ros where it is installed (robots), else our own /tf + /tf_static listener.

tf2_ros is not on PyPI, so the fallback keeps a small time-indexed buffer per frame: a transform
between two frames is composed along the tree through their common ancestor, each edge
interpolated in time (linear translation, normalised-lerp rotation) and never extrapolated beyond
``tolerance`` seconds. Static transforms hold at every time.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque

import numpy as np
from scipy.spatial.transform import Rotation

try:  # a real ROS 2 install
    import tf2_ros  # type: ignore[import-not-found]
except ImportError:  # PyPI wheels: use ours
    tf2_ros = None


def transform_to_matrix(transform) -> np.ndarray:
    """4x4 matrix of a geometry_msgs/Transform."""
    t, q = transform.translation, transform.rotation
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    T[:3, 3] = [t.x, t.y, t.z]
    return T


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_stamp(seconds: float):
    """builtin_interfaces/Time of ``seconds`` (rounded to the nanosecond)."""
    from builtin_interfaces.msg import Time

    ns = round(seconds * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class TransformBuffer:
    """Parent/child transforms over time (child -> parent maps child coordinates into parent)."""

    def __init__(self, cache_seconds: float = 10.0, tolerance: float = 0.01):
        self.cache_seconds, self.tolerance = cache_seconds, tolerance
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._times: dict[str, deque] = {}
        self._values: dict[str, deque] = {}
        self._lock = threading.Lock()

    def set(self, parent: str, child: str, stamp: float, T: np.ndarray, static: bool = False) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        with self._lock:
            self._parent[child] = parent
            if static:
                self._static[child] = T
                return
            times = self._times.setdefault(child, deque())
            values = self._values.setdefault(child, deque())
            if times and stamp < times[-1]:  # rare: keep order
                i = bisect.bisect(list(times), stamp)
                times.insert(i, stamp)
                values.insert(i, T)
            else:
                times.append(stamp)
                values.append(T)
            while times and times[0] < times[-1] - self.cache_seconds:
                times.popleft()
                values.popleft()

    def _edge(self, child: str, stamp: float) -> np.ndarray:
        if child in self._static:
            return self._static[child]
        times, values = self._times.get(child), self._values.get(child)
        if not times:
            raise LookupError(f"no transform for frame {child!r}")
        if stamp <= 0:  # "latest"
            return values[-1]
        if stamp < times[0] - self.tolerance or stamp > times[-1] + self.tolerance:
            raise LookupError(f"transform {self._parent[child]!r} <- {child!r} not available at {stamp:.3f} "
                              f"(buffer holds {times[0]:.3f}..{times[-1]:.3f})")
        i = bisect.bisect_left(list(times), stamp)
        if i == 0:
            return values[0]
        if i >= len(times):
            return values[-1]
        t0, t1 = times[i - 1], times[i]
        a = 0.0 if t1 == t0 else (stamp - t0) / (t1 - t0)
        A, B = values[i - 1], values[i]
        qa, qb = Rotation.from_matrix(A[:3, :3]).as_quat(), Rotation.from_matrix(B[:3, :3]).as_quat()
        if qa @ qb < 0:
            qb = -qb
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat((1 - a) * qa + a * qb).as_matrix()
        T[:3, 3] = (1 - a) * A[:3, 3] + a * B[:3, 3]
        return T

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent and len(chain) < 64:
            chain.append(self._parent[chain[-1]])
        return chain

    def lookup(self, target: str, source: str, stamp: float) -> np.ndarray:
        """4x4 mapping ``source`` coordinates into ``target`` at ``stamp`` (<= 0: latest)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            up_s, up_t = self._chain(source), self._chain(target)
            common = next((f for f in up_s if f in up_t), None)
            if common is None:
                raise LookupError(f"frames {target!r} and {source!r} are not connected in TF")
            root_from_source, root_from_target = np.eye(4), np.eye(4)
            for f in up_s[: up_s.index(common)]:
                root_from_source = self._edge(f, stamp) @ root_from_source
            for f in up_t[: up_t.index(common)]:
                root_from_target = self._edge(f, stamp) @ root_from_target
        return np.linalg.inv(root_from_target) @ root_from_source


class TfLookup:
    """``lookup(target, source, stamp, timeout)`` -> 4x4, waiting up to ``timeout`` seconds."""

    def __init__(self, node, cache_seconds: float = 10.0):
        self.node = node
        if tf2_ros is not None:
            from rclpy.duration import Duration

            self._tf2 = tf2_ros.Buffer(cache_time=Duration(seconds=cache_seconds))
            self._listener = tf2_ros.TransformListener(self._tf2, node)
            self._subs = []
        else:
            from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
            from tf2_msgs.msg import TFMessage

            self._tf2 = None
            self.buffer = TransformBuffer(cache_seconds)
            static_qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                    reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
            self._subs = [node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), 100),
                          node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True),
                                                   static_qos)]

    def _on_tf(self, msg, static: bool) -> None:
        for tf in msg.transforms:
            self.buffer.set(tf.header.frame_id, tf.child_frame_id, stamp_seconds(tf.header.stamp),
                            transform_to_matrix(tf.transform), static)

    def lookup(self, target: str, source: str, stamp: float, timeout: float) -> np.ndarray:
        if self._tf2 is not None:
            from rclpy.duration import Duration
            from rclpy.time import Time

            try:
                tf = self._tf2.lookup_transform(target, source, Time(nanoseconds=int(stamp * 1e9)),
                                                timeout=Duration(seconds=timeout))
            except Exception as exc:  # tf2's several exception types
                raise LookupError(str(exc)) from None
            return transform_to_matrix(tf.transform)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.buffer.lookup(target, source, stamp)
            except LookupError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def destroy(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []
