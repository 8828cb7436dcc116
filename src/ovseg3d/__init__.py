"""ovseg3d: open-vocabulary 3D semantic and instance segmentation for robots.

The library is pure Python + torch and never imports rclpy; the ROS 2 layer lives in
``ovseg3d.ros``. Importing the package stays cheap: submodules import torch when they need it.
"""

import os

__version__ = "0.1.0"

# OpenMP threads (torch's and MinkowskiEngine's CPU kernels, GNU libgomp) sleep when idle instead of
# spinning: by default each spins after every parallel region, and with two cores the spinning thread
# takes the core the next region needs. Student training steps on the demo's data: 8.6-10.4 s an epoch
# spinning, 5.4-6.7 s passive; the node's ingest and updates the same either way (2-minute replays
# A/B, 2026-12-04). Read by libgomp when torch loads, so it is set here, before any torch import; a
# user's own OMP_WAIT_POLICY is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
