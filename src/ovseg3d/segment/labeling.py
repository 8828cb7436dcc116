"""Per-point labels from features, and OpenScene's 2D-3D ensemble."""

from __future__ import annotations

import torch

from ovseg3d.text.vocabulary import Vocabulary


def ensemble_2d_3d(f3d: torch.Tensor, f2d: torch.Tensor, mask2d: torch.Tensor, vocab: Vocabulary
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point, whichever of the 3D and fused 2D features has the higher maximum text similarity
    (OpenScene's ensemble); points the 2D teacher never saw keep the 3D feature.

    Returns (features (N, D), chose_2d (N,) bool).
    """
    s3 = vocab.scores(f3d).max(1).values
    s2 = torch.full_like(s3, -torch.inf)
    s2[mask2d] = vocab.scores(f2d[mask2d]).max(1).values
    chose_2d = s2 > s3
    out = f3d.clone()
    out[chose_2d] = torch.nn.functional.normalize(f2d[chose_2d].float(), dim=1)
    return out, chose_2d
