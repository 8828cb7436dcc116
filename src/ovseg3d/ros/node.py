"""The ovseg3d perception node: a thin ROS 2 lifecycle adapter over ``LiveSegmenter``.

configure: load the student and the vocabulary, create publishers.  activate: TF, subscriptions,
services and the two workers.  deactivate / cleanup: the reverse. Subscription callbacks only
match and enqueue messages; the ingest worker decodes and inserts them, the inference worker runs
the student at ``inference.rate_hz`` and publishes. Bad data never stops the node: it is dropped
with a warning throttled per kind (the counts are in /diagnostics and ``self.stats``), and
every callback, service and worker is guarded so that even an error nobody foresaw is a warning,
not the end of the process.

Time: a stamp more than ``time.max_future`` ahead of the node's clock is refused (data and TF),
so one bad stamp cannot become the "last accepted" one that every later message is older than.
When time goes back (the ROS clock jumps back, or a stream stays behind its last accepted stamp:
a bag restarted, a simulator reset) the TF buffer, the stamp order and the camera sync are
cleared with a warning, as tf2 does; ``~/reset_map`` clears them too.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from ovseg3d.errors import Rejected, Skipped, UserError
from ovseg3d.geometry.camera import check_registered
from ovseg3d.paths import path_inside
from ovseg3d.ros import outputs, params
from ovseg3d.ros.compressed import compressed_color, compressed_depth, warm_up_decoders
from ovseg3d.ros.images import camera_matrix, color_image, depth_image
from ovseg3d.ros.pointcloud2 import xyz_from_pointcloud2
from ovseg3d.ros.stamps import StreamOrder
from ovseg3d.ros.stats import NodeStats, SequenceGaps
from ovseg3d.ros.sync import ApproximateSync, DropOldestQueue
from ovseg3d.ros.transforms import TfLookup, check_frame_id, stamp_seconds, to_stamp
from ovseg3d.segment.keyframes import RateCap
from ovseg3d_interfaces.srv import LoadMap, SaveMap, SetVocabulary, TextQuery

AUTOSAVE = "autosave"  # map.autosave_period writes save_dir/autosave.{npz,ply}
TRANSPORTS = {"rgb.transport": ("raw", "compressed"), "depth.transport": ("raw", "compressedDepth")}


def _decoded(decode: Callable, msg: CompressedImage):
    """A compressed image decoded; bad bytes, headers or formats are a counted ``bad_compressed``."""
    try:
        return decode(msg.format, msg.data)
    except UserError as exc:
        raise Rejected("bad_compressed", f"dropped an RGB-D frame: {exc}") from None

SEMANTIC, INSTANCES = frozenset({"semantic"}), frozenset({"instance"})  # the outputs publish_outputs makes: the
#                       labelled points; the instance points and their markers

class _Helper(ThreadPoolExecutor):
    """One thread that counts the CPU time of what it runs (``cpu_s``): an input's ingest CPU time
    is the worker's and its helper's together. Only the ingest worker submits, and it waits for
    its calls before it reads the count."""

    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="ovseg3d-ingest-helper")
        self.cpu_s = 0.0

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(self._timed, fn, *args, **kwargs)

    def _timed(self, fn, *args, **kwargs):
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.cpu_s += time.thread_time() - t0


def _ingest_helper() -> _Helper | None:
    """A second thread for the ingest worker where a second core is there to run it: a keyframe's
    colour JPEG is decoded on it while the worker decodes the depth, and half of the frame is
    reduced to voxels on it (``LiveSegmenter.add_rgbd``). The decoders and the reduction release
    the GIL, so the two threads' halves run at once (2-minute replays: 16-20 -> 12-13 ms a keyframe)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return _Helper() if cores >= 2 else None


class CheckedFrame(NamedTuple):
    """A matched camera frame after the callback's checks: stamp, intrinsics, raw images (None if compressed)."""

    stamp: float
    K: np.ndarray
    depth: np.ndarray | None
    rgb: np.ndarray | None


# Requests a service keeps while the executor is busy (rclpy's default is 10: the 11th of a burst of
# concurrent queries was silently lost and its client waited forever).
SERVICE_QOS = QoSProfile(depth=100)
# How long a Python thread may keep the GIL while another waits for it (CPython's default: 5 ms).
# The ingest worker gives the GIL up in every compiled or numpy call and waited up to this long to
# get it back from the executor's and the student's Python each time: on 2 cores a 30 Hz camera's
# keyframe took 71 ms instead of ~15 and the queue overflowed. At 1 ms: 27 ms, no queue losses
# (``bench node``, 2 minutes); the student's update got faster too. At 0.25 ms the worker's wall time
# per keyframe fell from 1.56-1.68 to 1.34-1.39 times its own CPU time (2-minute A/B, two rounds
# each; a lower priority for the update thread -- nice 19, SCHED_IDLE -- did less and slowed the update).
GIL_SWITCH_INTERVAL_S = 0.00025
_frozen_lock = threading.Lock()
_frozen_nodes = [0]  # active nodes of this process that froze the collector's view (gc.freeze)


def _freeze_long_lived() -> None:
    """Move the objects alive now (student, text encoder, CLIP, rclpy) out of the cyclic collector's
    sight: they live as long as the node, and every full collection scanned them. Before, each held
    the GIL -- ingest and callbacks too -- for 112 ms on average (max 178, every ~7 s); after, 10 ms
    (bench node, 2 minutes)."""
    with _frozen_lock:
        gc.collect()
        gc.freeze()
        _frozen_nodes[0] += 1


