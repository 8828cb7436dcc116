"""`ovseg3d infer`: per-point features and labels of scenes for any vocabulary."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "label every point of scenes with the 3D student, the fused 2D features, or their ensemble"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ovseg3d.commands.common import add_clip_args

    p.add_argument("data", type=Path, help="dataset root of ScanNet-layout scenes (or one scene)")
    p.add_argument("--checkpoint", type=Path, help="student checkpoint (needed for --mode 3d and ensemble)")
    p.add_argument("--out", type=Path, required=True, help="output folder: <scene>.npz, .ply and .png per scene")
    p.add_argument("--mode", choices=["3d", "2d", "ensemble"], default="3d",
                   help="3d: the student; 2d: fused teacher features (--features); ensemble: per point the one "
                        "with the higher max text similarity (OpenScene)")
    p.add_argument("--features", type=Path, help="fused 2D feature folder (`ovseg3d extract` output)")
    p.add_argument("--labels", default=None, help="label set of the vocabulary (default: the checkpoint's)")
    p.add_argument("--vocabulary", type=Path, help="precomputed vocabulary embedding file instead of a text encoder")
    p.add_argument("--pooling", action="store_true",
                   help="geometry-guided feature pooling (GeoPurify) of the mode's features; in 2d mode the "
                        "fused features are purified as in the paper and also reach points no camera saw")
    p.add_argument("--affinity", type=Path,
                   help="GeoPurify affinity student checkpoint for --pooling (default: the student's own backbone)")
    p.add_argument("--pooling-k", type=int, default=96, help="neighbours per point (default 96, the paper's)")
    p.add_argument("--pooling-sharpen", type=float, default=20.0, help="softmax sharpening (default 20)")
    p.add_argument("--pooling-steps", type=int, default=18, help="pooling iterations (default 18)")
    p.add_argument("--instances", action="store_true",
                   help="also segment instances: superpoints merged by the student's feature similarity and "
                        "adjacency, named from the 3D features alone (FOLK's inference); in --mode 2d the same "
                        "proposals named by 2D projection with --teacher (OpenMask3D-like); `ovseg3d eval` then "
                        "reports AP")
    p.add_argument("--teacher", help="--mode 2d --instances: the 2D teacher run on crops of each proposal's best "
                                     "views (`ovseg3d teachers` lists them)")
    p.add_argument("--projection-views", type=int, default=5,
                   help="--mode 2d --instances: views per proposal, those with the most visible points (default 5)")
    p.add_argument("--instance-threshold", type=float, default=0.9,
                   help="cosine above which adjacent superpoints merge (default 0.9)")
    p.add_argument("--instance-min-points", type=int, default=100, help="smallest instance in points (default 100)")
    p.add_argument("--save-features", action="store_true", help="also store fp16 features in the .npz")
    p.add_argument("--no-pictures", action="store_true", help="skip the PLY and PNG per scene")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_clip_args(p)


def run(args: argparse.Namespace) -> int:
    from ovseg3d.commands.common import templates
    from ovseg3d.errors import UserError
    from ovseg3d.pipelines.context import load_context
    from ovseg3d.pipelines.infer import InferOptions, infer_scenes
    from ovseg3d.student.checkpoint import load_student

    opts = InferOptions(mode=args.mode, features=args.features, pooling=args.pooling, pooling_k=args.pooling_k,
                        pooling_sharpen=args.pooling_sharpen, pooling_steps=args.pooling_steps,
                        instances=args.instances, instance_threshold=args.instance_threshold,
                        instance_min_points=args.instance_min_points, projection_views=args.projection_views,
                        save_features=args.save_features, pictures=not args.no_pictures)
    opts.check(args.checkpoint is not None, args.affinity is not None, args.teacher is not None)
    own_backbone = args.pooling and args.affinity is None  # the student's backbone gives the affinity features
    ctx = load_context(args.checkpoint if opts.needs_student or own_backbone or opts.projects_instances else None,
                       device=args.device, label_set=args.labels, vocabulary_file=args.vocabulary,
                       clip_model=args.clip_model, clip_weights=args.clip_weights, templates=templates(args))
    affinity = load_student(args.affinity, ctx.device)[0] if args.affinity else None
    teacher = None
    if opts.projects_instances:
        from ovseg3d.pipelines.extract import build_teachers

        if ctx.text_encoder is None:
            raise UserError("--instances in --mode 2d needs a text encoder for its teacher (--clip-model)")
        teacher = build_teachers([args.teacher], ctx.labels.name, ctx.text_encoder, ctx.templates, {})[1][0]
    report = infer_scenes(args.data, args.out, ctx, opts, affinity, args.affinity, args.checkpoint, teacher)
    print(f"wrote predictions for {len(report['scenes'])} scene(s) to {args.out}")
    return 0
