"""A real ovseg3d node and a driver node in one process: start it, publish to it, collect what it
publishes, call its services. Used by replay, the benchmarks and the tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from tf2_msgs.msg import TFMessage

from ovseg3d.errors import UserError
from ovseg3d.ros.node import PerceptionNode
from ovseg3d.ros.spin import spin

TYPES = {"rgb/image": Image, "depth/image": Image, "rgb/camera_info": CameraInfo, "lidar/points": PointCloud2,
         "/tf": TFMessage}


class NodeHarness:
    """The node and a driver node (publishers, subscribers, service clients) on one executor thread."""

    def __init__(self, context, overrides: dict, namespace: str = "robot"):
        self.node = PerceptionNode(context=context, namespace=namespace, parameter_overrides=[
            Parameter(k, value=v) for k, v in overrides.items()])
        self.driver = rclpy.create_node("ovseg3d_test_driver", namespace=namespace, context=context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.driver)
        self.pubs: dict = {}
        for topic, cls in TYPES.items():
            self.ensure_publisher(topic, cls)
        self.received: dict[str, list] = {}
        self._thread = threading.Thread(target=spin, args=(self.executor,), daemon=True)
        self._thread.start()

    def start(self) -> None:
        if self.node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise UserError("the ovseg3d node failed to configure (see the log line above)")
        if self.node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise UserError("the ovseg3d node failed to activate (see the log line above)")

    def subscribe(self, topic: str, cls) -> list:
        box = self.received.setdefault(topic, [])
        self.driver.create_subscription(cls, topic, box.append, 10)
        return box

    def wait_matched(self, timeout: float = 10.0) -> None:
        """Until the node's subscriptions see our publishers (and a little more, as ENVIRONMENT.md advises)."""
        listened = {self.node.resolve_topic_name(t) for t in self.node.camera_topics()} | {
            self.node.resolve_topic_name(t) for t in ("lidar/points", "/tf")}
        pubs = [p for p in self.pubs.values() if p.topic_name in listened]  # e.g. not raw images when compressed
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(p.get_subscription_count() > 0 for p in pubs):
                time.sleep(1.0)
                return
            time.sleep(0.05)
        raise TimeoutError("the node's subscriptions never matched the test publishers")

    def ensure_publisher(self, topic: str, cls):
        if topic in self.pubs:
            return self.pubs[topic]
        if topic == "/tf_static":
            from rclpy.qos import DurabilityPolicy, QoSProfile

            qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        else:
            qos = 100 if topic == "/tf" else qos_profile_sensor_data
        self.pubs[topic] = self.driver.create_publisher(cls, topic, qos)
        return self.pubs[topic]

    def publish(self, topic: str, msg, cls=None) -> None:
        """Publish a message (or its serialised bytes, with ``cls``) on ``topic``."""
        self.ensure_publisher(topic, cls or type(msg)).publish(msg)

    def call(self, cls, name: str, request, timeout: float = 60.0):
        client = self.driver.create_client(cls, name)
        try:
            if not client.wait_for_service(timeout_sec=10.0):
                raise TimeoutError(f"service {name} is not available")
            future = client.call_async(request)
            if not wait_for(future.done, timeout):
                raise TimeoutError(f"service {name} did not answer within {timeout} s")
            return future.result()
        finally:
            self.driver.destroy_client(client)

    def close(self) -> None:
        if self.node._threads:
            self.node.trigger_deactivate()
        self.executor.shutdown()
        self._thread.join(timeout=10)  # no callback may still run when the nodes go
        self.node.destroy_node()
        self.driver.destroy_node()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, period: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period)
    return predicate()
