"""Class-agnostic 3D instance proposals from geometry and student features.

Choice: agglomerative merging of superpoints. Superpoints already follow geometric boundaries
(97 % label purity on synthetic clouds), so an object is a union of a few of them; two touching
superpoints belong to one object when their features agree. Merging greedily by the most similar
*adjacent* pair, with the merged group's mean feature recomputed after every merge, stops chains
(A~B, B~C, A!~C) that plain connected components over thresholded edges would join, and needs no
number of instances. Density clustering in position x feature space (HDBSCAN) was the other
candidate; it needs a scale between metres and cosine units and splits thin objects.

Confidence of a proposal = mean cosine between its points' features and its mean feature
(compact in feature space = one thing), times a size factor that discounts tiny groups.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch

from ovseg3d.errors import UserError
from ovseg3d.geometry.neighbors import Neighbourhood
from ovseg3d.geometry.rows import unique_rows


@dataclass
class Proposal:
    """A class-agnostic group of points: what merging superpoints makes."""

    mask: np.ndarray  # (N,) bool
    confidence: float
    feature: torch.Tensor  # (D,) unit mean feature


@dataclass
class InstancePrediction:
    """A proposal once named (``segment.instance_classify``): what evaluation and export read."""

    mask: np.ndarray  # (N,) bool over the scene's points
    label: int  # class index
    score: float


def superpoint_adjacency(points: np.ndarray, superpoints: np.ndarray, k: int = 8, max_dist: float = 0.1,
                         neighbours: Neighbourhood | None = None) -> np.ndarray:
    """(E, 2) pairs of superpoint indices (0..S-1 in ``np.unique`` order) whose points are k-NN
    neighbours within ``max_dist`` (``neighbours``: the points' k-NN query, when there is one)."""
    _, sp = np.unique(superpoints, return_inverse=True)
    sp = sp.reshape(-1)
    if neighbours is None or neighbours.k < min(len(points), k + 1):
        neighbours = Neighbourhood.of(points, k + 1)
    dist, nn = neighbours.dist[:, : k + 1], neighbours.idx[:, : k + 1]
    a = np.repeat(np.arange(len(points)), nn.shape[1])
    b = nn.reshape(-1)
    ok = dist.reshape(-1) < max_dist
    sa, sb = sp[a[ok]], sp[b[ok]]
    pairs = unique_rows(np.sort(np.stack([sa, sb], 1)[sa != sb], axis=1))
    return pairs


def merge_superpoints(points: np.ndarray, features: torch.Tensor, superpoints: np.ndarray,
                      threshold: float = 0.9, min_points: int = 50, adjacency_dist: float = 0.1,
                      weights: np.ndarray | None = None, min_weight: float = 0.0,
                      neighbours: Neighbourhood | None = None) -> list[Proposal]:
    """Proposals: adjacent superpoints merged while their mean features' cosine exceeds
    ``threshold``; groups under ``min_points`` points, or under ``min_weight`` of ``weights`` (one
    per point, e.g. the map voxels a grid cell holds), are dropped before any mask is made.
    Cosines are only inner products of unit vectors, so ``features`` may be any isometric image
    of the real ones (e.g. a few code coordinates instead of 512-d features)."""
    if not -1.0 <= threshold <= 1.0:  # also refuses NaN
        raise UserError(f"the instance threshold is a cosine in [-1, 1], got {threshold}")
    if min_points < 1:
        raise UserError(f"the instance min points must be at least 1, got {min_points}")
    feats = torch.nn.functional.normalize(features.float(), dim=1)
    ids, sp = np.unique(superpoints, return_inverse=True)
    sp = sp.reshape(-1)
    s = len(ids)
    # numpy in the merge loop: one merge's few small products cost microseconds, torch's calls ten times that
    sums = torch.zeros(s, feats.shape[1]).index_add_(0, torch.from_numpy(sp), feats).numpy()
    parent = np.arange(s)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    pairs = superpoint_adjacency(points, superpoints, max_dist=adjacency_dist, neighbours=neighbours)
    # neighbours by the ids they had when last looked at: resolved with find() when used, so a merge
    # touches only its own set (rewriting every neighbour's set made a wall with hundreds of
    # neighbours cost seconds)
    adjacent: list[set[int]] = [set() for _ in range(s)]
    for a, b in pairs.tolist():
        adjacent[a].add(b)
        adjacent[b].add(a)

    def unit(rows) -> np.ndarray:
        v = sums[rows]
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

    # every adjacent pair's cosine in one product, then one per merge for the merged group's neighbours
    first = (unit(pairs[:, 0]) * unit(pairs[:, 1])).sum(1).tolist() if len(pairs) else []
    version = np.zeros(s, np.int64)  # bumped on every merge: heap entries of older versions are stale
    heap = [(-c, a, b, 0, 0) for c, (a, b) in zip(first, pairs.tolist())]
    heapq.heapify(heap)
    while heap:
        neg, a, b, va, vb = heapq.heappop(heap)
        if -neg < threshold:
            break
        if parent[a] != a or parent[b] != b or version[a] != va or version[b] != vb:
            continue  # stale entry: one side was merged since
        parent[b] = a
        sums[a] += sums[b]
        version[a] += 1
        around = sorted({find(n) for n in adjacent[a] | adjacent[b]} - {a})
        adjacent[a], adjacent[b] = set(around), set()
        if around:
            cos = (unit(np.array(around)) @ unit(a)).tolist()
            for n, c in zip(around, cos):
                heapq.heappush(heap, (-c, a, n, version[a], version[n]) if a < n
                               else (-c, n, a, version[n], version[a]))
    roots = np.array([find(i) for i in range(s)])
    group = roots[sp]
    size = np.bincount(group, minlength=s)
    keep = size >= min_points
    if weights is not None:
        keep &= np.bincount(group, np.asarray(weights, np.float64), minlength=s) >= min_weight
    kept = np.flatnonzero(keep)
    # compactness = mean cosine of the members to the unit mean = |sum of unit members| / members
    compact = (np.linalg.norm(sums[kept], axis=1) / np.maximum(size[kept], 1)) if len(kept) else []
    out = [Proposal(mask=group == r, confidence=float(c) * (1 - np.exp(-n / (4 * min_points))),
                    feature=torch.nn.functional.normalize(torch.from_numpy(sums[r].copy()), dim=0))
           for r, c, n in zip(kept.tolist(), compact, size[kept].tolist())]
    return sorted(out, key=lambda p: -int(p.mask.sum()))


def instance_recovery(proposals: list[np.ndarray], gt_instance: np.ndarray, valid: np.ndarray | None = None
                      ) -> tuple[float, np.ndarray]:
    """Mean over ground-truth instances (ids > 0, within ``valid``) of the best IoU any proposal
    mask reaches, and the per-instance best IoUs."""
    ids = [i for i in np.unique(gt_instance) if i > 0 and (valid is None or valid[gt_instance == i].any())]
    best = np.zeros(len(ids))
    for k, i in enumerate(ids):
        g = gt_instance == i
        for m in proposals:
            inter = int((m & g).sum())
            if inter:
                best[k] = max(best[k], inter / int((m | g).sum()))
    return (float(best.mean()) if len(best) else 0.0), best
