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
                   help="which bag topic feeds a node input (rgb/image, depth/image, rgb/camera_info, lidar/points, "
                        "rgb/image/compressed, depth/image/compressedDepth: the transport follows); "
                        "default /<input>")
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

    from ovseg3d.errors import UserError
    from ovseg3d.ros.params import parse_assignments
    from ovseg3d.ros_tools.replay import ReplayConfig, replay_bag

    topics = _pairs(args.topic, "--topic")
    params = parse_assignments(args.param)
    if args.rate < 0:
        raise UserError("--rate must be 0 (as fast as possible) or positive")
    out = args.out or Path(f"replay_{args.bag.resolve().name}")
    report = replay_bag(args.bag, args.checkpoint, out, args.gt, args.labels,
                        ReplayConfig(rate=args.rate, topics=topics), params, args.clip_model, args.clip_weights)
    print(json.dumps({k: v for k, v in report.items() if k != "eval"}, indent=1))
    if "eval" in report:
        e = report["eval"]
        print(f"mIoU {e['miou']:.1f}  mAcc {e['macc']:.1f}  (chance mAcc {e['chance_macc']:.1f}; "
              f"{e['points_scored']} map points scored against {args.gt})")
    print(f"report: {out / 'report.json'}")
    return 0
