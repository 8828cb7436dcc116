"""Real rclpy: a TextQuery service round trip and a PointCloud2 publish/subscribe round trip."""

import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2

from ovseg3d.ros.pointcloud2 import array_to_pointcloud2, pointcloud2_to_array, xyz_fields_array
from ovseg3d_interfaces.msg import InstanceMatch
from ovseg3d_interfaces.srv import LoadMap, SaveMap, SetVocabulary, TextQuery


def _spin_until(executor, predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def test_text_query_service_round_trip(rclpy_context):
    server = rclpy.create_node("tq_server", context=rclpy_context)
    client_node = rclpy.create_node("tq_client", context=rclpy_context)

    def handle(request, response):
        pts = xyz_fields_array([[1.0, 2.0, 3.0]], score=np.array([0.9], np.float32))
        response.points = array_to_pointcloud2(pts)
        response.instances = [InstanceMatch(instance_id=7, label=request.text, score=0.9, num_points=1)]
        response.success = True
        response.message = f"{request.max_points} {request.max_instances} {request.threshold:.2f}"
        return response

    server.create_service(TextQuery, "text_query", handle)
    client = client_node.create_client(TextQuery, "text_query")
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(server)
    executor.add_node(client_node)
    try:
        assert _spin_until(executor, lambda: client.service_is_ready())
        future = client.call_async(TextQuery.Request(text="fire extinguisher", threshold=0.25,
                                                     max_points=100, max_instances=3))
        assert _spin_until(executor, future.done)
        res = future.result()
        assert res.success and res.message == "100 3 0.25"
        assert res.instances[0].label == "fire extinguisher" and res.instances[0].instance_id == 7
        cloud = pointcloud2_to_array(res.points)
        assert cloud["score"].tolist() == pytest.approx([0.9])
        assert (cloud["x"][0], cloud["y"][0], cloud["z"][0]) == (1.0, 2.0, 3.0)
    finally:
        executor.shutdown()
        server.destroy_node()
        client_node.destroy_node()


def test_other_service_types_exist():
    assert SetVocabulary.Request(labels=["chair"], prompt_template="a {}").labels == ["chair"]
    assert SaveMap.Request(path="map1").path == "map1"
    assert LoadMap.Request(path="map1").path == "map1" and LoadMap.Response(voxels=3).voxels == 3


def test_pointcloud2_publish_subscribe_round_trip(rclpy_context):
    pub_node = rclpy.create_node("pc_pub", context=rclpy_context)
    sub_node = rclpy.create_node("pc_sub", context=rclpy_context)
    rng = np.random.default_rng(0)
    sent = xyz_fields_array(rng.normal(size=(5000, 3)), intensity=rng.random(5000).astype(np.float32),
                            label=np.arange(5000, dtype=np.uint16))
    received: list[PointCloud2] = []
    sub_node.create_subscription(PointCloud2, "points", received.append, qos_profile_sensor_data)
    pub = pub_node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(pub_node)
    executor.add_node(sub_node)
    stop = threading.Event()

    try:
        assert _spin_until(executor, lambda: pub.get_subscription_count() > 0)
        msg = array_to_pointcloud2(sent)
        msg.header.frame_id = "lidar"

        def publish_until_received():  # best-effort QoS may drop the first message
            while not stop.is_set() and not received:
                pub.publish(msg)
                time.sleep(0.1)

        thread = threading.Thread(target=publish_until_received, daemon=True)
        thread.start()
        assert _spin_until(executor, lambda: bool(received))
        got = pointcloud2_to_array(received[0])
        assert received[0].header.frame_id == "lidar"
        assert got.dtype.names == ("x", "y", "z", "intensity", "label")
        for name in got.dtype.names:
            assert np.array_equal(got[name], sent[name])
    finally:
        stop.set()
        executor.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()
