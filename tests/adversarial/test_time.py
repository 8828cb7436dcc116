"""The node's policy for time, seen from another process: stamps far ahead of its clock are refused;
a stamp accepted just inside ``time.max_future`` cannot lock the stream out; time going back (a bag
restarted without --clock, a simulated clock reset) clears TF and stamp state with a warning; and
``~/reset_map`` clears them too."""

from __future__ import annotations

import threading
import time

import numpy as np
from rosgraph_msgs.msg import Clock
from std_srvs.srv import Trigger

from ovseg3d.ros.transforms import to_stamp
from ovseg3d.ros_tools.robot_stream import RobotStream


def _healthy(robot: RobotStream, timeout: float = 30.0) -> None:
    problem = robot.healthy(timeout)
    assert problem == "", f"{problem}\n{robot.node.log()[-3000:]}"


def test_a_stamp_just_inside_max_future_holds_its_stream_back_no_longer_than_that(start_node):
    """A LiDAR message 1.9 s ahead, in a frame posed by static transforms (TF finds a pose at any
    stamp), is accepted and becomes the stream's newest stamp; the stream's true-time messages are
    late until the clock passes it, then mapped again (a far-future one is refused outright: see the
    hostile catalogue)."""
    robot = RobotStream(start_node(**{"time.max_future": 2.0})).start()
    try:
        _healthy(robot)
        robot.lidar(np.array([[0.5, 0.5, 0.5]] * 4), stamp=robot.stamp() + 1.9, frame="fixed_lidar")
        assert robot.node.wait_counter("ingested lidar", robot.node.counter("ingested lidar") + 1)
        _healthy(robot, timeout=15.0)
        assert robot.node.counter("dropped future_stamp") == 0
    finally:
        robot.stop()


def test_a_bag_restarted_without_clock_clears_tf_and_stamps(start_node):
    robot = RobotStream(start_node()).start()
    try:
        _healthy(robot)
        robot.stamp_offset = -30.0  # every stamp, TF included, goes back 30 s and stays there
        _healthy(robot)
        assert robot.node.wait_counter("dropped time_jump", 1, timeout=10.0)  # /diagnostics is a period old
        assert "stayed behind" in robot.node.log()
    finally:
        robot.stop()


def test_a_simulated_clock_that_jumps_back_clears_tf_and_stamps(start_node):
    node = start_node(use_sim_time=True)
    sim = {"origin": 1000.0, "wall": time.monotonic()}
    stop = threading.Event()

    def now() -> float:
        return sim["origin"] + time.monotonic() - sim["wall"]

    def tick() -> None:  # /clock at 100 Hz, as `ros2 bag play --clock` publishes it
        pub = node.client.create_publisher(Clock, "/clock", 10)
        while not stop.is_set():
            pub.publish(Clock(clock=to_stamp(now())))
            time.sleep(0.01)

    clock = threading.Thread(target=tick, daemon=True)
    clock.start()
    robot = RobotStream(node, clock=now).start()
    try:
        _healthy(robot)
        sim.update(origin=10.0, wall=time.monotonic())  # the simulation restarts at t = 10 s
        _healthy(robot)
        assert robot.node.wait_counter("dropped time_jump", 1, timeout=10.0)
        assert "clock went back" in robot.node.log()
    finally:
        stop.set()
        robot.stop()
        clock.join(5)


def test_reset_map_also_resets_tf_and_stamp_state(start_node):
    robot = RobotStream(start_node()).start()
    try:
        _healthy(robot)
        robot.stop()
        time.sleep(0.5)  # nothing in flight
        late = robot.node.counter("dropped out_of_order")
        res = robot.node.call(Trigger, "reset_map", Trigger.Request())
        assert res.success and "TF" in res.message
        robot.map_voxels = 0  # the map is empty now, by request
        robot.stamp_offset = -30.0  # older than anything before the reset: fine after it, at once
        robot.start()
        _healthy(robot)
        time.sleep(0.5)  # the counters in /diagnostics are at most a period old
        assert robot.node.counter("dropped time_jump") == 0  # no jump to detect: the reset cleared it all
        assert robot.node.counter("dropped out_of_order") == late
    finally:
        robot.stop()
