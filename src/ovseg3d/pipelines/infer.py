"""Label every point of scenes: the 3D student, the fused 2D features, or OpenScene's ensemble of
both, optionally purified by geometric pooling (GeoPurify) and grouped into instances (FOLK)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ovseg3d.data.openscene import fused_path, load_fused_dense
from ovseg3d.data.ply import write_ply
from ovseg3d.data.scannet import ScanNetScene, list_scenes
from ovseg3d.errors import UserError
from ovseg3d.fusion.instance_views import embed_instances
from ovseg3d.labels import stuff_indices
from ovseg3d.pipelines.context import PipelineContext
from ovseg3d.progress import bar
from ovseg3d.render.points_png import render_points, save_png
from ovseg3d.segment.instance_classify import instance_index, name_instances, scene_proposals, student_instances
from ovseg3d.segment.labeling import ensemble_2d_3d
from ovseg3d.student.model import Student
from ovseg3d.student.pooling import affinity_matrix, check_pooling_parameters, propagate
from ovseg3d.teachers.base import Teacher

MODES = ("3d", "2d", "ensemble")


@dataclass
class InferOptions:
    mode: str = "3d"  # 3d: the student; 2d: fused teacher features; ensemble: the higher max text similarity
    features: Path | None = None  # fused 2D feature folder (`extract` output), for 2d and ensemble
    pooling: bool = False  # GeoPurify's geometric pooling of the mode's features
    pooling_k: int = 96
    pooling_sharpen: float = 20.0
    pooling_steps: int = 18
    # superpoints merged by student-feature similarity; named from 3D alone (FOLK) in 3d and ensemble
    # mode, by 2D projection of the same proposals (a teacher on crops, OpenMask3D-like) in 2d mode
    instances: bool = False
    instance_threshold: float = 0.9
    instance_min_points: int = 100
    projection_views: int = 5  # 2d mode: frames per proposal with the most visible points
    save_features: bool = False
    pictures: bool = True

    @property
    def needs_student(self) -> bool:
        return self.mode in ("3d", "ensemble")

    @property
    def needs_features(self) -> bool:
        return self.mode in ("2d", "ensemble")

    @property
    def projects_instances(self) -> bool:
        """2d mode's instances: the student's proposals named by a 2D teacher (OpenMask3D-like)."""
        return self.instances and self.mode == "2d"

    def check(self, has_student: bool, has_affinity: bool, has_teacher: bool = False) -> None:
        """Refuse a combination that cannot run, before any scene is read."""
        if self.mode not in MODES:
            raise UserError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.needs_student and not has_student:
            raise UserError(f"--mode {self.mode} needs --checkpoint")
        if self.needs_features and self.features is None:
            raise UserError(f"--mode {self.mode} needs --features (the `ovseg3d extract` output)")
        if self.projects_instances and not has_student:
            raise UserError("--instances in --mode 2d needs --checkpoint: the student's proposals are named by 2D "
                            "projection")
        if self.projects_instances and not has_teacher:
            raise UserError("--instances in --mode 2d needs --teacher: the 2D teacher that names the proposals")
        if self.projection_views < 1:
            raise UserError(f"--projection-views must be >= 1, got {self.projection_views}")
        if self.pooling:
            check_pooling_parameters(self.pooling_k, self.pooling_sharpen, self.pooling_steps)
            if not has_affinity and not has_student:
                raise UserError("--pooling needs --affinity (or a --checkpoint whose backbone serves)")


@dataclass
class ScenePrediction:
    features: torch.Tensor  # (N, D) per-point features the labels come from
    labels: np.ndarray  # (N,) int16 class index into the vocabulary, -1: none
    scores: np.ndarray  # (N,) float text similarity of the label
    instance_features: torch.Tensor | None = None  # the instance head's, when the student has one
    proposal_features: torch.Tensor | None = None  # the student's, where ``features`` are not (2d mode)


def predict_scene(scene: ScanNetScene, ctx: PipelineContext, opts: InferOptions,
                  affinity: Student | None = None) -> ScenePrediction:
    """Features and labels of one scene under ``opts`` (the per-scene core of ``infer_scenes``)."""
    student = ctx.student
    feats = f2d = mask = inst_feats = None
    if opts.needs_student:
        if opts.instances:  # FOLK: instances named by the instance head, when there is one
            feats, inst_feats = student.predict_instance(scene.points, scene.colors)
        else:
            feats = student.predict(scene.points, scene.colors)
    proposal_feats = None
    if opts.projects_instances:  # the same proposals as 3d mode, to be named by projection
        proposal_feats = student.predict(scene.points, scene.colors)
    if opts.needs_features:
        f2d, mask = load_fused_dense(fused_path(opts.features, scene.name), scene.num_points)
    if opts.pooling and scene.num_points > 1:
        if affinity is not None:
            aff = affinity.predict(scene.points, scene.colors)
        else:
            aff = student.predict_backbone(scene.points, scene.colors)
        A = affinity_matrix(scene.points, aff, opts.pooling_k, opts.pooling_sharpen)
        if feats is not None:
            feats = next(propagate(A, feats, [opts.pooling_steps]))[1]
        if f2d is not None:  # GeoPurify: purify the fused features; seen points reach unseen ones
            _, f2d, mask = next(propagate(A, f2d, [opts.pooling_steps], valid=mask))
    if f2d is not None:
        feats = f2d if feats is None else ensemble_2d_3d(feats, f2d, mask, ctx.vocab)[0]
    label, score = ctx.vocab.classify(feats)
    label = label.numpy().astype(np.int16)
    if opts.mode == "2d":
        label[~mask.numpy()] = -1  # no 2D feature: no label
    return ScenePrediction(feats, label, score.numpy(), inst_feats, proposal_feats)


def scene_instances(scene: ScanNetScene, pred: ScenePrediction, ctx: PipelineContext, opts: InferOptions,
                    teacher: Teacher | None = None) -> dict:
    """Per-point instance index (-1: none) with each instance's label and score, as `eval` reads them."""
    stuff = stuff_indices(ctx.names)
    if pred.proposal_features is None:
        preds = student_instances(scene, pred.features, ctx.vocab, stuff, opts.instance_threshold,
                                  opts.instance_min_points, pred.instance_features)
    else:  # OpenMask3D-like: the teacher on crops of each proposal's best views, averaged
        proposals = scene_proposals(scene, pred.proposal_features, opts.instance_threshold, opts.instance_min_points)
        named, _ = embed_instances(scene, [p.mask for p in proposals], teacher, opts.projection_views, "count")
        preds = name_instances(named, proposals, ctx.vocab, stuff)
    return {"instance_ids": instance_index(preds, scene.num_points),
            "instance_labels": np.array([p.label for p in preds], np.int32),
            "instance_scores": np.array([p.score for p in preds], np.float32)}


