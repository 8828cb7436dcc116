"""Geometry-guided feature pooling at inference (GeoPurify).

Each point's feature is replaced, ``steps`` times, by an affinity-weighted mean over its K
nearest neighbours in space: A_ij = softmax_j(sharpen * cos(g_i, g_j)) over the K neighbours,
F <- A F. The affinity features g come from a geometry-aware network: GeoPurify trains a small
affinity student contrastively against a frozen 3D teacher; by default we use the distilled
student's own backbone features, which were learned from geometry alone. Defaults are the
paper's: K = 96, sharpening 20, 18 steps. A is a sparse (N x N) matrix, so memory is N*K.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ovseg3d.geometry.neighbors import knn

GEOPURIFY_K = 96
GEOPURIFY_SHARPEN = 20.0
GEOPURIFY_STEPS = 18


def affinity_matrix(points: np.ndarray, affinity_features: torch.Tensor, k: int = GEOPURIFY_K,
                    sharpen: float = GEOPURIFY_SHARPEN) -> torch.Tensor:
    """Row-stochastic sparse (N, N) affinity over each point's k nearest neighbours (itself included)."""
    n = len(points)
    _, idx = knn(points, min(k, n))
    idx = torch.as_tensor(idx, dtype=torch.int64)
    g = F.normalize(affinity_features.float(), dim=1)
    sim = (g[:, None, :] * g[idx]).sum(-1) if n * idx.shape[1] * g.shape[1] < 5e7 else torch.cat(
        [(g[i:i + 4096, None, :] * g[idx[i:i + 4096]]).sum(-1) for i in range(0, n, 4096)])
    w = torch.softmax(sharpen * sim, dim=1)
    rows = torch.arange(n).repeat_interleave(idx.shape[1])
    A = torch.sparse_coo_tensor(torch.stack([rows, idx.reshape(-1)]), w.reshape(-1), (n, n))
    return A.coalesce().to_sparse_csr()


def geometric_pooling(points: np.ndarray, features: torch.Tensor, affinity_features: torch.Tensor,
                      k: int = GEOPURIFY_K, sharpen: float = GEOPURIFY_SHARPEN, steps: int = GEOPURIFY_STEPS
                      ) -> torch.Tensor:
    """Features (N, D) after ``steps`` rounds of F <- A F."""
    if steps <= 0 or len(points) < 2:
        return features
    A = affinity_matrix(points, affinity_features, k, sharpen)
    out = features.float()
    for _ in range(steps):
        out = A @ out
    return out
