"""Scene data: ScanNet's raw layout, OpenScene files, the synthetic world, rosbag2 streams."""
