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
                   help="also segment instances: superpoints merged by feature similarity and adjacency, named "
                        "from the 3D features alone (FOLK's inference); `ovseg3d eval` then reports AP")
    p.add_argument("--instance-threshold", type=float, default=0.9,
                   help="cosine above which adjacent superpoints merge (default 0.9)")
    p.add_argument("--instance-min-points", type=int, default=100, help="smallest instance in points (default 100)")
    p.add_argument("--save-features", action="store_true", help="also store fp16 features in the .npz")
    p.add_argument("--no-pictures", action="store_true", help="skip the PLY and PNG per scene")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_clip_args(p)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    import numpy as np
    import torch

    from ovseg3d.commands.common import student_clip_spec, templates
    from ovseg3d.data.openscene import fused_path, load_fused_dense
    from ovseg3d.data.ply import write_ply
    from ovseg3d.data.scannet import ScanNetScene, list_scenes
    from ovseg3d.errors import UserError
    from ovseg3d.labels import load_label_set
    from ovseg3d.progress import bar
    from ovseg3d.render.points_png import render_points, save_png
    from ovseg3d.segment.labeling import ensemble_2d_3d
    from ovseg3d.student.checkpoint import load_student
    from ovseg3d.student.model import default_device
    from ovseg3d.student.pooling import affinity_matrix, check_pooling_parameters, propagate
    from ovseg3d.text.vocabulary import build_vocabulary, load_vocabulary

    need_3d, need_2d = args.mode in ("3d", "ensemble"), args.mode in ("2d", "ensemble")
    if need_3d and args.checkpoint is None:
        raise UserError(f"--mode {args.mode} needs --checkpoint")
    if need_2d and args.features is None:
        raise UserError(f"--mode {args.mode} needs --features (the `ovseg3d extract` output)")
    if args.pooling:
        check_pooling_parameters(args.pooling_k, args.pooling_sharpen, args.pooling_steps)
        if args.affinity is None and args.checkpoint is None:
            raise UserError("--pooling needs --affinity (or a --checkpoint whose backbone serves)")
    device = default_device() if args.device == "auto" else torch.device(args.device)
    own_backbone = args.pooling and args.affinity is None  # the student's backbone gives the affinity features
    student, ckpt = load_student(args.checkpoint, device) if need_3d or own_backbone else (None, {})
    affinity = load_student(args.affinity, device)[0] if args.affinity else None
    labels = load_label_set(args.labels or ckpt.get("label_set", "scannet20"))
    if args.vocabulary:
        vocab = load_vocabulary(args.vocabulary)
        names = list(vocab.names)
    else:
        vocab = build_vocabulary(labels, student_clip_spec(ckpt, args.clip_model, args.clip_weights),
                                 templates(args))
        names = list(labels.names)
    if student is not None and vocab.dim != student.cfg.feature_dim:
        raise UserError(f"the vocabulary is {vocab.dim}-d but the student predicts "
                        f"{student.cfg.feature_dim}-d features")
    scenes = list_scenes(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    colors = labels.colors if len(labels) == len(names) else None
    report = []
    with bar(len(scenes), "infer", "scene") as pbar:
        for path in scenes:
            scene = ScanNetScene(path)
            t0 = time.perf_counter()
            feats = f2d = inst_feats = None
            if need_3d:
                if args.instances:  # FOLK: instances named by the instance head, when there is one
                    feats, inst_feats = student.predict_instance(scene.points, scene.colors)
                else:
                    feats = student.predict(scene.points, scene.colors)
            if need_2d:
                f2d, mask = load_fused_dense(fused_path(args.features, scene.name), scene.num_points)
            if args.pooling and scene.num_points > 1:
                if affinity is not None:
                    aff = affinity.predict(scene.points, scene.colors)
                else:
                    aff = student.predict_backbone(scene.points, scene.colors)
                A = affinity_matrix(scene.points, aff, args.pooling_k, args.pooling_sharpen)
                if feats is not None:
                    feats = next(propagate(A, feats, [args.pooling_steps]))[1]
                if f2d is not None:  # GeoPurify: purify the fused features; seen points reach unseen ones
                    _, f2d, mask = next(propagate(A, f2d, [args.pooling_steps], valid=mask))
            if f2d is not None:
                feats = f2d if feats is None else ensemble_2d_3d(feats, f2d, mask, vocab)[0]
            label, score = vocab.classify(feats)
            label = label.numpy().astype(np.int16)
            if args.mode == "2d":
                label[~mask.numpy()] = -1  # no 2D feature: no label
            out = {"labels": label, "scores": score.numpy().astype(np.float16), "names": np.array(names)}
            if args.instances:
                out.update(_instances(scene, feats, vocab, names, args, inst_feats))
            if args.save_features:
                out["features"] = feats.half().numpy()
            np.savez_compressed(args.out / f"{scene.name}.npz", **out)
            if not args.no_pictures and colors is not None:
                col = labels.colorize(label)
                write_ply(args.out / f"{scene.name}.ply", scene.points, col, label=label.astype(np.int16))
                save_png(args.out / f"{scene.name}.png", render_points(scene.points, col))
            report.append({"scene": scene.name, "points": scene.num_points,
                           "seconds": round(time.perf_counter() - t0, 2)})
            pbar.update()
    pooling = None if not args.pooling else {
        "k": args.pooling_k, "sharpen": args.pooling_sharpen, "steps": args.pooling_steps,
        "affinity": str(args.affinity) if args.affinity else "student backbone"}
    (args.out / "infer.json").write_text(json.dumps({
        "mode": args.mode, "checkpoint": str(args.checkpoint) if args.checkpoint else None, "labels": names,
        "label_set": labels.name, "pooling": pooling, "vocabulary": vocab.source,
        "instance_naming": (None if not args.instances else "instance head" if student is not None
                            and student.has_instance_head else "mean feature"), "scenes": report}, indent=1))
    print(f"wrote predictions for {len(report)} scene(s) to {args.out}")
    return 0


def _instances(scene, feats, vocab, names: list[str], args: argparse.Namespace, inst_feats=None) -> dict:
    """Per-point instance index (-1: none) with each instance's label and score, as `eval` reads them."""
    import numpy as np

    from ovseg3d.labels import stuff_indices
    from ovseg3d.segment.instance_classify import instance_index, student_instances

    preds = student_instances(scene, feats, vocab, stuff_indices(names), args.instance_threshold,
                              args.instance_min_points, inst_feats)
    return {"instance_ids": instance_index(preds, scene.num_points),
            "instance_labels": np.array([p.label for p in preds], np.int32),
            "instance_scores": np.array([p.score for p in preds], np.float32)}
