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
    import numpy as np
    import torch

    from ovseg3d.commands.common import student_clip_spec, templates
    from ovseg3d.data.scannet import ScanNetScene
    from ovseg3d.errors import UserError
    from ovseg3d.labels import load_label_set, stuff_indices
    from ovseg3d.segment.instance_classify import instance_index, student_instances
    from ovseg3d.segment.instances import summarize
    from ovseg3d.segment.query import rank_instances, text_scores
    from ovseg3d.student.checkpoint import load_student
    from ovseg3d.student.model import default_device
    from ovseg3d.text.vocabulary import build_vocabulary, embed_prompts

    text = " ".join(args.text.split())
    if not text:
        raise UserError("the query text is empty")
    if args.top < 1:
        raise UserError("--top must be at least 1")
    device = default_device() if args.device == "auto" else torch.device(args.device)
    student, ckpt = load_student(args.checkpoint, device)
    spec = student_clip_spec(ckpt, args.clip_model, args.clip_weights)
    labels = load_label_set(args.labels or ckpt.get("label_set", "scannet20"))
    vocab = build_vocabulary(labels, spec, templates(args))
    if vocab.dim != student.cfg.feature_dim:
        raise UserError(f"the text encoder gives {vocab.dim}-d embeddings but the student {student.cfg.feature_dim}-d")
    scene = ScanNetScene(args.scene)
    # FOLK: with an instance head, instances are named and ranked by its features
    feats, inst_feats = student.predict_instance(scene.points, scene.colors)
    label, score = vocab.classify(feats)
    preds = student_instances(scene, feats, vocab, stuff_indices(labels.names), args.instance_threshold,
                              args.instance_min_points, inst_feats)
    ids = instance_index(preds, scene.num_points)
    instances = summarize(scene.points, ids, label.numpy(), score.numpy(),
                          named={k: (p.label, p.score) for k, p in enumerate(preds)})
    t = embed_prompts([text], spec, templates(args))[0]
    point_scores = text_scores(feats, t)
    ranked = rank_instances(feats if inst_feats is None else inst_feats, ids, instances, t)[: args.top]
    print(f"{text!r} in {scene.name}: best point score {point_scores.max():.3f}; top instances:")
    print("| rank | instance | label | score | points | centroid (m) |\n| --- | --- | --- | --- | --- | --- |")
    for k, (inst, s) in enumerate(ranked, 1):
        c = ", ".join(f"{v:.2f}" for v in inst.centroid)
        print(f"| {k} | {inst.id} | {labels.names[inst.label]} | {s:.3f} | {inst.num_points} | {c} |")
    if args.out:
        from ovseg3d.data.ply import write_ply
        from ovseg3d.render.points_png import render_points, save_png, values_to_colors

        colors = values_to_colors(point_scores)
        save_png(args.out, render_points(scene.points, colors))
        write_ply(Path(args.out).with_suffix(".ply"), scene.points, colors, score=point_scores.astype(np.float32))
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.ply')}")
    return 0
