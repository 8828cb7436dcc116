"""`ovseg3d calibrate`: a teacher's per-class capability on labelled frames (SAS's capability table)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "measure a teacher's per-class capability (IoU) on labelled scenes, for SAS multi-teacher fusion"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ovseg3d.commands.common import add_clip_args, add_teacher_args

    p.add_argument("data", type=Path, help="labelled calibration scenes (ScanNet layout with labels and mesh)")
    p.add_argument("--out", type=Path, required=True, help="capability table to write (JSON)")
    add_teacher_args(p, multiple=False)
    p.add_argument("--stride", type=int, default=5, help="use every N-th frame (default 5)")
    add_clip_args(p)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ovseg3d.commands.common import build_teachers, clip_spec, templates
    from ovseg3d.data.scannet import ScanNetScene, list_scenes
    from ovseg3d.errors import UserError
    from ovseg3d.fusion.multiteacher import measure_capability
    from ovseg3d.text.vocabulary import build_vocabulary

    if args.stride < 1:
        raise UserError(f"--stride must be >= 1, got {args.stride}")
    labels, _, (teacher,) = build_teachers(args, [args.teacher])
    vocab = build_vocabulary(labels, clip_spec(args), templates(args))
    scenes = [ScanNetScene(p) for p in list_scenes(args.data)]
    cap = measure_capability(teacher, scenes, labels, vocab, stride=args.stride)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cap.save(args.out)
    order = np.argsort(cap.values)
    print(f"capability of {teacher.name} on {len(scenes)} scene(s), {cap.cells} labelled cells -> {args.out}")
    print("  weakest: " + ", ".join(f"{cap.classes[k]} {cap.values[k]:.2f}" for k in order[:5]))
    print("  strongest: " + ", ".join(f"{cap.classes[k]} {cap.values[k]:.2f}" for k in order[::-1][:5]))
    return 0