def _thaw() -> None:
    """Undo ``_freeze_long_lived`` once no active node of this process needs it (process-wide): a
    cleanup may then drop a student whose cycles must be collectable again."""
    with _frozen_lock:
        _frozen_nodes[0] = max(0, _frozen_nodes[0] - 1)
        if _frozen_nodes[0] == 0:
            gc.unfreeze()


class PerceptionNode(LifecycleNode):
    # rclpy's Node keeps its own state in underscore attributes (_services, _subscriptions, _timers,
    # ...) that its executor and its parameter and lifecycle services use: ours are named apart.
    def __init__(self, node_name: str = "ovseg3d", **kwargs):
        super().__init__(node_name, **kwargs)
        # for the whole process: it hosts the node
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        params.declare(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = NodeStats()  # everything the node counts: diagnostics, replay, benchmarks and tests read it
        self._warn_lock = threading.Lock()
        self.live = None
        self._threads_before: int | None = None  # torch's CPU threads before activate set the student's
        self._on_cpu = False
        self.text_encoder = None
        self.label_set = None
        self._last_warn: dict[str, float] = {}
        self._order = StreamOrder()
        self._rate_cap = RateCap()  # rgbd.keyframe_min_interval, applied in the camera callback
        self._generation = 0  # counts map resets: an input taken before one is not inserted after it
        self._taken_in = 0  # the generation the ingest worker's current input was queued in
        self._clock_seen = -np.inf  # the node's clock when last read, to notice it going back
        self._clock_lock = threading.Lock()
        self._colors: tuple[tuple[str, ...], np.ndarray] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._helper: _Helper | None = None  # the ingest worker's second thread (``_ingest_helper``)
        self._subs, self._srvs, self._pubs = [], [], {}
        self._tf = None
        self._diag_timer = None
        self.finished = Future()  # done once the node is finalized (the lifecycle shutdown transition)
        self._published_version = -1
        self._labels_stamp = 0.0
        self._saved_version = -1  # the map version the last autosave wrote
        self._autosave_lock = threading.Lock()  # one autosave at a time (the worker and deactivate)

    # ------------------------------------------------------------------ helpers
    def p(self, name: str):
        return self.get_parameter(name).value

    def warn(self, kind: str, text: str) -> None:
        """Count a dropped input and log it at most once per ``warn_throttle`` seconds per kind.
        (The kinds are the code's own words, never input text: the tables stay small.)"""
        now = time.monotonic()
        dropped = self.stats.add("rejected", kind)
        with self._warn_lock:
            log = now - self._last_warn.get(kind, -np.inf) >= self.p("warn_throttle")
            if log:
                self._last_warn[kind] = now
        if log:
            self.stats.add("warned", kind)
            self.get_logger().warning(f"{text} [{kind}: {dropped} dropped so far]")

    def _guarded(self, callback: Callable, what: str) -> Callable:
        """``callback`` for the executor: a rejection is a counted warning, and any other error too
        (an exception escaping a callback would end the executor's spin, and with it the process)."""

        @functools.wraps(callback)
        def call(*args):
            try:
                return callback(*args)
            except Rejected as exc:
                self.warn(exc.kind, f"dropped a {what} message: {exc}")
            except Exception as exc:
                self.warn("internal", f"{what}: unexpected error, input dropped: {exc!r}")
            return None

        return call

    def _service(self, handler: Callable, name: str) -> Callable:
        """``handler`` as a service callback: a ``UserError`` is the answer's message, and an
        unexpected error is too (counted and warned), so every request gets an answer."""

        @functools.wraps(handler)
        def call(request, response):
            try:
                return handler(request, response)
            except UserError as exc:
                response.success, response.message = False, str(exc)
            except Exception as exc:
                self.warn("internal", f"{name}: unexpected error: {exc!r}")
                response.success, response.message = False, f"internal error: {exc!r}"
            return response

        return call

    # ------------------------------------------------------------------ time
    def _now(self) -> float:
        """The node's clock in seconds (ROS time: /clock with use_sim_time), noticing jumps back."""
        with self._clock_lock:  # read inside: two threads reading outside could store their times out of order
            now = self.get_clock().now().nanoseconds * 1e-9
            went_back = now < self._clock_seen
            before, self._clock_seen = self._clock_seen, now
        if went_back:
            self._time_jump(f"the node's clock went back {before - now:.3f} s (a bag restarted with --clock, "
                            "a simulator reset?)")
        return now

    def _admit(self, stamp: float, lag: str = "data_lag") -> None:
        """The time policy for a stamp entering the node (data, dynamic TF): refused if zero or
        negative (unstamped: it cannot be posed in time; TF would answer with the latest pose) or too
        far ahead of the clock. (A clock at zero has not started: sim time before the first /clock.)
        How long after its stamp it arrived is timed under ``lag`` (/diagnostics: a TF that comes
        later than the data it poses is why lookups time out)."""
        if not stamp > 0:
            raise Rejected("bad_stamp", f"stamp {stamp:.3f} is not a time (zero or negative: unstamped?)")
        now = self._now()
        if now > 0:
            self.stats.time(lag, max(0.0, now - stamp))
        if now > 0 and stamp > now + self.p("time.max_future"):
            raise Rejected("future_stamp", f"stamp {stamp:.3f} is {stamp - now:.3f} s ahead of the node's clock "
                                           f"(time.max_future = {self.p('time.max_future')} s)")

    def _clear_time_state(self) -> None:
        """Forget what ties the node to past stamps: dynamic TF, the stamp order, unmatched camera messages."""
        self._order.clear()
        self._rate_cap.clear()
        if self._tf is not None:
            self._tf.clear()
        if getattr(self, "sync", None) is not None:
            self.sync.clear()

    def _time_jump(self, reason: str) -> None:
        self._clear_time_state()
        self.warn("time_jump", f"{reason}: cleared the TF buffer, the stamp order and the camera sync")

    def caught_up(self) -> bool:
        """Nothing queued, every change of the map labelled (none waiting, none being labelled), and
        the last update published."""
        return len(self.queue) == 0 and self.live.idle() and self._published_version == self.live.version

    def _on_set_parameters(self, changes) -> SetParametersResult:
        """Checks a set as a whole (rclpy has already checked types, ranges and read-only): the live
        map's config must stay valid with every change of the request applied together."""
        values = params.values(self)
        values.update({c.name: c.value for c in changes})
        try:
            cfg = params.live_config(values)
            live = self.live
            if live is not None:
                self._apply(live, cfg, {c.name: c.value for c in changes})
        except UserError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        except Exception as exc:  # an exception here would escape rclpy's parameter service
            self.warn("internal", f"set_parameters: unexpected error: {exc!r}")
            return SetParametersResult(successful=False, reason=f"internal error: {exc!r}")
        return SetParametersResult(successful=True)

    def _apply(self, live, cfg, changed: dict) -> None:
        """Take parameter changes live: the map's config (one reference swapped, so no lock: a service
        must not wait for a map save or a relabel), the queue and sync bounds, the diagnostics period."""
        live.cfg = cfg
        live.map.extent = cfg.extent or None
        if self._threads:  # active: the queue, the sync and the timer exist
            if "queue_size" in changed:
                self.queue.maxsize = changed["queue_size"]
            if "sync.slop" in changed:
                self.sync.slop = changed["sync.slop"]
            if "sync.queue_size" in changed:
                self.sync.queue_size = changed["sync.queue_size"]
            if "diagnostics.period" in changed and self._diag_timer is not None:
                self.destroy_timer(self._diag_timer)
                self._diag_timer = self.create_timer(changed["diagnostics.period"],
                                                     self._guarded(self._publish_diagnostics, "diagnostics"))

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:  # the imports too: an error there would otherwise fail the transition without a word
            from ovseg3d.pipelines.context import load_context
            from ovseg3d.segment.live_map import LiveSegmenter

            if not self.p("checkpoint"):
                raise UserError("parameter 'checkpoint' is empty: give the student checkpoint file")
            ctx = load_context(Path(self.p("checkpoint")), device=self.p("device"),
                               label_set=self.p("label_set") or None,
                               vocabulary_file=Path(self.p("vocabulary_file")) if self.p("vocabulary_file") else None,
                               clip_model=self.p("clip.model"), clip_weights=self.p("clip.pretrained") or None,
                               templates=tuple(self.p("prompt_templates")), clip_from_checkpoint=False,
                               load_labels=not self.p("vocabulary_file"))
            student, vocab, device = ctx.student, ctx.vocab, ctx.device
            self._on_cpu = device.type == "cpu"
            self.templates, self.text_encoder = ctx.templates, ctx.text_encoder
            self.label_set = ctx.labels
            for name, choices in TRANSPORTS.items():
                if self.p(name) not in choices:
                    raise UserError(f"{name} must be one of {', '.join(choices)}, got {self.p(name)!r}")
            if student.cfg.reads_color and not self.p("camera.color"):
                raise UserError(f"this student reads colour (input: {student.cfg.input}) but camera.color is false; "
                                "subscribe to the colour stream or use a geometry-only student")
            cfg = params.live_config(params.values(self))
            self.live = LiveSegmenter(student, vocab, cfg)
            self._restore_map()
            # first calls cost tenths of a second to seconds: here, not on the first sensor frames
            # (they stalled ingest 1.2 s and lost 12 inputs to the queue in a 2-minute bench node run)
            warm_up_decoders()
            warm = self.live.warm_up()
        except Exception as exc:  # rclpy would swallow it silently and report only "failure"
            self.live = None  # half configured: nothing to publish, and nothing an autosave may write over
            text = str(exc) if isinstance(exc, UserError) else f"unexpected error: {exc!r}"
            self.get_logger().error(f"configure failed: {text}")
            return TransitionCallbackReturn.FAILURE
        self._pubs = {
            "semantic": self.create_lifecycle_publisher(PointCloud2, "semantic_points", 2),
            "instance": self.create_lifecycle_publisher(PointCloud2, "instance_points", 2),
            "markers": self.create_lifecycle_publisher(MarkerArray, "instances", 2),
            "query": self.create_lifecycle_publisher(PointCloud2, "query_points", 2),
            "diagnostics": self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10),
        }
        self.get_logger().info(f"configured: student {student.cfg.arch} on {device}, {len(vocab)} labels, "
                               f"map voxels {cfg.voxel_size} m (student warmed up in {warm:.2f} s)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._stop.clear()
        self.queue = DropOldestQueue(self.p("queue_size"))
        streams = self.camera_streams()
        self._camera_roles = tuple(role for role, _, _ in streams)
        self._camera_topics = self.camera_topics(streams)
        self.sync = ApproximateSync(len(self._camera_topics), self.p("sync.slop"), self.p("sync.queue_size"))
        self.stats.queue, self.stats.sync = self.queue, self.sync
        self._order.clear()
        self._rate_cap.clear()
        self._tf = TfLookup(self, functools.partial(self._admit, lag="tf_lag"),
                            lambda exc: self.warn(exc.kind, f"dropped a transform: {exc}"),
                            max_frames=self.p("tf.max_frames"))
        sensors = MutuallyExclusiveCallbackGroup()
        qos = QoSProfile(depth=self.p("qos_depth"), reliability=qos_profile_sensor_data.reliability,
                         durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)

        gaps = SequenceGaps()  # new subscriptions: what was sent while inactive is not missed

        def sub(cls, topic, callback):
            def counted(msg, info) -> None:  # rclpy passes the MessageInfo to a callback that takes two
                if missed := gaps.missed(topic, info):
                    self.stats.add("missed", topic, missed)
                callback(msg)

            return self.create_subscription(cls, topic, self._guarded(counted, topic), qos, callback_group=sensors)

        def message_class(role: str, transport: str):
            return CameraInfo if role.endswith("info") else Image if transport == "raw" else CompressedImage

        self._subs = [sub(message_class(role, transport), topic, functools.partial(self._on_camera, i))
                      for i, ((role, _, transport), topic) in enumerate(zip(streams, self._camera_topics))]
        self._subs.append(sub(PointCloud2, "lidar/points", self._on_lidar))
        services = ReentrantCallbackGroup()

        def srv(cls, name, handler):
            return self.create_service(cls, name, self._service(handler, name), qos_profile=SERVICE_QOS,
                                       callback_group=services)

        self._srvs = [srv(TextQuery, "~/text_query", self._text_query),
                      srv(SetVocabulary, "~/set_vocabulary", self._set_vocabulary),
                      srv(Trigger, "~/reset_map", self._reset_map),
                      srv(SaveMap, "~/save_map", self._save_map),
                      srv(LoadMap, "~/load_map", self._load_map)]
        self._diag_timer = self.create_timer(self.p("diagnostics.period"),
                                             self._guarded(self._publish_diagnostics, "diagnostics"))
        if self._on_cpu:
            self._cpu_threads(self.p("inference.threads"))
        self._threads = [threading.Thread(target=self._ingest_loop, name="ovseg3d-ingest", daemon=True),
                         threading.Thread(target=self._inference_loop, name="ovseg3d-inference", daemon=True),
                         threading.Thread(target=self._autosave_loop, name="ovseg3d-autosave", daemon=True)]
        self._helper = _ingest_helper()
        _freeze_long_lived()
        for t in self._threads:
            t.start()
        return super().on_activate(state)

    def camera_streams(self) -> list[tuple[str, str, str]]:
        """(role, topic, transport) of the camera streams matched by stamp, as the parameters choose
        them: colour is optional (the default student reads geometry); depth not registered to the
        colour camera brings its own CameraInfo; a compressed stream is image_transport's."""
        color, registered = self.p("camera.color"), self.p("depth.registered")
        streams = [("rgb", "rgb/image", self.p("rgb.transport"))] if color else []
        streams.append(("depth", "depth/image", self.p("depth.transport")))
        streams.append(("info", "rgb/camera_info" if registered else "depth/camera_info", "raw"))
        if color and not registered:
            streams.append(("rgb_info", "rgb/camera_info", "raw"))
        return streams

    def camera_topics(self, streams: list[tuple[str, str, str]] | None = None) -> tuple[str, ...]:
        """The subscribed names of ``camera_streams`` (compressed: <base topic, remapped>/<transport>)."""
        return tuple(topic if transport == "raw" else f"{self.resolve_topic_name(topic)}/{transport}"
                     for _, topic, transport in (streams or self.camera_streams()))

    def _release_active(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        if self._threads:
            _thaw()
        self._threads = []
        if self._helper is not None:
            self._helper.shutdown(wait=True)
            self._helper = None
        self._restore_threads()
        if self.live is not None and self.p("map.autosave_period") > 0:
            self._autosave()  # what changed since the last period is not lost to a clean stop
        for s in self._subs:
            self.destroy_subscription(s)
        for s in self._srvs:
            self.destroy_service(s)
        self._subs, self._srvs = [], []
        if self._tf is not None:
            self._tf.destroy()
            self._tf = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._release_active()
        return super().on_deactivate(state)

    def _cpu_threads(self, threads: int) -> None:
        """The student's torch threads: on 2 cores, a student on both starved the ingest worker
        (bench node, 30 Hz RGB-D: ingest 54 -> 43 ms a frame, latency 2.3 -> 1.9 s with one, and the
        update itself was no slower). Process-wide in torch, so only while active: the count before is
        put back on deactivate (a replay or a test runs the node inside its own process)."""
        import torch

        if self._threads_before is None:
            self._threads_before = torch.get_num_threads()
        torch.set_num_threads(threads or max(1, self._threads_before - 1))

    def _lower_own_priority(self, nice: int) -> None:
        """Renice the calling thread (Linux: niceness is per thread, and lowering one's own priority
        needs no privilege). The student's update is throughput work that can wait; the sensor
        callbacks and the ingest worker are not, and on 2 cores they shared the CPU with it evenly."""
        if nice <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
        except OSError as exc:
            self.get_logger().warning(f"could not lower the update thread's priority: {exc}")

    def _student_threads(self) -> int:
        """torch's CPU threads while the student runs on the CPU (0: it runs elsewhere)."""
        if not self._on_cpu:
            return 0
        import torch

        return torch.get_num_threads()

    def _restore_threads(self) -> None:
        if self._threads_before is not None:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self.live = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._release_active()
        self.finished.set_result(True)
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ inputs (callbacks: enqueue only)
    def _on_camera(self, stream: int, msg) -> None:
        self.stats.add("received", self._camera_topics[stream])
        stamp = stamp_seconds(msg.header.stamp)
        self._admit(stamp)
        match = self.sync.add(stream, stamp, msg)
        if match is None:
            return
        frame = dict(zip(self._camera_roles, match))
        try:
            checked = self._checked_frame(frame)  # a malformed frame is counted as such, capped or not
        except Rejected:
            raise
        except UserError as exc:
            raise Rejected("bad_rgbd", f"its RGB-D frame is bad: {exc}") from None
        if not self._rate_cap.admit(checked.stamp, self.live.cfg.keyframe_min_interval):
            # the rate cap from the stamp alone, before the queue: a 30 Hz camera's frames between
            # keyframes take no queue slot (they were most of the queue's losses on 2 cores). Not
            # accepted into the stamp order: the frames still queued before it are older
            self.stats.add("skipped", "rgbd_rate")
            return
        if not self.queue.put(("rgbd", (frame, checked), self._generation)):
            self.warn("queue_full", "ingest queue full: dropped the oldest input (the worker is too slow)")

    def _on_lidar(self, msg: PointCloud2) -> None:
        self.stats.add("received", "lidar/points")
        self._admit(stamp_seconds(msg.header.stamp))
        if not self.queue.put(("lidar", msg, self._generation)):
            self.warn("queue_full", "ingest queue full: dropped the oldest input (the worker is too slow)")

    # ------------------------------------------------------------------ workers
    def _ingest_loop(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.1)
            if item is None:
                continue
            kind, payload, self._taken_in = item
            t0, cpu0 = time.perf_counter(), time.thread_time() + self._helper_cpu()
            try:
                self._ingest_rgbd(*payload) if kind == "rgbd" else self._ingest_lidar(payload)
            except Skipped as exc:
                self.stats.add("skipped", f"{kind}_{exc}")
                continue
            except Rejected as exc:
                self.warn(exc.kind, str(exc))
                continue
            except UserError as exc:
                self.warn(f"bad_{kind}", f"dropped a {kind} message: {exc}")
                continue
            except Exception as exc:  # never let one message stop the worker
                self.warn("internal", f"dropped a {kind} message after an unexpected error: {exc!r}")
                continue
            self.stats.time(kind, time.perf_counter() - t0)
            # this thread's and its helper's CPU time: where it is below the wall time, the worker
            # waited (for a core or the GIL); above it, the helper ran beside it
            self.stats.time(f"{kind}_cpu", time.thread_time() + self._helper_cpu() - cpu0)
            self.stats.add("ingested", kind)

    def _helper_cpu(self) -> float:
        return 0.0 if self._helper is None else self._helper.cpu_s

    def _check_order(self, stream: str, stamp: float) -> None:
        """Older than the last accepted message of its stream: dropped (TF would not have it anyway),
        unless the stream has stayed behind long enough to mean that time went back."""
        verdict, last = self._order.check(stream, stamp, time.monotonic())
        if verdict == "late":
            raise Rejected("out_of_order", f"{stream} message stamped {stamp:.3f} is older than the last one "
                                           f"({last:.3f}); dropped")
        if verdict == "jump":
            self._time_jump(f"{stream} stamps went back {last - stamp:.3f} s and every stream stayed behind (a bag "
                            "restarted without --clock?)")

    def _check_generation(self) -> None:
        if self._taken_in != self._generation:
            raise Rejected("before_reset", "dropped an input taken before a map reset")

    def _pose(self, frame: str, stamp: float) -> np.ndarray:
        if not frame:
            raise Rejected("no_frame", "message has an empty header.frame_id; dropped")
        check_frame_id(frame, "header.frame_id")
        try:
            return self._tf.lookup(self.p("map_frame"), frame, stamp, self.p("tf.timeout"))
        except LookupError as exc:
            raise Rejected("tf", f"no transform {self.p('map_frame')!r} <- {frame!r} at {stamp:.3f}: {exc}") from None

    def _checked_frame(self, frame: dict) -> CheckedFrame:
        """The cheap checks of a matched camera frame (in the callback, before the rate cap): its
        CameraInfo, and raw images (a compressed one is decoded only if it becomes a keyframe)."""
        depth_msg, info, rgb_msg = frame["depth"], frame["info"], frame.get("rgb")
        K = camera_matrix(info)
        depth = None if isinstance(depth_msg, CompressedImage) else self._sized(depth_image(depth_msg), info)
        rgb = None if rgb_msg is None or isinstance(rgb_msg, CompressedImage) else color_image(rgb_msg)
        return CheckedFrame(stamp_seconds(depth_msg.header.stamp), K, depth, rgb)

    def _ingest_rgbd(self, frame: dict, checked: CheckedFrame) -> None:
        """One matched camera frame: ``depth`` and its ``info``; ``rgb`` when colour is on, with
        ``rgb_info`` when the depth is not registered to it (colour then comes through TF).

        Cheap first, so a 30 Hz camera costs little beyond its keyframes: the callback checked the
        raw images and CameraInfo and applied the keyframe rate cap; here the stamp order, the
        pose and the keyframe gate; only then compressed images are decoded and the frame is
        back-projected."""
        depth_msg, info, rgb_msg = frame["depth"], frame["info"], frame.get("rgb")
        stamp, K, depth, rgb = checked
        self._check_order("rgbd", stamp)
        pose = self._pose(depth_msg.header.frame_id or info.header.frame_id, stamp)
        self._check_generation()
        if not self.live.is_keyframe(pose, stamp):  # checked like any frame, then passed over on purpose
            self._order.accept("rgbd", stamp, time.monotonic())
            raise Skipped("keyframe")
        decode_color = None
        if rgb is None and rgb_msg is not None:
            # registered colour is read at every depth.stride-th depth pixel only: a JPEG is decoded
            # no larger than that needs (a projected one, its own camera, is read anywhere: whole)
            stride = self.live.cfg.depth_stride
            grid = None if "rgb_info" in frame else (-(-info.width // stride), -(-info.height // stride))
            decode_color = functools.partial(_decoded, functools.partial(compressed_color, at_least=grid), rgb_msg)
        # the colour on the helper thread while this one decodes the depth (neither holds the GIL)
        pending = self._helper.submit(decode_color) if decode_color and self._helper else None
        try:
            if depth is None:
                depth = self._sized(_decoded(compressed_depth, depth_msg), info)
        finally:
            if pending is not None:
                wait([pending])  # a dropped frame never leaves the helper decoding
        if decode_color is not None:
            rgb = decode_color() if pending is None else pending.result()
        color_camera = None
        if rgb is not None and "rgb_info" in frame:  # not registered: the colour camera's own intrinsics
            rgb_info = frame["rgb_info"]
            if (rgb_info.width, rgb_info.height) != (rgb.shape[1], rgb.shape[0]):
                raise Rejected("camera_mismatch", f"colour CameraInfo is {rgb_info.width}x{rgb_info.height} but the "
                                                  f"colour image is {rgb.shape[1]}x{rgb.shape[0]}; dropped the frame")
            # where the colour camera was when it took its image
            color_camera = (camera_matrix(rgb_info), self._pose(rgb_msg.header.frame_id or rgb_info.header.frame_id,
                                                                stamp_seconds(rgb_msg.header.stamp)))
        elif rgb is not None:  # registered: any resolution of the depth's view (``reduce_depth`` samples it)
            try:
                check_registered(rgb.shape[:2], depth.shape)
            except UserError as exc:
                raise Rejected("camera_mismatch", f"dropped an RGB-D frame: {exc}") from None
        self.live.add_rgbd(depth, K, pose, stamp, rgb, color_camera, helper=self._helper)
        self._order.accept("rgbd", stamp, time.monotonic())

    @staticmethod
    def _sized(depth: np.ndarray, info) -> np.ndarray:
        """The depth image, if its CameraInfo describes an image of its size."""
        if (info.width, info.height) != (depth.shape[1], depth.shape[0]):
            raise Rejected("camera_mismatch", f"CameraInfo is {info.width}x{info.height} but the depth image is "
                                              f"{depth.shape[1]}x{depth.shape[0]}; dropped the RGB-D frame")
        return depth

    def _ingest_lidar(self, msg: PointCloud2) -> None:
        stamp = stamp_seconds(msg.header.stamp)
        xyz, _ = xyz_from_pointcloud2(msg)
        if len(xyz) == 0:
            raise Rejected("empty_cloud", "LiDAR cloud has no finite points; dropped")
        self._check_order("lidar", stamp)
        pose = self._pose(msg.header.frame_id, stamp)
        self._check_generation()
        self.live.add_scan(xyz, pose, stamp)
        self._order.accept("lidar", stamp, time.monotonic())
        # NaN rows are normal in organised clouds: counted, not warned about
        if len(xyz) < msg.width * msg.height:
            self.stats.add("rejected", "nonfinite_points", msg.width * msg.height - len(xyz))

    def _inference_loop(self) -> None:
        self._lower_own_priority(self.p("inference.nice"))
        next_run = time.monotonic()
        while not self._stop.is_set():
            next_run += 1.0 / self.p("inference.rate_hz")
            try:
                stats = self.live.update(group=False)
                if stats is not None:
                    self.stats.time("update", stats.seconds)
                    self._labels_stamp = stats.stamp  # the newest sensor data these labels include
                    # the labels as soon as they are made: regrouping the instances takes about as
                    # long again on a large map, and the labels do not depend on it
                    labelled = self.publish_outputs(SEMANTIC)
                    t0 = time.perf_counter()
                    self.live.regroup()
                    self.stats.time("regroup", time.perf_counter() - t0)
                    if self.live.version == labelled + 1:  # nothing but the regrouping since
                        self.publish_outputs(INSTANCES)
                elif (clean := self.live.clean_stamp()) is not None and clean > self._labels_stamp:
                    # new data that changed nothing the student reads (a still robot, a mapped room):
                    # the labels hold for it, and a viewer that subscribed late gets them now
                    self._labels_stamp = clean
                    self.publish_outputs()
                if self.live.version != self._published_version:
                    self.publish_outputs()
            except Exception as exc:  # e.g. CUDA out of memory: say so, keep the node up
                self.warn("inference", f"map update failed: {exc!r}")
            self._stop.wait(max(0.0, next_run - time.monotonic()))
            next_run = max(next_run, time.monotonic() - 1.0)

    # ------------------------------------------------------------------ outputs
    def label_colors(self, names: list[str]) -> np.ndarray:
        """(K, 3) uint8 colours of a vocabulary: the label set's own when it is the label set's."""
        from ovseg3d.labels import palette

        key, label_set = tuple(names), self.label_set  # read once: a service may clear it meanwhile
        cached = self._colors
        if cached is None or cached[0] != key:
            same = label_set is not None and list(label_set.names) == names
            cached = self._colors = (key, label_set.colors if same else palette(len(names)))
        return cached[1]

    def _header(self, stamp: float) -> Header:
        return Header(stamp=to_stamp(max(stamp, 0.0)), frame_id=self.p("map_frame"))

    def publish_outputs(self, parts: frozenset[str] = SEMANTIC | INSTANCES) -> int:
        """Publish the map's ``parts`` (semantic points; instance points and markers) as of now;
        returns the map version they show. Once all were published for a version, it is done."""
        version = self.live.version
        data, labelling = self.live.labelled()  # labels and the names they index, taken together
        header = self._header(self._labels_stamp)
        if "semantic" in parts:
            colors = self.label_colors(labelling.names)
            self._pubs["semantic"].publish(outputs.semantic_cloud(data["points"], colors[data["labels"]],
                                                                  data["labels"], data["scores"], header))
        if "instance" in parts:
            self._pubs["instance"].publish(outputs.instance_cloud(data["points"], data["instances"], data["labels"],
                                                                  data["scores"], header))
            self._pubs["markers"].publish(outputs.instance_markers(list(labelling.instances), labelling.names,
                                                                   header))
            self._published_version = version
        self.stats.published()
        return version

    def _publish_diagnostics(self) -> None:
        if self.live is None:
            return

        snap = self.stats.snapshot()

        def ms(kind: str) -> str:
            value = snap.mean_ms(kind)
            return "n/a" if value is None else f"{value:.1f}"

        memory = self.live.memory()
        values = {"map voxels": len(self.live.map), "evicted voxels": self.live.map.evicted,
                  "map bytes per voxel": f"{memory['held']:.0f}",
                  "feature bytes per voxel": f"{memory['features']:.0f}",  # held: storage and rows awaiting compaction
                  "feature bytes per voxel in use": f"{memory['features_in_use']:.1f}",
                  "feature rows": f"{'float16' if self.live.exact else 'int8'}, "
                                  f"{memory['voxels_per_row']:.1f} map voxels a row",
                  "text query ms in map (mean of last 100)": ms("query_map"),
                  "text query ms service (mean of last 100)": ms("query"),
                  "instances": len(self.live.instances), "queue length": snap.queue_length,
                  "queue drops": snap.queue_dropped, "unmatched camera messages": snap.camera_unmatched,
                  "rgbd ingest ms (mean of last 100)": ms("rgbd"), "lidar ingest ms (mean of last 100)": ms("lidar"),
                  "rgbd ingest cpu ms (mean of last 100)": ms("rgbd_cpu"),
                  "lidar ingest cpu ms (mean of last 100)": ms("lidar_cpu"),
                  "update ms (mean of last 100)": ms("update"), "regroup ms (mean of last 100)": ms("regroup"),
                  "autosave ms (mean of last 100)": ms("autosave"),
                  "data arrival lag ms (mean of last 100)": ms("data_lag"),
                  "tf arrival lag ms (mean of last 100)": ms("tf_lag"),
                  "tf frames": self._tf.frames() if self._tf is not None else 0,
                  "student cpu threads": self._student_threads(),
                  **{f"received {k}": v for k, v in snap.received.items()},
                  **{f"missed {k}": v for k, v in snap.missed.items()},
                  **{f"ingested {k}": v for k, v in snap.ingested.items()},
                  **{f"dropped {k}": v for k, v in snap.rejected.items()},
                  **{f"skipped {k}": v for k, v in snap.skipped.items()}}
        level = (DiagnosticStatus.WARN if snap.queue_dropped or sum(snap.rejected.values()) or sum(snap.missed.values())
                 else DiagnosticStatus.OK)
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: perception", hardware_id="ovseg3d",
                                  message="dropping or missing inputs (see counts)" if level else "ok",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self._pubs["diagnostics"].publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                          status=[status]))

    # ------------------------------------------------------------------ services
    def _check_text(self, text: str, what: str) -> str:
        text = " ".join(str(text).split())
        if not text:
            raise UserError(f"{what} is empty")
        if len(text) > self.p("query.max_text_length"):
            raise UserError(f"{what} has {len(text)} characters; the limit is {self.p('query.max_text_length')}")
        return text

    def _text_query(self, request: TextQuery.Request, response: TextQuery.Response):
        from ovseg3d.text.vocabulary import embed_prompts

        text = self._check_text(request.text, "query text")
        if not np.isfinite(request.threshold):
            raise UserError("threshold must be a finite number")
        if self.text_encoder is None:
            raise UserError("this node has no text encoder (clip.model is empty); free-text queries need one")
        started = time.perf_counter()
        emb = embed_prompts([text], self.text_encoder, self.templates)[0]
        cap = self.p("query.max_points")
        in_map = time.perf_counter()
        result = self.live.query(emb, float(request.threshold), min(request.max_points or cap, cap),
                                 request.max_instances)
        self.stats.time("query_map", time.perf_counter() - in_map)
        header = self._header(self.live.newest_stamp if np.isfinite(self.live.newest_stamp) else 0.0)
        response.points = outputs.query_cloud(result.points, result.scores, header)
        names = result.names  # the vocabulary these instances were named with, whatever it is now
        response.instances = [outputs.instance_match(inst, names[inst.label] if 0 <= inst.label < len(names)
                                                     else text, score)
                              for inst, score in result.instances]
        self._pubs["query"].publish(response.points)
        response.success = True
        response.message = f"{len(result.points)} points and {len(result.instances)} instances match {text!r}"
        self.stats.time("query", time.perf_counter() - started)
        return response

    def _set_vocabulary(self, request: SetVocabulary.Request, response: SetVocabulary.Response):
        from ovseg3d.text.vocabulary import DEFAULT_TEMPLATES, build_vocabulary

        labels = [self._check_text(w, "a label") for w in request.labels]
        if not labels:
            raise UserError("the label list is empty")
        if len(labels) > self.p("vocabulary.max_labels"):
            raise UserError(f"{len(labels)} labels; the limit is {self.p('vocabulary.max_labels')}")
        if len(set(labels)) != len(labels):
            raise UserError("the label list has duplicates")
        templates = self.templates or DEFAULT_TEMPLATES
        if request.prompt_template:
            templates = (self._check_text(request.prompt_template, "the prompt template"),)
        if self.text_encoder is None:
            raise UserError("this node has no text encoder (clip.model is empty)")
        # not cached on disk: every client's word list would leave a file behind
        self.live.set_vocabulary(build_vocabulary(labels, self.text_encoder, templates, cache=False))
        self.label_set = None
        response.success, response.message = True, f"vocabulary set to {len(labels)} labels; map relabelled"
        return response

    def _reset_map(self, request, response):
        self._generation += 1
        self.queue.clear()
        self._clear_time_state()
        self._labels_stamp = 0.0
        self.live.reset()
        response.success, response.message = True, "map cleared (and the TF buffer, stamp order and camera sync)"
        return response

    def _save_map(self, request: SaveMap.Request, response: SaveMap.Response):
        target = path_inside(Path(self.p("save_dir")), request.path, "path")
        try:
            ply, npz = self.live.save(target)
        except OSError as exc:
            raise UserError(f"cannot write the map: {exc}") from None
        response.success, response.message = True, f"saved {ply} and {npz}"
        return response

    def _load_map(self, request: LoadMap.Request, response: LoadMap.Response):
        target = path_inside(Path(self.p("save_dir")), request.path, "path").with_suffix(".npz")
        voxels = self.live.load(target)  # refused whole (UserError) or swapped in whole
        response.success, response.voxels = True, voxels
        response.message = f"loaded {voxels} voxels, {len(self.live.instances)} instances from {target}"
        return response

    # ------------------------------------------------------------------ persistence
    def _save_dir(self) -> Path:
        return Path(self.p("save_dir")).expanduser().resolve()

    def _autosave_target(self) -> Path:
        return self._save_dir() / AUTOSAVE

    def _restore_map(self) -> None:
        """``map.load`` on configure: a missing file is a first start (empty map); a file this student
        cannot read raises, so the configure fails instead of an autosave overwriting that map."""
        save_dir = self._save_dir()
        for stale in save_dir.glob(f".{AUTOSAVE}.*.tmp"):  # half-written by a process that was killed
            stale.unlink(missing_ok=True)
        # autosave only what changed after this: a node started without map.load must not replace
        # the last autosave (a map from before a reboot) with its empty map
        self._saved_version = self.live.version
        if not self.p("map.load"):
            return
        target = path_inside(save_dir, self.p("map.load"), "map.load").with_suffix(".npz")
        if not target.exists():
            self.get_logger().info(f"map.load: no saved map at {target} yet; starting with an empty map")
            return
        voxels = self.live.load(target)
        self._saved_version = self.live.version  # nothing new to autosave until the map changes
        self.get_logger().info(f"map.load: restored {voxels} voxels and {len(self.live.instances)} instances "
                               f"from {target}")

    def _autosave_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            period = self.p("map.autosave_period")  # may be changed while the node runs
            if self._stop.wait(min(period, 1.0) if period > 0 else 1.0):
                return
            if period > 0 and time.monotonic() - last >= period:
                last = time.monotonic()
                self._autosave()

    def _autosave(self) -> None:
        """Save the map to ``save_dir/autosave`` if it changed since the last save. Each file is
        renamed into place whole, so a crash at any moment leaves the previous save readable."""
        with self._autosave_lock:
            live = self.live
            version = live.version
            if version == self._saved_version:
                return
            t0 = time.perf_counter()
            try:
                live.save(self._autosave_target())
            except Exception as exc:  # a full disk, a removed folder: say so, keep mapping
                self.warn("autosave", f"autosave to {self._autosave_target()} failed: {exc!r}")
                return
            self.stats.time("autosave", time.perf_counter() - t0)
            self._saved_version = version
