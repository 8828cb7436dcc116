"""The Fast DDS profile ovseg3d's ROS processes use for large sensor messages on one host
(``config/fastdds_sensors.xml``: a 32 MB shared-memory segment instead of Fast DDS's 512 kB; the
file says why). Set before the process creates its first ROS context: Fast DDS reads the profile
when it makes its first participant."""

from __future__ import annotations

import os

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_NAME = "fastdds_sensors.xml"
FAST_DDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def use_sensor_profile() -> str | None:
    """Point Fast DDS at ovseg3d's profile unless the user chose a profile of their own (kept as it
    is) or another middleware; returns the profile now in use by this process, None for none."""
    from ovseg3d.paths import config_dir

    if os.environ.get("RMW_IMPLEMENTATION", FAST_DDS_RMWS[0]) not in FAST_DDS_RMWS:
        return None
    if not os.environ.get(PROFILE_ENV):
        os.environ[PROFILE_ENV] = str(config_dir() / PROFILE_NAME)
    return os.environ[PROFILE_ENV]
