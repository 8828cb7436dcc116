"""The synthetic world: a test instrument, not data about the real world.

Procedural indoor rooms with ScanNet20-class furniture, rendered RGB-D and ray-cast LiDAR, exact
labels, all written in ScanNet's raw layout. It exists because no real datasets or pretrained
vision-language weights can be downloaded on the project's machines; results on it validate the
pipeline and the methods' relative effects, not real-world accuracy.
"""
