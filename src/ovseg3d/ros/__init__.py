"""The ROS 2 layer: the only part of ovseg3d that imports rclpy."""
