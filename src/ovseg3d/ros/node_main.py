"""`ovseg3d_node`: entry point of the ROS 2 perception node."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="ovseg3d_node",
        description="ROS 2 node: accumulates RGB-D and LiDAR into a 3D map, labels it with the "
        "distilled student against any vocabulary, and answers text queries. Start it as "
        "`ovseg3d_node --ros-args --params-file config/ovseg3d.yaml` or "
        "`ros2 run ovseg3d ovseg3d_node`.",
        epilog="Arguments after --ros-args are passed to ROS 2.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv
    build_parser().parse_args(own)
    print("ovseg3d_node: error: the perception node is not implemented yet (tracked in the ROS 2 "
          "node issue); nothing was started.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