def infer_scenes(data: Path, out: Path, ctx: PipelineContext, opts: InferOptions,
                 affinity: Student | None = None, affinity_path: Path | None = None,
                 checkpoint: Path | None = None, teacher: Teacher | None = None) -> dict:
    """Write ``<scene>.npz`` (and .ply/.png) per scene of ``data`` into ``out``, plus ``infer.json``;
    returns that report (``checkpoint``: the one named in it, default the context's; ``teacher``:
    the 2D teacher that names 2d mode's instances)."""
    opts.check(ctx.student is not None, affinity is not None, teacher is not None)
    scenes = list_scenes(data)
    out.mkdir(parents=True, exist_ok=True)
    names = ctx.names
    colors = ctx.labels.colors if ctx.labels is not None and len(ctx.labels) == len(names) else None
    report = []
    with bar(len(scenes), "infer", "scene") as pbar:
        for path in scenes:
            scene = ScanNetScene(path)
            t0 = time.perf_counter()
            pred = predict_scene(scene, ctx, opts, affinity)
            result = {"labels": pred.labels, "scores": pred.scores.astype(np.float16), "names": np.array(names)}
            if opts.instances:
                result.update(scene_instances(scene, pred, ctx, opts, teacher))
            if opts.save_features:
                result["features"] = pred.features.half().numpy()
            np.savez_compressed(out / f"{scene.name}.npz", **result)
            if opts.pictures and colors is not None:
                col = ctx.labels.colorize(pred.labels)
                write_ply(out / f"{scene.name}.ply", scene.points, col, label=pred.labels.astype(np.int16))
                save_png(out / f"{scene.name}.png", render_points(scene.points, col))
            report.append({"scene": scene.name, "points": scene.num_points,
                           "seconds": round(time.perf_counter() - t0, 2)})
            pbar.update()
    pooling = None if not opts.pooling else {
        "k": opts.pooling_k, "sharpen": opts.pooling_sharpen, "steps": opts.pooling_steps,
        "affinity": str(affinity_path) if affinity_path else "student backbone"}
    student = ctx.student
    checkpoint = checkpoint or ctx.checkpoint_path
    naming = None
    if opts.projects_instances:
        naming = f"2D projection ({teacher.name}, {opts.projection_views} views)"
    elif opts.instances:
        naming = "instance head" if student is not None and student.has_instance_head else "mean feature"
    summary = {
        "mode": opts.mode, "checkpoint": str(checkpoint) if checkpoint else None, "labels": names,
        "label_set": ctx.labels.name, "pooling": pooling, "vocabulary": ctx.vocab.source,
        "instance_naming": naming,
        "scenes": report}
    (out / "infer.json").write_text(json.dumps(summary, indent=1))
    return summary
