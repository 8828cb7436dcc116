"""ovseg3d: open-vocabulary 3D semantic and instance segmentation for robots.

The library is pure Python + torch and never imports rclpy; the ROS 2 layer lives in
``ovseg3d.ros``. Importing the package stays cheap: submodules import torch when they need it.
"""

__version__ = "0.1.0"
