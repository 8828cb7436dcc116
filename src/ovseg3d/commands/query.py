"""`ovseg3d query`: where in a scene is something, in any words."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "find what matches a text in a scene with the 3D student: points by score and whole instances"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ovseg3d.commands.common import add_clip_args

    p.add_argument("scene", type=Path, help="one scene folder in ScanNet layout")
    p.add_argument("text", help='what to look for, e.g. "a fire extinguisher"')
    p.add_argument("--checkpoint", type=Path, required=True, help="student checkpoint")
    p.add_argument("--out", type=Path, help="PNG of the per-point scores (a PLY with a score per point beside it)")
    p.add_argument("--labels", default=None, help="label set used to name instances (default: the checkpoint's)")
    p.add_argument("--top", type=int, default=5, help="instances to list (default 5)")
    p.add_argument("--instance-threshold", type=float, default=0.9,
                   help="cosine above which adjacent superpoints merge into one instance (default 0.9)")
    p.add_argument("--instance-min-points", type=int, default=100, help="smallest instance in points (default 100)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_clip_args(p)


def run(args: argparse.Namespace) -> int:
    from ovseg3d.commands.common import templates
    from ovseg3d.data.scannet import ScanNetScene
    from ovseg3d.pipelines.context import load_context
    from ovseg3d.pipelines.query import check_query, print_result, query_scene, save_pictures

    check_query(args.text, args.top)  # refuse before loading anything
    ctx = load_context(args.checkpoint, device=args.device, label_set=args.labels, clip_model=args.clip_model,
                       clip_weights=args.clip_weights, templates=templates(args))
    scene = ScanNetScene(args.scene)
    result = query_scene(ctx, scene, args.text, args.top, args.instance_threshold, args.instance_min_points)
    print_result(result, scene.name, ctx.names)
    if args.out:
        ply = save_pictures(result, scene, args.out)
        print(f"wrote {args.out} and {ply}")
    return 0
