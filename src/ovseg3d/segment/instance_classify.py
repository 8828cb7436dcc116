"""Naming proposals from per-proposal features: the student's (FOLK's point: 3D suffices at
inference) or the 2D teacher's (``fusion.instance_views.embed_instances``, the slow
OpenMask3D-like way)."""

from __future__ import annotations

import torch

from ovseg3d.eval.instance import InstancePrediction
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

