"""Where in a scene is something, in any words: per-point text scores and whole instances ranked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.errors import UserError
from ovseg3d.labels import stuff_indices
from ovseg3d.pipelines.context import PipelineContext
from ovseg3d.segment.instance_classify import instance_index, student_instances
from ovseg3d.segment.instances import Instance, summarize
from ovseg3d.segment.query import instance_embeddings, rank_instances, text_scores


@dataclass
class QueryResult:
    text: str  # the query as scored (whitespace collapsed)
    point_scores: np.ndarray  # (N,) cosine of each point's feature with the query
    ranked: list[tuple[Instance, float]]  # the best instances and their scores, best first


def check_query(text: str, top: int) -> str:
    """The query with runs of whitespace collapsed; an empty one, or fewer than one answer, is refused."""
    text = " ".join(text.split())
    if not text:
        raise UserError("the query text is empty")
    if top < 1:
        raise UserError("--top must be at least 1")
    return text


def query_scene(ctx: PipelineContext, scene: ScanNetScene, text: str, top: int = 5,
                instance_threshold: float = 0.9, instance_min_points: int = 100) -> QueryResult:
    """Score every point of ``scene`` against ``text`` with the student and rank its instances
    (named and ranked by the instance head where the student has one: FOLK)."""
    text = check_query(text, top)
    if ctx.student is None:
        raise UserError("a query needs a student checkpoint")
    feats, inst_feats = ctx.student.predict_instance(scene.points, scene.colors)
    label, score = ctx.vocab.classify(feats)
    preds = student_instances(scene, feats, ctx.vocab, stuff_indices(ctx.names), instance_threshold,
                              instance_min_points, inst_feats)
    ids = instance_index(preds, scene.num_points)
    instances = summarize(scene.points, ids, label.numpy(), score.numpy(),
                          named={k: (p.label, p.score) for k, p in enumerate(preds)},
                          embeddings=instance_embeddings(feats if inst_feats is None else inst_feats, ids))
    t = ctx.embed_text(text)
    point_scores = text_scores(feats, t)
    ranked = rank_instances(instances, t)[:top]
    return QueryResult(text, point_scores, ranked)


def print_result(result: QueryResult, scene_name: str, names: list[str]) -> None:
    """The best point score and the ranked instances as a Markdown table."""
    print(f"{result.text!r} in {scene_name}: best point score {result.point_scores.max():.3f}; top instances:")
    print("| rank | instance | label | score | points | centroid (m) |\n| --- | --- | --- | --- | --- | --- |")
    for k, (inst, s) in enumerate(result.ranked, 1):
        c = ", ".join(f"{v:.2f}" for v in inst.centroid)
        print(f"| {k} | {inst.id} | {names[inst.label]} | {s:.3f} | {inst.num_points} | {c} |")


def save_pictures(result: QueryResult, scene: ScanNetScene, png: Path) -> Path:
    """A PNG of the per-point scores and a PLY beside it with the score per point; returns the PLY."""
    from ovseg3d.data.ply import write_ply
    from ovseg3d.render.points_png import render_points, save_png, values_to_colors

    colors = values_to_colors(result.point_scores)
    save_png(png, render_points(scene.points, colors))
    ply = Path(png).with_suffix(".ply")
    write_ply(ply, scene.points, colors, score=result.point_scores.astype(np.float32))
    return ply
