"""Naming proposals from per-proposal features: the student's (FOLK's point: 3D suffices at
inference) or the 2D teacher's (``fusion.instance_views.embed_instances``, the slow
OpenMask3D-like way)."""

from __future__ import annotations

import numpy as np
import torch

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.errors import UserError
from ovseg3d.geometry.superpoints import point_superpoints
from ovseg3d.segment.proposals import InstancePrediction, Proposal, merge_superpoints
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


def pooled_features(point_features: torch.Tensor, proposals: list[Proposal]) -> torch.Tensor:
    """(K, D) unit mean of per-point features (e.g. the student's instance head) over each proposal."""
    if not proposals:
        return torch.zeros(0, point_features.shape[1])
    return torch.nn.functional.normalize(
        torch.stack([point_features[torch.from_numpy(p.mask)].float().mean(0) for p in proposals]), dim=1)


def name_proposals(proposals: list[Proposal], vocab: Vocabulary, stuff: set[int],
                   instance_features: torch.Tensor | None = None) -> list[InstancePrediction]:
    """Proposals named from 3D alone: by their pooled instance-head feature when the student has
    that head (FOLK), else by their mean semantic feature."""
    if instance_features is not None:
        naming = pooled_features(instance_features, proposals)
    else:
        naming = torch.stack([p.feature for p in proposals]) if proposals else torch.zeros(0, vocab.dim)
    return name_instances(naming, proposals, vocab, stuff)


def scene_proposals(scene: ScanNetScene, features: torch.Tensor, threshold: float = 0.9,
                    min_points: int = 100) -> list[Proposal]:
    """Class-agnostic proposals of a scene from per-point (student) features: its superpoints (the
    scene's ScanNet over-segmentation, or made from its points) merged by similarity and adjacency."""
    try:
        superpoints = scene.segments
    except UserError:
        superpoints = point_superpoints(scene.points, colors=scene.colors)
    return merge_superpoints(scene.points, features, superpoints, threshold, min_points)


def student_instances(scene: ScanNetScene, features: torch.Tensor, vocab: Vocabulary, stuff: set[int],
                      threshold: float = 0.9, min_points: int = 100,
                      instance_features: torch.Tensor | None = None) -> list[InstancePrediction]:
    """Instances from 3D alone: ``scene_proposals`` named by ``name_proposals``."""
    return name_proposals(scene_proposals(scene, features, threshold, min_points), vocab, stuff, instance_features)


def instance_index(predictions: list[InstancePrediction], num_points: int) -> np.ndarray:
    """(N,) index of each point's instance (-1: none); a point in several goes to the first."""
    ids = np.full(num_points, -1, np.int32)
    for k, pred in enumerate(predictions):
        ids[pred.mask & (ids < 0)] = k
    return ids
