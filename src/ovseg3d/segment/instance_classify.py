"""Naming proposals: from 3D alone (FOLK's point: the student's features suffice at inference) or
the slow 2D way (OpenMask3D-like: project each proposal into its best frames, run the 2D teacher
there, average its features over the proposal's pixels)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.eval.instance import InstancePrediction
from ovseg3d.fusion.multiview import as_feature_map, sample_feature_map
from ovseg3d.geometry.camera import visible_points
from ovseg3d.segment.proposals import Proposal
from ovseg3d.text.vocabulary import Vocabulary


def name_instances(features: torch.Tensor, proposals: list[Proposal], vocab: Vocabulary,
                   stuff: set[int] = frozenset(), logit_scale: float = 100.0) -> list[InstancePrediction]:
    """One prediction per proposal whose feature is named something other than stuff: class =
    best text match of ``features`` (K, D; one per proposal), score = proposal confidence x the
    class's softmax probability at CLIP's logit scale."""
    if not proposals:
        return []
    probs = torch.softmax(logit_scale * vocab.scores(features), dim=1)
    conf, label = probs.max(1)
    out = []
    for p, lab, c in zip(proposals, label.tolist(), conf.tolist()):
        if lab not in stuff:
            out.append(InstancePrediction(mask=p.mask, label=int(lab), score=float(p.confidence * c)))
    return out


@dataclass
class ProjectionStats:
    frames_run: int  # teacher calls
    seconds: float


def projected_features(scene: ScanNetScene, proposals: list[Proposal], teacher, top_k: int = 5,
                       frame_stride: int = 1) -> tuple[torch.Tensor, ProjectionStats]:
    """(K, D) per proposal: the teacher's features averaged over the proposal's visible pixels in
    its ``top_k`` frames with the most visible points (proposals never seen get zeros)."""
    t0 = time.perf_counter()
    frames = {f.frame_id: f for f in scene.frames(stride=frame_stride)}
    visible = {}
    counts = np.zeros((len(proposals), len(frames)), np.int64)
    for j, (fid, f) in enumerate(frames.items()):
        vis = visible_points(scene.points, f.pose, f.K, f.image_size, f.depth)
        visible[fid] = vis
        seen = np.zeros(scene.num_points, bool)
        seen[vis.index] = True
        for k, p in enumerate(proposals):
            counts[k, j] = int((p.mask & seen).sum())
    ids = list(frames)
    chosen = [[ids[j] for j in np.argsort(-counts[k])[:top_k] if counts[k, j] > 0] for k in range(len(proposals))]
    teacher.begin_scene(scene)
    maps = {}
    for fid in sorted({fid for c in chosen for fid in c}):
        maps[fid] = as_feature_map(teacher(frames[fid]))
    dim = next(iter(maps.values())).features.shape[0] if maps else 1
    out = torch.zeros(len(proposals), dim)
    for k, p in enumerate(proposals):
        acc, n = torch.zeros(dim), 0
        for fid in chosen[k]:
            vis = visible[fid]
            sel = p.mask[vis.index]
            if not sel.any():
                continue
            feats, _ = sample_feature_map(maps[fid], vis.v[sel], vis.u[sel], frames[fid].image_size)
            acc += torch.nn.functional.normalize(feats.float(), dim=1).sum(0)
            n += int(sel.sum())
        if n:
            out[k] = torch.nn.functional.normalize(acc / n, dim=0)
    return out, ProjectionStats(frames_run=len(maps), seconds=time.perf_counter() - t0)
