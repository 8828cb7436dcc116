"""`ovseg3d_node`: entry point of the ROS 2 perception node."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="ovseg3d_node",
        description="ROS 2 node: accumulates RGB-D and LiDAR into a 3D map, labels it with the "
        "distilled student against any vocabulary, and answers text queries. Start it as "
        "`ovseg3d_node --ros-args --params-file config/ovseg3d.yaml -p checkpoint:=student.pt` or "
        "`ros2 run ovseg3d ovseg3d_node`. With autostart:=false it waits for lifecycle transitions.",
        epilog="Arguments after --ros-args are passed to ROS 2.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv
    build_parser().parse_args(own)
    from ovseg3d.ros.dds import use_sensor_profile

    profile = use_sensor_profile()  # before the first ROS context: large clouds and images survive a busy moment
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    from ovseg3d.errors import UserError
    from ovseg3d.ros.node import PerceptionNode
    from ovseg3d.ros.spin import spin

    rclpy.init(args=argv)
    try:
        node = PerceptionNode()
    except UserError as exc:  # a start-up parameter of the wrong type or out of range
        print(f"ovseg3d_node: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    if profile and not os.path.isfile(profile):  # Fast DDS says so in its own words and runs on its defaults
        node.get_logger().warning(f"Fast DDS profile {profile} is not a file: Fast DDS runs on its defaults "
                                  "(a 512 kB shared-memory segment: large sensor messages may be lost)")
    else:
        node.get_logger().info(f"Fast DDS profile: {profile}" if profile else "not Fast DDS: no profile of ovseg3d's")
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    code = 0
    try:
        if node.get_parameter("autostart").value:
            from rclpy.lifecycle import TransitionCallbackReturn

            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                print("ovseg3d_node: error: configure failed (see the log line above)", file=sys.stderr)
                return 1
            node.trigger_activate()
        spin(executor, until=node.finished)  # until the lifecycle shutdown transition
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if rclpy.ok() and not node.finished.done():
            node.trigger_shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
