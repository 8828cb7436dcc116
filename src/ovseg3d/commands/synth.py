"""`ovseg3d synth`: synthetic scenes (a test instrument) in ScanNet's raw layout."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

HELP = "generate synthetic indoor scenes (test instrument) in ScanNet's raw layout"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="output dataset root (scene folders + label TSV)")
    p.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same scenes (default 0)")
    p.add_argument("--preset", choices=["test", "demo"], default="demo",
                   help="scene size: 'test' (10 cm vertex spacing, 24 frames) or 'demo' (5 cm, 80 frames)")
    p.add_argument("--frames", type=int, help="RGB-D frames per scene (overrides the preset)")
    p.add_argument("--sweeps", type=int, help="LiDAR sweeps per scene (overrides the preset)")
    p.add_argument("--first-index", type=int, default=0, help="number of the first scene (sceneXXXX_00)")
    p.add_argument("--workers", type=int, default=1,
                   help="rooms made at once, in worker processes (default 1; the files are the same either way)")
    p.add_argument("--reconstruct", type=float, metavar="VOXEL",
                   help="replace each scene's points by the voxel centres (VOXEL m) of its fused depth images, "
                        "labelled by the nearest mesh vertex, as ScanNet's points are a depth reconstruction; "
                        "students for the node should learn on these")
    p.add_argument("--bag", action="store_true",
                   help="also write each scene's sensor streams (RGB, depth, CameraInfo, LiDAR, TF) as rosbag2 "
                        "folders <scene>/rosbag2_sqlite3 and <scene>/rosbag2_mcap; the scene is the ground truth")
    p.add_argument("--bag-storage", choices=["sqlite3", "mcap", "both"], default="both",
                   help="storage of the bags (default both)")
    p.add_argument("--robot", action="store_true",
                   help="with --bag: the bags look like a real robot's (<scene>/rosbag2_robot_<storage>): jpeg colour "
                        "and png compressedDepth as image_transport publishes them, map -> odom -> base_link -> "
                        "camera_link -> camera_color_optical_frame with the sensors on /tf_static, LiDAR with "
                        "ring and t fields; `ovseg3d replay` reads them as they are")


def run(args: argparse.Namespace) -> int:
    from ovseg3d.data.synth.generate import SYNTH_PRESETS
    from ovseg3d.errors import UserError
    from ovseg3d.pipelines.synth import make_scenes

    cfg = SYNTH_PRESETS[args.preset]
    for key in ("frames", "sweeps"):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                raise UserError(f"--{key} must be at least 1, got {value}")
            cfg = dataclasses.replace(cfg, **{key: value})
    if args.robot and not args.bag:
        raise UserError("--robot shapes the bags: give --bag too")
    storages = () if not args.bag else ("sqlite3", "mcap") if args.bag_storage == "both" else (args.bag_storage,)
    paths = make_scenes(args.out, args.scenes, args.seed, cfg, args.first_index, args.reconstruct, args.workers)
    if storages:
        from ovseg3d.ros_tools.bag import write_scene_bag

        for path in paths:
            for storage in storages:
                write_scene_bag(path, storage, robot=args.robot)
    return 0
