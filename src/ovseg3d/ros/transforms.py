"""Poses from TF: tf2_ros where it is installed (robots), else our own time-indexed buffer.

Either way the node subscribes to /tf and /tf_static itself, so every transform passes one check
where it enters (``transform_to_matrix``, ``check_frame_id`` and the node's time policy) before
any buffer stores it: a NaN, a quaternion that is not unit length, an empty or '/'-prefixed frame
id or a self-transform is refused with the kind its warning is counted under, never raised into
the executor.

The fallback buffer keeps, per child frame, its parent and either a static transform or a
time-sorted list of samples (at most ``cache_seconds`` long). A transform between two frames is
composed along the tree through their common ancestor, each edge interpolated in time (linear
translation, normalised-lerp rotation) and never extrapolated beyond ``tolerance`` seconds.
It refuses what would corrupt the tree (a cycle, re-parenting a frame whose parent link is still
current, a dynamic pose for a static frame) and bounds what it keeps (``max_frames`` frames;
dynamic frames no lookup has used go first, static ones never), so a client inventing frame
names cannot grow it without end or push out the sensors' latched static transforms.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from ovseg3d.errors import Rejected

try:  # a real ROS 2 install
    import tf2_ros  # type: ignore[import-not-found]
except ImportError:  # PyPI wheels: use ours
    tf2_ros = None

QUATERNION_TOLERANCE = 0.01  # |q|^2 may differ from 1 by this much (tf2's own tolerance); then normalised
MAX_FRAME_ID = 256  # characters


def check_frame_id(frame: str, what: str = "frame id") -> str:
    """``frame`` if it is a usable ROS 2 frame id, else ``Rejected`` saying why."""
    if not frame:
        raise Rejected("frame_id", f"{what} is empty")
    if frame.startswith("/"):
        raise Rejected("frame_id", f"{what} {frame[:MAX_FRAME_ID]!r} starts with '/': ROS 2 frame ids do not "
                                   "(tf2 refuses them too)")
    if len(frame) > MAX_FRAME_ID:
        raise Rejected("frame_id", f"{what} is {len(frame)} characters long; the limit is {MAX_FRAME_ID}")
    return frame


def transform_to_matrix(transform) -> np.ndarray:
    """4x4 matrix of a geometry_msgs/Transform; ``Rejected`` for NaN/inf or a non-unit quaternion."""
    t, q = transform.translation, transform.rotation
    values = (t.x, t.y, t.z, q.x, q.y, q.z, q.w)
    if not all(math.isfinite(v) for v in values):
        raise Rejected("tf_invalid", "transform has a NaN or infinite value")
    norm2 = q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w  # products, not **: 1e300 ** 2 raises
    if not abs(norm2 - 1.0) <= QUATERNION_TOLERANCE:
        raise Rejected("tf_invalid", f"rotation quaternion is not unit length (|q|^2 = {norm2:.4g})")
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(q.x, q.y, q.z, q.w)  # normalises the small remainder
    T[:3, 3] = [t.x, t.y, t.z]
    return T


# one pose at a time, in plain arithmetic: scipy's Rotation costs ~20 us a call in set-up alone, and a
# lookup of an interpolated edge made five of those calls (0.32 ms a lookup, on every sensor message)
def quat_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of the quaternion (x, y, z, w), normalised first."""
    n = math.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(R: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w) of a 3x3 rotation, from its largest component (stable near
    every angle: Shepperd's method)."""
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = R.tolist()
    trace = m00 + m11 + m22
    if trace >= max(m00, m11, m22):
        r = math.sqrt(1.0 + trace) * 2
        q = ((m21 - m12) / r, (m02 - m20) / r, (m10 - m01) / r, r / 4)
    elif m00 >= m11 and m00 >= m22:
        r = math.sqrt(1.0 + m00 - m11 - m22) * 2
        q = (r / 4, (m01 + m10) / r, (m02 + m20) / r, (m21 - m12) / r)
    elif m11 >= m22:
        r = math.sqrt(1.0 + m11 - m00 - m22) * 2
        q = ((m01 + m10) / r, r / 4, (m12 + m21) / r, (m02 - m20) / r)
    else:
        r = math.sqrt(1.0 + m22 - m00 - m11) * 2
        q = ((m02 + m20) / r, (m12 + m21) / r, r / 4, (m10 - m01) / r)
    n = math.sqrt(sum(v * v for v in q))
    return (q[0] / n, q[1] / n, q[2] / n, q[3] / n)


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rotation-and-translation (transpose, not a general inverse)."""
    inv = np.eye(4)
    inv[:3, :3] = T[:3, :3].T
    inv[:3, 3] = -(T[:3, :3].T @ T[:3, 3])
    return inv


def matrix_to_transform(T: np.ndarray):
    """geometry_msgs/Transform of a 4x4 matrix."""
    from geometry_msgs.msg import Transform

    tf = Transform()
    tf.translation.x, tf.translation.y, tf.translation.z = (float(v) for v in T[:3, 3])
    q = matrix_to_quat(np.asarray(T, float)[:3, :3])
    tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w = (float(v) for v in q)
    return tf


def tf_message(parent: str, child: str, stamp: float, T: np.ndarray):
    """A tf2_msgs/TFMessage holding one transform ``parent <- child`` at ``stamp``."""
    from geometry_msgs.msg import TransformStamped
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    return TFMessage(transforms=[TransformStamped(header=Header(stamp=to_stamp(stamp), frame_id=parent),
                                                  child_frame_id=child, transform=matrix_to_transform(T))])


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_stamp(seconds: float):
    """builtin_interfaces/Time of ``seconds`` (rounded to the nanosecond)."""
    from builtin_interfaces.msg import Time

    ns = round(seconds * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class TransformBuffer:
    """Parent/child transforms over time (child -> parent maps child coordinates into parent).

    What it refuses, each with the kind its warning counts under: a transform closing a cycle
    (``tf_cycle``); giving a frame another parent while its link is current (``tf_reparent``:
    static links are always current, dynamic ones while their newest sample is within
    ``cache_seconds`` of the newest stamp the buffer holds); a static transform for a frame posed
    dynamically or the reverse (``tf_conflict``: a hostile dynamic pose would otherwise replace a
    latched static one that nobody sends again); a new frame when the table is full and nothing
    may be evicted (``tf_frames``). A sample with a stamp the frame already has is ignored, as
    tf2 does (TF_REPEATED_DATA), and a frame keeps at most ``max_samples`` samples.

    Bounds: at most ``max_frames`` frames. When full, ``evict=True`` forgets a dynamic frame no
    lookup has used (least recently set first; it comes back with its next sample) or one that
    went quiet, and refuses a new name when there is none; static frames and live frames in use are
    never evicted. ``evict=False`` refuses new names at once (for a gatekeeper in front of tf2,
    which never forgets a frame).
    """

    def __init__(self, cache_seconds: float = 10.0, tolerance: float = 0.01, max_frames: int = 1000,
                 evict: bool = True, max_samples: int = 10_000):
        self.cache_seconds, self.tolerance, self.max_frames = cache_seconds, tolerance, max(1, int(max_frames))
        self.evict, self.max_samples = evict, max_samples
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._times: dict[str, list[float]] = {}
        self._values: dict[str, list[np.ndarray]] = {}
        # dynamic frames, least recently set or used first: those no lookup went through yet, and the rest
        self._unused: OrderedDict[str, None] = OrderedDict()
        self._used: OrderedDict[str, None] = OrderedDict()
        self._newest = -np.inf  # the newest dynamic stamp stored: the buffer's own "now"
        self.evicted_frames = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        # under the lock: ``set`` adds a new frame before ``_bound`` evicts one, so a read between the two
        # (the /diagnostics timer's) saw one frame over ``max_frames`` during a flood of new names
        with self._lock:
            return len(self._parent)

    def set(self, parent: str, child: str, stamp: float, T: np.ndarray, static: bool = False) -> bool:
        """Store ``parent <- child`` at ``stamp`` (``T``: a rigid 4x4, as ``transform_to_matrix`` makes:
        lookups invert it by transposing); False if it was already there (a repeated stamp),
        ``Rejected`` if it would corrupt the tree or overfill the table."""
        check_frame_id(parent, "parent frame id")
        check_frame_id(child, "child frame id")
        if parent == child:
            raise Rejected("tf_invalid", f"transform from {child!r} to itself")
        with self._lock:
            old = self._parent.get(child)
            if old is not None and old != parent and self._current(child):
                raise Rejected("tf_reparent", f"frame {child!r} already has parent {old!r}; a transform making "
                                              f"{parent!r} its parent is refused while that link is current")
            if old == parent and (child in self._static) != static and (child in self._static or self._current(child)):
                have, given = ("static", "dynamic") if child in self._static else ("dynamic", "static")
                raise Rejected("tf_conflict", f"frame {child!r} has a {have} transform; a {given} one for it is "
                                              "refused")
            if old != parent:
                if child in self._chain(parent):
                    raise Rejected("tf_cycle", f"a transform {parent!r} <- {child!r} would close a cycle "
                                               f"({' <- '.join(reversed(self._chain(parent)))} <- {child})")
                if old is None and len(self._parent) >= self.max_frames and self._evictable() is None:
                    raise Rejected("tf_frames", f"TF holds {len(self._parent)} frames (tf.max_frames); new frame "
                                                f"{child!r} refused")
                self._forget(child)
                self._parent[child] = parent
            if static:
                self._forget_samples(child)
                self._static[child] = T
                self._bound()
                return True
            self._static.pop(child, None)
            if not self._insert(child, stamp, T):
                return False
            self._newest = max(self._newest, stamp)
            self._touch(child)
            self._bound()
            return True

    def _current(self, child: str) -> bool:
        """Whether ``child``'s parent link still holds: static, or its newest sample is within the cache
        window of the newest stamp the buffer holds (never judged by the incoming stamp, which may lie)."""
        times = self._times.get(child)
        return child in self._static or (bool(times) and times[-1] >= self._newest - self.cache_seconds)

    def _insert(self, child: str, stamp: float, T: np.ndarray) -> bool:
        times = self._times.setdefault(child, [])
        values = self._values.setdefault(child, [])
        i = bisect.bisect_left(times, stamp)  # nearly always the end
        if i < len(times) and times[i] == stamp:
            return False
        times.insert(i, stamp)
        values.insert(i, T)
        old = max(bisect.bisect_left(times, times[-1] - self.cache_seconds), len(times) - self.max_samples)
        if old > 0:
            del times[:old], values[:old]
        return True

    def _touch(self, child: str, used: bool = False) -> None:
        if used or child in self._used:
            self._unused.pop(child, None)
            self._used[child] = None
            self._used.move_to_end(child)
        else:
            self._unused[child] = None
            self._unused.move_to_end(child)

    def _forget_samples(self, child: str) -> None:
        for table in (self._times, self._values, self._unused, self._used):
            table.pop(child, None)

    def _forget(self, child: str) -> None:
        self._forget_samples(child)
        self._parent.pop(child, None)
        self._static.pop(child, None)

    def _evictable(self) -> str | None:
        """The frame to forget when the table is full: a dynamic frame no lookup has used (least recently
        set first), else the least recently used one if it went quiet; never a static frame, nor a
        live frame in use (so a flood of new names cannot push the robot's own frames out)."""
        if not self.evict:
            return None
        if self._unused:
            return next(iter(self._unused))
        oldest = next(iter(self._used), None)
        return oldest if oldest is not None and not self._current(oldest) else None

    def _bound(self) -> None:
        """Above ``max_frames``: forget what ``_evictable`` offers, while it offers something."""
        while len(self._parent) > self.max_frames and (victim := self._evictable()) is not None:
            self._forget(victim)
            self.evicted_frames += 1

    def clear(self) -> None:
        """Forget every dynamic transform (a jump back in time, a map reset); static ones stay, as in tf2:
        they are published once and latched, so nobody would send them again."""
        with self._lock:
            for child in list(self._times):
                self._forget(child)
            self._newest = -np.inf

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
        i = bisect.bisect_left(times, stamp)
        if i == 0:
            return values[0]
        if i >= len(times):
            return values[-1]
        t0, t1 = times[i - 1], times[i]
        a = 0.0 if t1 == t0 else (stamp - t0) / (t1 - t0)
        A, B = values[i - 1], values[i]
        qa, qb = matrix_to_quat(A[:3, :3]), matrix_to_quat(B[:3, :3])
        sign = 1.0 if sum(u * v for u, v in zip(qa, qb)) >= 0 else -1.0  # the shorter way round
        T = np.eye(4)
        T[:3, :3] = quat_to_matrix(*((1 - a) * u + a * sign * v for u, v in zip(qa, qb)))
        T[:3, 3] = (1 - a) * A[:3, 3] + a * B[:3, 3]
        return T

    def _chain(self, frame: str) -> list[str]:
        """``frame`` and its ancestors, nearest first (the tree has no cycles: ``set`` refuses them)."""
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
        return chain

    def lookup(self, target: str, source: str, stamp: float) -> np.ndarray:
        """4x4 mapping ``source`` coordinates into ``target`` at ``stamp`` (<= 0: latest)."""
        with self._lock:
            up_s, up_t = self._chain(source), self._chain(target)
            common = next((f for f in up_s if f in up_t), None)
            if common is None:
                raise LookupError(f"frames {target!r} and {source!r} are not connected in TF")
            below_s, below_t = up_s[: up_s.index(common)], up_t[: up_t.index(common)]
            root_from_source, root_from_target = np.eye(4), np.eye(4)
            for f in below_s:
                root_from_source = self._edge(f, stamp) @ root_from_source
            for f in below_t:
                root_from_target = self._edge(f, stamp) @ root_from_target
            for f in below_s + below_t:  # in use: kept when the frame table is full
                if f in self._times:
                    self._touch(f, used=True)
        # the target is the common ancestor itself (map <- sensor: the usual case) when below_t is empty
        return rigid_inverse(root_from_target) @ root_from_source if below_t else root_from_source


class TfLookup:
    """/tf and /tf_static into a buffer, each transform checked where it enters; ``lookup(target,
    source, stamp, timeout)`` -> 4x4, waiting up to ``timeout`` seconds.

    ``check_stamp(stamp)`` is the node's time policy for dynamic transforms (it raises ``Rejected``
    for a stamp too far ahead of the clock); ``on_reject(exc)`` counts and warns. Our own
    ``TransformBuffer`` sees every transform first, in both branches, so the tree is checked the
    same way everywhere; where tf2_ros is installed it only passes on what it accepted (and, as
    tf2 never forgets a frame, refuses new names beyond ``max_frames`` instead of evicting), and
    tf2 stores, interpolates and answers lookups.
    """

    def __init__(self, node, check_stamp: Callable[[float], None], on_reject: Callable[[Rejected], None],
                 cache_seconds: float = 10.0, max_frames: int = 1000):
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage

        self.node, self._check_stamp, self._on_reject = node, check_stamp, on_reject
        self._tf2 = None
        if tf2_ros is not None:
            from rclpy.duration import Duration

            self._tf2 = tf2_ros.Buffer(cache_time=Duration(seconds=cache_seconds))
        self.buffer = TransformBuffer(cache_seconds, max_frames=max_frames, evict=self._tf2 is None)
        static_qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        group = MutuallyExclusiveCallbackGroup()  # TF never waits behind parameter or lifecycle services
        # best effort for /tf (it matches reliable publishers too): over Fast DDS's LARGE_DATA transport,
        # reliable /tf reached a busy node 0.56 s after its stamps on average, later than the data it
        # poses, so lookups timed out (186 of 353 inputs dropped in bench_node --quick); best effort:
        # 14 ms, none dropped. A lost sample is bridged by its neighbours (lookups interpolate).
        dynamic_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
        self._subs = [node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), dynamic_qos,
                                               callback_group=group),
                      node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), static_qos,
                                               callback_group=group)]

    def frames(self) -> int:
        return len(self.buffer)

    def _on_tf(self, msg, static: bool) -> None:
        for tf in msg.transforms:
            try:
                self._add(tf, static)
            except Rejected as exc:
                self._on_reject(exc)
            except Exception as exc:  # never out of a callback: that would end the executor's spin
                self._on_reject(Rejected("internal", f"unexpected error: {exc!r}"))

    def _add(self, tf, static: bool) -> None:
        stamp = stamp_seconds(tf.header.stamp)
        if not static:  # a static transform holds at every time: its stamp does not matter
            self._check_stamp(stamp)
        T = transform_to_matrix(tf.transform)
        stored = self.buffer.set(tf.header.frame_id, tf.child_frame_id, stamp, T, static)
        if stored and self._tf2 is not None:
            (self._tf2.set_transform_static if static else self._tf2.set_transform)(tf, "ovseg3d")

    def clear(self) -> None:
        """Forget dynamic transforms (static ones stay; nobody would send them again)."""
        self.buffer.clear()
        if self._tf2 is not None:
            self._tf2.clear()

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
