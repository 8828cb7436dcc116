"""Geometry-guided feature pooling at inference (GeoPurify).

Each point's feature is replaced, ``steps`` times, by an affinity-weighted mean over its K
nearest neighbours in space: A_ij = softmax_j(sharpen * cos(g_i, g_j)) over the K neighbours,
F <- A F. The affinity features g come from a geometry-aware network: GeoPurify trains a small
affinity student contrastively against a frozen 3D teacher; by default we use the distilled
student's own backbone features, which were learned from geometry alone. Defaults are the
paper's: K = 96, sharpening 20, 18 steps. A is a sparse (N x N) matrix, so memory is N*K.

GeoPurify pools the teacher's 2D-fused features, which exist only where a camera saw the point.
With a ``valid`` mask the pooling is normalised: the mask is propagated with the features and
the result divided by it, so each point gets the affinity-weighted mean of the *seen* points that
reach it, and unseen points reached by seen ones get a feature too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ovseg3d.errors import UserError
from ovseg3d.geometry.neighbors import knn

GEOPURIFY_K = 96
GEOPURIFY_SHARPEN = 20.0
GEOPURIFY_STEPS = 18


def check_pooling_parameters(k: int, sharpen: float, steps: int) -> None:
    if k < 1 or steps < 0 or not np.isfinite(sharpen) or sharpen < 0:
        raise UserError(f"pooling needs K >= 1, steps >= 0 and a finite sharpening >= 0; "
                        f"got K={k}, steps={steps}, sharpening={sharpen}")


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
    A = torch.sparse_coo_tensor(torch.stack([rows, idx.reshape(-1)]), w.reshape(-1), (n, n),
                                check_invariants=False)
    return A.coalesce().to_sparse_csr()


def propagate(A: torch.Tensor, features: torch.Tensor, steps: Iterable[int],
              valid: torch.Tensor | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(t, F_t, reached_t) after each requested number of steps t, in increasing order.

    ``reached`` says which points got any weight from a valid point (all of them without a mask);
    unreached points keep a zero feature.
    """
    x = features.float()
    if valid is not None:  # carry the mask as one more column: the sums of weights from seen points
        m = valid.float()[:, None]
        x = torch.cat([x * m, m], dim=1)
    done = 0
    for t in sorted(set(steps)):
        for _ in range(t - done):
            x = A @ x
        done = t
        if valid is None:
            yield t, x, torch.ones(len(x), dtype=torch.bool)
        else:
            mass = x[:, -1:]
            reached = mass[:, 0] > 1e-12
            yield t, torch.where(reached[:, None], x[:, :-1] / mass.clamp_min(1e-12), 0.0), reached


def geometric_pooling(points: np.ndarray, features: torch.Tensor, affinity_features: torch.Tensor,
                      k: int = GEOPURIFY_K, sharpen: float = GEOPURIFY_SHARPEN, steps: int = GEOPURIFY_STEPS,
                      valid: torch.Tensor | None = None) -> torch.Tensor:
    """Features (N, D) after ``steps`` rounds of F <- A F (normalised over ``valid`` points if given)."""
    check_pooling_parameters(k, sharpen, steps)
    if steps == 0 or len(points) < 2:
        return features
    A = affinity_matrix(points, affinity_features, k, sharpen)
    return next(propagate(A, features, [steps], valid))[1]
