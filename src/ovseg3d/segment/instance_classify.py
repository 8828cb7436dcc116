"""Naming proposals: from 3D alone (FOLK's point: the student's features suffice at inference) or
the slow 2D way (OpenMask3D-like: project each proposal into its best frames, run the 2D teacher
on a crop around it there, average its features over the proposal's pixels)."""

from __future__ import annotations

import torch

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.eval.instance import InstancePrediction
from ovseg3d.fusion.instance_views import EmbeddingStats, instance_embeddings, instance_views
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


def pooled_features(point_features: torch.Tensor, proposals: list[Proposal]) -> torch.Tensor:
    """(K, D) unit mean of per-point features (e.g. the student's instance head) over each proposal."""
    if not proposals:
        return torch.zeros(0, point_features.shape[1])
    return torch.nn.functional.normalize(
        torch.stack([point_features[torch.from_numpy(p.mask)].float().mean(0) for p in proposals]), dim=1)


def projected_features(scene: ScanNetScene, proposals: list[Proposal], teacher, top_k: int = 5,
                       frame_stride: int = 1, crop: bool = True) -> tuple[torch.Tensor, EmbeddingStats]:
    """(K, D) per proposal, the OpenMask3D-like way: its ``top_k`` frames with the most visible
    points, the teacher run on a crop around it in each, averaged over its pixels."""
    masks = [p.mask for p in proposals]
    views = instance_views(scene, masks, top_k, select="count", frame_stride=frame_stride)
    return instance_embeddings(scene, masks, teacher, views, crop=crop)
