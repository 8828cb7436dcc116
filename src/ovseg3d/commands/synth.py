"""`ovseg3d synth`: synthetic scenes (a test instrument) in ScanNet's raw layout."""

from __future__ import annotations

import argparse
import dataclasses
import time
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
    p.add_argument("--reconstruct", type=float, metavar="VOXEL",
                   help="replace each scene's points by the voxel centres (VOXEL m) of its fused depth images, "
                        "labelled by the nearest mesh vertex, as ScanNet's points are a depth reconstruction; "
                        "students for the node should learn on these")
    p.add_argument("--bag", action="store_true",
                   help="also write each scene's sensor streams (RGB, depth, CameraInfo, LiDAR, TF) as rosbag2 "
                        "folders <scene>/rosbag2_sqlite3 and <scene>/rosbag2_mcap; the scene is the ground truth")
    p.add_argument("--bag-storage", choices=["sqlite3", "mcap", "both"], default="both",
                   help="storage of the bags (default both)")


def run(args: argparse.Namespace) -> int:
    from ovseg3d.data.synth.generate import SYNTH_NOTE, SYNTH_PRESETS, generate_dataset
    from ovseg3d.errors import UserError
    from ovseg3d.progress import bar

    cfg = SYNTH_PRESETS[args.preset]
    for key in ("frames", "sweeps"):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                raise UserError(f"--{key} must be at least 1, got {value}")
            cfg = dataclasses.replace(cfg, **{key: value})
    if args.reconstruct is not None and not args.reconstruct > 0:
        raise UserError("--reconstruct needs a positive voxel size in metres")
    print(f"ovseg3d synth: {SYNTH_NOTE}")
    t0 = time.perf_counter()
    with bar(args.scenes * (1 + cfg.frames + cfg.sweeps), "synth", "step") as pbar:
        paths = generate_dataset(args.out, args.scenes, args.seed, cfg, args.first_index,
                                 on_step=lambda _: pbar.update())
    dt = time.perf_counter() - t0
    print(f"wrote {len(paths)} scene(s) to {args.out} in {dt:.1f} s ({dt / len(paths):.1f} s per scene)")
    if args.reconstruct is not None:
        from ovseg3d.data.synth.reconstruct import reconstruct_scene

        for path in paths:
            n = reconstruct_scene(path, args.reconstruct)
            print(f"reconstructed {path.name} from its depth images: {n} points ({args.reconstruct} m voxels)")
    if args.bag:
        from ovseg3d.ros_tools.bag import write_bag
        from ovseg3d.ros_tools.scene_stream import scene_stream

        storages = ["sqlite3", "mcap"] if args.bag_storage == "both" else [args.bag_storage]
        for path in paths:
            for storage in storages:
                bag = path / f"rosbag2_{storage}"
                counts = write_bag(scene_stream(path), bag, storage)
                print(f"wrote {bag} ({sum(counts.values())} messages on {len(counts)} topics)")
    return 0
