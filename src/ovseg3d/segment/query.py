"""Answering "where is X?": per-point text similarity and instances ranked by their pooled feature."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ovseg3d.geometry.voxels import segment_mean
from ovseg3d.segment.instances import Instance


def text_scores(features: torch.Tensor, text: torch.Tensor) -> np.ndarray:
    """(N,) cosine similarity of (unit) point features to one text embedding."""
    t = torch.nn.functional.normalize(torch.as_tensor(text, dtype=torch.float32).reshape(-1), dim=0)
    return (torch.nn.functional.normalize(features.float(), dim=1) @ t).numpy()


def instance_embeddings(features: torch.Tensor, ids: np.ndarray,
                        lift: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[int, np.ndarray]:
    """Each instance id's unit mean feature (one pooling over the points, not one pass per id).
    ``lift`` maps pooled rows to features (the live map pools code coordinates, then lifts)."""
    keep = np.flatnonzero(ids >= 0)
    if not len(keep):
        return {}
    uid, inv = np.unique(ids[keep], return_inverse=True)
    mean = segment_mean(features[torch.from_numpy(keep)].float(), torch.from_numpy(inv.reshape(-1)), len(uid))[0]
    if lift is not None:
        mean = lift(mean)
    return {int(i): e for i, e in zip(uid.tolist(), torch.nn.functional.normalize(mean, dim=1).numpy())}


def rank_instances(instances: list[Instance], text: torch.Tensor, threshold: float = -1.0
                   ) -> list[tuple[Instance, float]]:
    """Instances whose embedding matches the text at least ``threshold``, best first (threshold <= -1
    keeps all): one product with the instances' embeddings, no pass over the points."""
    named = [i for i in instances if i.embedding is not None]
    if not named:
        return []
    t = torch.nn.functional.normalize(torch.as_tensor(text, dtype=torch.float32).reshape(-1), dim=0)
    score = (torch.from_numpy(np.stack([i.embedding for i in named])).float() @ t).tolist()
    ranked = [(inst, s) for inst, s in zip(named, score) if threshold <= -1 or s >= threshold]
    return sorted(ranked, key=lambda x: -x[1])
