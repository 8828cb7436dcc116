"""Instances in a labelled map: connected groups of same-label points, with stable ids.

The node's grouping: points are binned on a coarse grid per label, cells of the same label that
touch (26-neighbourhood) form one instance, and groups with too few points are dropped. It needs
only the labels the student already produced, so it runs after every map update in milliseconds.
"Stuff" labels (walls, floors) are never instances. Ids stay stable across updates: a new group
takes the id most of its points had before when that id is still free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ovseg3d.geometry.rows import unique_rows


@dataclass(frozen=True)
class Instance:
    id: int
    label: int
    score: float  # mean per-point label score: the instance's confidence
    num_points: int
    centroid: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    embedding: np.ndarray | None = None  # (D,) unit feature that names it: text queries rank instances by it


def connected_label_groups(points: np.ndarray, labels: np.ndarray, cell: float, min_points: int,
                           ignore: set[int] | frozenset[int] = frozenset()) -> np.ndarray:
    """(N,) group index per point (0..G-1, largest first), -1 for ignored labels and small groups."""
    points, labels = np.asarray(points, np.float64), np.asarray(labels)
    out = np.full(len(points), -1, np.int64)
    use = (labels >= 0) & ~np.isin(labels, list(ignore))
    if not use.any():
        return out
    idx = np.flatnonzero(use)
    ijk = np.floor(points[idx] / cell).astype(np.int64)
    cells, cell_of = unique_rows(np.column_stack([ijk, labels[idx]]), return_inverse=True)
    cell_of = cell_of.reshape(-1)
    tree = cKDTree(cells[:, :3].astype(np.float64))
    pairs = tree.query_pairs(r=1.75, output_type="ndarray")  # 26-neighbours (sqrt 3 < 1.75 < 2)
    pairs = pairs[cells[pairs[:, 0], 3] == cells[pairs[:, 1], 3]]
    n = len(cells)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    point_comp = comp[cell_of]
    sizes = np.bincount(point_comp)
    big = np.flatnonzero(sizes >= min_points)
    order = big[np.argsort(-sizes[big], kind="stable")]
    remap = np.full(len(sizes), -1, np.int64)
    remap[order] = np.arange(len(order))
    out[idx] = remap[point_comp]
    return out


def stable_ids(groups: np.ndarray, previous: np.ndarray, next_id: int) -> tuple[np.ndarray, int]:
    """Instance ids per point for ``groups``: each group (largest first) inherits the previous id
    most of its points carried, if no larger group took it; otherwise a fresh id. Returns
    (ids, the next fresh id). Counting is one sort over the points; only the choice loops, over
    (group, previous id) pairs."""
    groups = np.asarray(groups, np.int64)
    previous = np.asarray(previous, np.int64)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    chosen = np.full(n_groups, -1, np.int64)
    both = (groups >= 0) & (previous >= 0)
    if both.any():
        pairs, counts = unique_rows(np.column_stack([groups[both], previous[both]]), return_counts=True)
        order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # per group: most points first, then lower id
        taken: set[int] = set()
        for g, prev in pairs[order].tolist():
            if chosen[g] < 0 and prev not in taken:
                chosen[g] = prev
                taken.add(prev)
    # a group none of whose previous ids was free takes a fresh id, in group order (largest first)
    fresh = np.flatnonzero(chosen < 0)
    chosen[fresh] = next_id + np.arange(len(fresh))
    ids = np.where(groups >= 0, chosen[np.maximum(groups, 0)] if n_groups else -1, -1)
    return ids, next_id + len(fresh)


def majority_label(labels: np.ndarray) -> int:
    """The most common label >= 0 among an instance's points (-1 when there is none)."""
    valid = labels[labels >= 0]
    return int(np.bincount(valid).argmax()) if len(valid) else -1


def summarize(points: np.ndarray, ids: np.ndarray, labels: np.ndarray, scores: np.ndarray,
              named: dict[int, tuple[int, float]] | None = None,
              embeddings: dict[int, np.ndarray] | None = None) -> list[Instance]:
    """One Instance per id (most points first): label by majority vote of its points and score
    their mean, unless ``named`` gives an id its own (label, score); ``embeddings`` (unit, per id)
    rank instances against text. Per-id reductions over one sort, not one pass per instance."""
    keep = np.flatnonzero(ids >= 0)
    if not len(keep):
        return []
    uid, inv = np.unique(ids[keep], return_inverse=True)
    inv = inv.reshape(-1)
    m = len(uid)
    count = np.bincount(inv, minlength=m)
    p = np.asarray(points, np.float64)[keep]
    centroid = np.stack([np.bincount(inv, p[:, c], minlength=m) for c in range(3)], 1) / count[:, None]
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    bbox_min, bbox_max = np.minimum.reduceat(p[order], starts), np.maximum.reduceat(p[order], starts)
    mean_score = np.bincount(inv, np.asarray(scores, np.float64)[keep], minlength=m) / count
    lab = np.asarray(labels)[keep]
    valid = lab >= 0
    majority = np.full(m, -1, np.int64)
    if valid.any():  # per id, the most frequent label (lowest label on ties, as bincount.argmax)
        pair, votes = unique_rows(np.column_stack([inv[valid], lab[valid]]), return_counts=True)
        best = np.lexsort((pair[:, 1], -votes, pair[:, 0]))
        first = np.unique(pair[best, 0], return_index=True)[1]
        majority[pair[best[first], 0]] = pair[best[first], 1]
    out = []
    for k, i in enumerate(uid.tolist()):
        lab_k, score_k = int(majority[k]), float(mean_score[k])
        if named is not None and i in named:
            lab_k, score_k = named[i]
        out.append(Instance(id=i, label=int(lab_k), score=float(score_k), num_points=int(count[k]),
                            centroid=centroid[k], bbox_min=bbox_min[k], bbox_max=bbox_max[k],
                            embedding=None if embeddings is None else embeddings.get(i)))
    return sorted(out, key=lambda inst: -inst.num_points)
