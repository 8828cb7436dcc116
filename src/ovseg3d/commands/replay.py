"""`ovseg3d replay`: a rosbag2 through the perception node over real topics, with metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "play a rosbag2 into the ovseg3d node and report mIoU/mAcc, latency, drops and memory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap), e.g. from `ovseg3d synth --bag`")
    p.add_argument("--checkpoint", type=Path, required=True, help="student checkpoint the node runs")
    p.add_argument("--gt", type=Path, help="ground truth: the scene folder in ScanNet layout (optional)")
    p.add_argument("--labels", default=None, help="label set of the vocabulary and the scores (default: the "
                                                  "checkpoint's)")
    p.add_argument("--rate", type=float, default=1.0,
                   help="playback speed: 1 = recorded timing, 2 = twice as fast, 0 = as fast as possible")
    p.add_argument("--out", type=Path, help="report folder (default: replay_<bag name>)")
    p.add_argument("--topic", action="append", default=[], metavar="INPUT=BAG_TOPIC",
                   help="which bag topic feeds a node input (rgb/image, depth/image, rgb/camera_info, "
                        "lidar/points); default /<input>")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="node parameter, e.g. map.voxel_size=0.05 (repeatable; see config/ovseg3d.yaml; lists "
                        "comma-separated)")
    p.add_argument("--clip-model", default=None, help="text encoder (default: the checkpoint's, else ViT-B-16)")
    p.add_argument("--clip-weights", default=None,
                   help="pretrained tag or local weights file (default: the checkpoint's, else random)")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    from ovseg3d.errors import UserError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UserError(f"{what} {item!r} is not NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


def run(args: argparse.Namespace) -> int:
    import json
    import os

    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")  # large clouds and images, one host
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from ovseg3d.commands.common import student_clip_spec
    from ovseg3d.errors import UserError
    from ovseg3d.labels import load_label_set
    from ovseg3d.student.checkpoint import read_checkpoint

    topics = _pairs(args.topic, "--topic")
    from ovseg3d.ros.params import parse_value

    params = {k: parse_value(k, v) for k, v in _pairs(args.param, "--param").items()}
    if args.rate < 0:
        raise UserError("--rate must be 0 (as fast as possible) or positive")
    if args.gt is not None and not args.gt.is_dir():
        raise UserError(f"--gt {args.gt} is not a scene folder")
    from ovseg3d.ros_tools.bag import bag_topics

    if not args.bag.exists():
        raise UserError(f"bag {args.bag} does not exist")
    bag_topics(args.bag)  # opens, or says why not, before the node starts
    ckpt = read_checkpoint(args.checkpoint)
    labels = load_label_set(args.labels or ckpt.get("label_set", "scannet20"))
    clip = student_clip_spec(ckpt, args.clip_model or "ViT-B-16", args.clip_weights)
    import rclpy

    from ovseg3d.ros_tools.harness import NodeHarness
    from ovseg3d.ros_tools.replay import ReplayConfig, replay

    out = args.out or Path(f"replay_{args.bag.resolve().name}")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        harness = NodeHarness(context, {"checkpoint": str(args.checkpoint), "label_set": labels.name,
                                        "clip.model": clip.model, "clip.pretrained": clip.pretrained or "",
                                        "qos_depth": 100,  # a replay comes in bursts; --param can override
                                        **params}, namespace="")
        try:
            harness.start()
            report = replay(args.bag, harness, ReplayConfig(rate=args.rate, topics=topics), out, args.gt, labels)
        finally:
            harness.close()
    finally:
        context.try_shutdown()
    print(json.dumps({k: v for k, v in report.items() if k != "eval"}, indent=1))
    if "eval" in report:
        e = report["eval"]
        print(f"mIoU {e['miou']:.1f}  mAcc {e['macc']:.1f}  (chance mAcc {e['chance_macc']:.1f}; "
              f"{e['points_scored']} map points scored against {args.gt})")
    print(f"report: {out / 'report.json'}")
    return 0
