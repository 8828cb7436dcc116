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


@dataclass(frozen=True)
class Instance:
    id: int
    label: int
    score: float  # mean per-point label score: the instance's confidence
    num_points: int
    centroid: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray


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
    cells, cell_of = np.unique(np.column_stack([ijk, labels[idx]]), axis=0, return_inverse=True)
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
    (ids, the next fresh id)."""
    ids = np.full(len(groups), -1, np.int64)
    taken: set[int] = set()
    for g in range(int(groups.max()) + 1 if len(groups) else 0):
        members = groups == g
        prev = previous[members]
        prev = prev[prev >= 0]
        new_id = -1
        if len(prev):
            values, counts = np.unique(prev, return_counts=True)
            for v in values[np.argsort(-counts, kind="stable")]:
                if int(v) not in taken:
                    new_id = int(v)
                    break
        if new_id < 0:
            new_id, next_id = next_id, next_id + 1
        taken.add(new_id)
        ids[members] = new_id
    return ids, next_id


def majority_label(labels: np.ndarray) -> int:
    """The most common label >= 0 among an instance's points (-1 when there is none)."""
    valid = labels[labels >= 0]
    return int(np.bincount(valid).argmax()) if len(valid) else -1


def summarize(points: np.ndarray, ids: np.ndarray, labels: np.ndarray, scores: np.ndarray,
              named: dict[int, tuple[int, float]] | None = None) -> list[Instance]:
    """One Instance per id (most points first): label by majority vote of its points and score
    their mean, unless ``named`` gives an id its own (label, score)."""
    out = []
    for i in np.unique(ids[ids >= 0]):
        m = ids == i
        p = points[m]
        lab = majority_label(labels[m])
        score = float(np.mean(scores[m]))
        if named is not None and int(i) in named:
            lab, score = named[int(i)]
        out.append(Instance(id=int(i), label=int(lab), score=float(score), num_points=int(m.sum()),
                            centroid=p.mean(0), bbox_min=p.min(0), bbox_max=p.max(0)))
    return sorted(out, key=lambda inst: -inst.num_points)
