"""``ovseg3d_node`` in its own process, and a client that reaches it only through ROS, as a robot's
other programs, ``ros2 param``, ``ros2 lifecycle`` and a lifecycle manager do.

Used by the adversarial tests and the hostile soak (``ovseg3d bench node``). The client publishes
on the node's topics, calls its services (the node's own and rclpy's parameter and lifecycle
services), reads ``/diagnostics`` for its counters, and streams a small robot
(``RobotStream``) whose map the tests probe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters, SetParametersAtomically
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from tf2_msgs.msg import TFMessage

from ovseg3d.ros.dds import use_sensor_profile
from ovseg3d.ros_tools.harness import wait_for

TOPIC_TYPES = {"rgb/image": Image, "depth/image": Image, "rgb/camera_info": CameraInfo, "lidar/points": PointCloud2,
               "rgb/image/compressed": CompressedImage, "depth/image/compressedDepth": CompressedImage,
               "depth/camera_info": CameraInfo,
               "/tf": TFMessage, "/tf_static": TFMessage}


def node_executable() -> str:
    return str(Path(sys.executable).parent / "ovseg3d_node")


class NodeProcess:
    """Start ``ovseg3d_node`` with ``params`` in namespace ``namespace``; talk to it from a client node."""

    def __init__(self, params: dict, log_path: Path, namespace: str = "robot", name: str = "ovseg3d",
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None):
        """``env``: extra environment of the process (e.g. its own OVSEG3D_CACHE)."""
        self.params, self.log_path, self.namespace, self.name = params, Path(log_path), namespace, name
        self.extra_args, self.env = extra_args, env or {}
        self.prefix = f"/{namespace}/{name}"  # the node's private names: ~/text_query is {prefix}/text_query
        self.proc: subprocess.Popen | None = None
        use_sensor_profile()  # this process publishes sensor data to the node: the sender's segment is what counts
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.client = rclpy.create_node("ovseg3d_test_client", namespace=namespace, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.client)
        self._pubs: dict = {}
        self._clients: dict = {}
        self._lock = threading.Lock()
        self.diagnostics: dict[str, str] = {}
        self.client.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    # ------------------------------------------------------------------ process
    def command(self) -> list[str]:
        args = [node_executable(), "--ros-args", "-r", f"__ns:=/{self.namespace}", "-r", f"__node:={self.name}"]
        for key, value in self.params.items():
            args += ["-p", f"{key}:={_param_text(value)}"]
        return args + list(self.extra_args)

    def start(self, wait_service: str | None = "text_query", timeout: float = 180.0) -> NodeProcess:
        """Start the process; wait until its ``~/text_query`` (active) or ``~/get_state`` (any state) is
        discovered; None: do not wait."""
        env = {**os.environ, "ROS_LOG_DIR": str(self.log_path.parent / "ros_log"), **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop(); a restart appends
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env)
        if wait_service is not None:
            from lifecycle_msgs.srv import GetState

            from ovseg3d_interfaces.srv import TextQuery

            cls = {"text_query": TextQuery, "get_state": GetState}[wait_service]
            client = self._client(cls, f"{self.prefix}/{wait_service}")
            end = time.monotonic() + timeout
            while not client.wait_for_service(timeout_sec=0.5):
                if not self.alive() or time.monotonic() > end:
                    raise RuntimeError(f"ovseg3d_node did not come up (rc={self.proc.poll()}); log:\n{self.log()}")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGINT, as ros2 launch sends; SIGKILL if it does not end. Returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()
        return None if self.proc is None else self.proc.returncode

    def close(self) -> None:
        self.stop()
        self.executor.shutdown()
        self._spin.join(timeout=10)
        self.client.destroy_node()
        self.context.try_shutdown()

    # ------------------------------------------------------------------ topics and services
    def publisher(self, topic: str, cls=None):
        with self._lock:
            if topic not in self._pubs:
                cls = cls or TOPIC_TYPES[topic]
                if topic == "/tf_static":
                    qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                     reliability=ReliabilityPolicy.RELIABLE)
                else:
                    qos = QoSProfile(depth=100) if topic == "/tf" else qos_profile_sensor_data
                self._pubs[topic] = self.client.create_publisher(cls, topic, qos)
            return self._pubs[topic]

    def publish(self, topic: str, msg) -> None:
        self.publisher(topic, type(msg)).publish(msg)

    def wait_matched(self, topics=("rgb/image", "depth/image", "rgb/camera_info", "lidar/points", "/tf"),
                     timeout: float = 30.0) -> None:
        pubs = [self.publisher(t) for t in topics]
        if not wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), timeout):
            raise TimeoutError("the node's subscriptions never matched the client's publishers")
        time.sleep(1.0)  # discovery settles (ENVIRONMENT.md)

    def subscribed_topics(self, settled_by: str = "lidar/points", timeout: float = 30.0) -> dict[str, list[str]]:
        """The node's subscriptions as ``ros2 node info`` sees them, once discovery has reached
        ``settled_by`` (the node creates that subscription last). The graph is eventually consistent:
        right after the node answers a service the client may not know the node's name yet."""
        from rclpy.node import NodeNameNonExistentError

        ns = f"/{self.namespace}"

        def seen() -> dict[str, list[str]]:
            try:
                return dict(self.client.get_subscriber_names_and_types_by_node(self.name, ns))
            except NodeNameNonExistentError:
                return {}

        if not wait_for(lambda: f"{ns}/{settled_by}" in seen(), timeout):
            raise TimeoutError(f"the node's subscription to {settled_by} was never discovered: {seen()}")
        return seen()

    def subscribe(self, topic: str, cls, keep: int = 1) -> list:
        box: list = []

        def store(msg) -> None:
            box.append(msg)
            del box[:-keep]

        self.client.create_subscription(cls, topic, store, 5)
        return box

    def _client(self, cls, name: str):
        with self._lock:
            key = (cls, name)
            if key not in self._clients:
                self._clients[key] = self.client.create_client(cls, name)
            return self._clients[key]

    def call(self, cls, name: str, request, timeout: float = 60.0):
        """Call a service by its full name or by the node's private name (``text_query``)."""
        full = name if name.startswith("/") else f"{self.prefix}/{name}"
        client = self._client(cls, full)
        if not client.wait_for_service(timeout_sec=10.0):
            raise TimeoutError(f"service {full} is not available")
        future = client.call_async(request)
        if not wait_for(future.done, timeout, 0.01):
            raise TimeoutError(f"service {full} did not answer within {timeout} s")
        return future.result()

    def ask(self, cls, name: str, request, tries: int = 3, timeout: float = 20.0):
        """``call`` for a question that changes nothing (a state, a parameter's value), asked again
        when unanswered: a request sent the moment a node's service appears can be lost before the
        node's side has matched this client (seen once in a full test run: get_state unanswered for
        60 s, answered at once in a rerun)."""
        for attempt in range(tries):
            try:
                return self.call(cls, name, request, timeout)
            except TimeoutError:
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ parameters, lifecycle, diagnostics
    def get_parameters(self, *names: str) -> list:
        res = self.ask(GetParameters, "get_parameters", GetParameters.Request(names=list(names)))
        return [Parameter.from_parameter_msg(ParameterMsg(name=n, value=v)).value for n, v in zip(names, res.values)]

    def set_parameters(self, values: dict, atomically: bool = False) -> list:
        """As ``ros2 param set`` does: one result (successful, reason) per parameter, or one for all."""
        msgs = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        if atomically:
            return [self.call(SetParametersAtomically, "set_parameters_atomically",
                              SetParametersAtomically.Request(parameters=msgs)).result]
        return list(self.call(SetParameters, "set_parameters", SetParameters.Request(parameters=msgs)).results)

    def describe_parameters(self, *names: str) -> list:
        return list(self.ask(DescribeParameters, "describe_parameters",
                              DescribeParameters.Request(names=list(names))).descriptors)

    def lifecycle_state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self.ask(GetState, "get_state", GetState.Request()).current_state.label

    def change_state(self, transition: str) -> bool:
        """As ``ros2 lifecycle set`` does, by the transition's label (configure, activate, shutdown ...)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(label=transition))
        return self.call(ChangeState, "change_state", request, timeout=180.0).success

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{self.name}:"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def counter(self, key: str) -> int:
        """A count from the node's latest /diagnostics (``dropped future_stamp``, ``map voxels`` ...)."""
        return int(self.diagnostics.get(key, 0))

    def wait_counter(self, key: str, at_least: int, timeout: float = 30.0) -> bool:
        return wait_for(lambda: self.counter(key) >= at_least, timeout, 0.05)


def _param_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(f'"{v}"' for v in value) + "]"
    return str(value)


def until(predicate: Callable[[], bool], timeout: float, every: Callable[[], None] | None = None,
          period: float = 0.5) -> bool:
    """``predicate`` became true within ``timeout``; ``every`` runs each ``period`` meanwhile (a resend)."""
    end, next_run = time.monotonic() + timeout, 0.0
    while time.monotonic() < end:
        if every is not None and time.monotonic() >= next_run:
            every()
            next_run = time.monotonic() + period
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


