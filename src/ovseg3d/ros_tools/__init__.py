"""Tooling around the node, apart from it: rosbag2 files, recorded scenes as messages, replay with
metrics, an in-process harness, and a client for a node in its own process (with a small robot
and a catalogue of hostile inputs). With ``ovseg3d.ros`` (the node and its message conversions)
the only packages that import rclpy."""
