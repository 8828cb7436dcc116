"""Answering "where is X?": per-point text similarity and instances ranked by their mean feature."""

from __future__ import annotations

import numpy as np
import torch

from ovseg3d.segment.instances import Instance


def text_scores(features: torch.Tensor, text: torch.Tensor) -> np.ndarray:
    """(N,) cosine similarity of (unit) point features to one text embedding."""
    t = torch.nn.functional.normalize(torch.as_tensor(text, dtype=torch.float32).reshape(-1), dim=0)
    return (torch.nn.functional.normalize(features.float(), dim=1) @ t).numpy()


def rank_instances(features: torch.Tensor, ids: np.ndarray, instances: list[Instance], text: torch.Tensor,
                   threshold: float = -1.0) -> list[tuple[Instance, float]]:
    """Instances whose normalised mean feature matches the text at least ``threshold``, best first
    (threshold <= -1 keeps all)."""
    t = torch.nn.functional.normalize(torch.as_tensor(text, dtype=torch.float32).reshape(-1), dim=0)
    ranked = []
    for inst in instances:
        member = torch.from_numpy(ids == inst.id)
        emb = torch.nn.functional.normalize(features[member].float().mean(0), dim=0)
        score = float(emb @ t)
        if threshold <= -1 or score >= threshold:
            ranked.append((inst, score))
    return sorted(ranked, key=lambda x: -x[1])
