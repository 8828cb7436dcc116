"""`ovseg3d extract`: 2D teacher features fused onto every scene's points, in OpenScene's format."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run 2D teacher(s) over scenes and write fused per-point features (OpenScene <scene>_0.pt files)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ovseg3d.commands.common import add_clip_args, add_shard_args, add_teacher_args

    p.add_argument("data", type=Path, help="dataset root of ScanNet-layout scenes (or one scene folder)")
    p.add_argument("--out", type=Path, required=True, help="output folder of <scene>_0.pt files")
    add_teacher_args(p)
    p.add_argument("--fusion", choices=["sas", "average", "max_similarity"], default="sas",
                   help="how several teachers are fused (default sas: capability-guided, needs --capability)")
    p.add_argument("--capability", action="append", type=Path, default=[],
                   help="capability table per teacher, in --teacher order (from `ovseg3d calibrate`)")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    p.add_argument("--select-frames", action="store_true",
                   help="run the teacher only on informative frames (greedy coverage + viewpoint variety) "
                        "reaching the coverage of --stride")
    p.add_argument("--image-size", default=None, metavar="WxH", help="resize frames (default: depth resolution)")
    p.add_argument("--occlusion-ratio", type=float, default=0.25, help="OpenScene visibility test ratio")
    p.add_argument("--overwrite", action="store_true", help="recompute scenes whose output exists")
    p.add_argument("--instance-teacher", action="store_true",
                   help="also write FOLK instance-teacher targets <scene>_instances.pt: one embedding per annotated "
                        "instance from its best views (visibility x viewpoint diversity), by the first --teacher "
                        "on crops; needs instance annotation")
    p.add_argument("--instance-views", type=int, default=5, help="views per instance (default 5)")
    p.add_argument("--workers", type=int, default=1,
                   help="shards run side by side in worker processes on the CPU (default 1; same files)")
    add_clip_args(p)
    add_shard_args(p)


def parse_size(text: str | None) -> tuple[int, int] | None:
    from ovseg3d.errors import UserError

    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"image size must look like 320x240, got {text!r}") from None
    if w < 8 or h < 8:
        raise UserError(f"image size {text} is too small")
    return w, h


def run(args: argparse.Namespace) -> int:
    from ovseg3d.commands.common import clip_spec, shard, teacher_options, templates
    from ovseg3d.pipelines.extract import ExtractOptions, extract_in_workers

    names = list(args.teacher)
    opts = ExtractOptions(teachers=names, teacher_options={n: teacher_options(args, n) for n in names},
                          labels=args.labels, clip=clip_spec(args), templates=templates(args), fusion=args.fusion,
                          capability=list(args.capability), stride=args.stride, select_frames=args.select_frames,
                          image_size=parse_size(args.image_size), occlusion_ratio=args.occlusion_ratio,
                          overwrite=args.overwrite, instance_teacher=args.instance_teacher,
                          instance_views=args.instance_views, shard=shard(args))
    extract_in_workers(args.data, args.out, opts, args.workers)
    return 0
