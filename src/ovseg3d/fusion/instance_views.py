"""One 2D embedding per 3D instance, from the views that show it best.

Two uses share this code:
- the OpenMask3D-like baseline at inference (``select="count"``): each proposal's ``top_k`` frames
  with the most visible points, the teacher run on a crop around the proposal in each, features
  averaged over the proposal's pixels;
- FOLK's instance teacher at training time (``select="folk"``): views chosen greedily for
  *visibility* (the fraction of the instance visible, so a view showing a sliver of a large object
  counts little) and *viewpoint diversity* (a view looking from nearly the same direction as one
  already chosen is discounted, so per-view teacher mistakes average out), each view weighted by
  its visibility. FOLK's full text is not available here (only its abstract); this is our reading
  of "incorporating both visibility and viewpoint diversity".

Crops: the teacher sees a frame cut to the instance's projected box plus a margin, intrinsics
shifted to match, as OpenMask3D crops before its CLIP encoder (one scale here, not its three).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ovseg3d.data.scannet import Frame, ScanNetScene
from ovseg3d.errors import UserError
from ovseg3d.fusion.multiview import as_feature_map, sample_feature_map
from ovseg3d.geometry.camera import DEFAULT_OCCLUSION_RATIO, visible_points

SELECTIONS = ("count", "folk")


@dataclass
class InstanceViews:
    """Per instance: the chosen frame ids and their weights (sum 1)."""

    frames: list[list[int]]
    weights: list[list[float]]
    visibility: np.ndarray  # (K, F) fraction of each instance's points visible in each frame
    frame_ids: list[int]


@dataclass
class EmbeddingStats:
    teacher_calls: int
    seconds: float
    views: list[int] = field(default_factory=list)  # views used per instance


def choose_views(visible: np.ndarray, directions: np.ndarray, top_k: int, select: str = "folk",
                 diversity: float = 0.5) -> tuple[list[int], list[float]]:
    """Frame indices and weights for one instance.

    ``visible``: (F,) visible fraction per frame; ``directions``: (F, 3) unit vectors from the
    instance to each camera. ``count``: the ``top_k`` most visible, equal weights. ``folk``: greedy,
    score = visibility x (1 - diversity x max(0, cos to the closest chosen direction)), weights
    proportional to visibility.
    """
    if select not in SELECTIONS:
        raise UserError(f"view selection must be one of {', '.join(SELECTIONS)}, got {select!r}")
    seen = np.nonzero(visible > 0)[0]
    if not len(seen) or top_k < 1:
        return [], []
    if select == "count":
        chosen = seen[np.argsort(-visible[seen], kind="stable")[:top_k]].tolist()
        return chosen, [1.0 / len(chosen)] * len(chosen)
    chosen: list[int] = []
    while len(chosen) < min(top_k, len(seen)):
        score = visible[seen].astype(np.float64)
        if chosen:
            cos = np.clip(directions[seen] @ directions[chosen].T, 0.0, 1.0).max(1)
            score = score * (1.0 - diversity * cos)
        score[np.isin(seen, chosen)] = -1.0
        chosen.append(int(seen[int(np.argmax(score))]))
    w = visible[chosen] / visible[chosen].sum()
    return chosen, w.tolist()


def instance_views(scene: ScanNetScene, masks: list[np.ndarray], top_k: int = 5, select: str = "folk",
                   diversity: float = 0.5, frame_stride: int = 1,
                   occlusion_ratio: float = DEFAULT_OCCLUSION_RATIO) -> InstanceViews:
    """Which frames show each instance (boolean point masks over ``scene.points``) best."""
    centroids = np.stack([scene.points[m].mean(0) for m in masks]) if masks else np.zeros((0, 3))
    sizes = np.array([max(int(m.sum()), 1) for m in masks])
    member = np.full(scene.num_points, -1, np.int64)
    for k, m in enumerate(masks):
        member[m & (member < 0)] = k
    ids, vis, centres = [], [], []
    for f in scene.frames(stride=frame_stride, with_color=False):
        v = visible_points(scene.points, f.pose, f.K, f.image_size, f.depth, occlusion_ratio)
        hit = member[v.index]
        vis.append(np.bincount(hit[hit >= 0], minlength=len(masks))[: len(masks)] / sizes)
        ids.append(f.frame_id)
        centres.append(f.pose[:3, 3])
    visibility = np.stack(vis, 1) if vis else np.zeros((len(masks), 0))
    frames, weights = [], []
    for k in range(len(masks)):
        d = np.asarray(centres).reshape(-1, 3) - centroids[k]
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        c, w = choose_views(visibility[k], d, top_k, select, diversity)
        frames.append([ids[j] for j in c])
        weights.append(w)
    return InstanceViews(frames, weights, visibility, ids)


def crop_frame(frame: Frame, u: np.ndarray, v: np.ndarray, margin: float = 0.1, min_size: int = 32
               ) -> tuple[Frame, int, int]:
    """The frame cut to the box around pixels (u, v) grown by ``margin`` of its size (at least
    ``min_size`` pixels a side), intrinsics shifted; and the crop's top-left corner (x0, y0)."""
    w, h = frame.image_size
    bw, bh = u.max() - u.min() + 1, v.max() - v.min() + 1
    gw, gh = max(int(bw * (1 + 2 * margin)), min_size), max(int(bh * (1 + 2 * margin)), min_size)
    cx, cy = (u.max() + u.min()) / 2, (v.max() + v.min()) / 2
    x0 = int(np.clip(round(cx - gw / 2), 0, max(w - gw, 0)))
    y0 = int(np.clip(round(cy - gh / 2), 0, max(h - gh, 0)))
    x1, y1 = min(x0 + gw, w), min(y0 + gh, h)
    K = frame.K.copy()
    K[0, 2] -= x0
    K[1, 2] -= y0
    return (Frame(frame_id=frame.frame_id, color=frame.color[y0:y1, x0:x1], depth=frame.depth[y0:y1, x0:x1],
                  pose=frame.pose, K=K), x0, y0)


def instance_embeddings(scene: ScanNetScene, masks: list[np.ndarray], teacher, views: InstanceViews,
                        crop: bool = True, occlusion_ratio: float = DEFAULT_OCCLUSION_RATIO,
                        begin_scene: bool = True) -> tuple[torch.Tensor, EmbeddingStats]:
    """(K, D) unit embeddings: per instance, the weighted mean over its chosen views of the
    teacher's unit features averaged over the instance's visible pixels (zeros: never seen).

    ``crop=True`` runs the teacher once per (instance, view) on a crop (OpenMask3D's cost);
    ``crop=False`` once per distinct frame on the whole image, shared by all instances.
    ``begin_scene=False``: the teacher was already given this scene.
    """
    t0 = time.perf_counter()
    needed = sorted({fid for fs in views.frames for fid in fs})
    if begin_scene:
        teacher.begin_scene(scene)
    calls = 0
    by_frame: dict[int, list[tuple[int, float]]] = {}
    for k, (fs, ws) in enumerate(zip(views.frames, views.weights)):
        for fid, w in zip(fs, ws):
            by_frame.setdefault(fid, []).append((k, w))
    acc: torch.Tensor | None = None
    done = np.zeros(len(masks), np.int64)
    for frame in scene.frames(frame_ids=needed):
        vis = visible_points(scene.points, frame.pose, frame.K, frame.image_size, frame.depth, occlusion_ratio)
        whole = None
        for k, w in by_frame.get(frame.frame_id, []):
            sel = masks[k][vis.index]
            if not sel.any():
                continue
            u, v = vis.u[sel], vis.v[sel]
            if crop:
                sub, x0, y0 = crop_frame(frame, u, v)
                fm, size, u, v = as_feature_map(teacher(sub)), sub.image_size, u - x0, v - y0
                calls += 1
            else:
                if whole is None:
                    whole = as_feature_map(teacher(frame))
                    calls += 1
                fm, size = whole, frame.image_size
            feats, _ = sample_feature_map(fm, v, u, size)
            mean = torch.nn.functional.normalize(feats.float(), dim=1).mean(0)
            if acc is None:
                acc = torch.zeros(len(masks), mean.shape[0])
            acc[k] += w * mean
            done[k] += 1
    if acc is None:
        acc = torch.zeros(len(masks), int(getattr(teacher, "dim", 1)))
    out = torch.nn.functional.normalize(acc, dim=1)
    out[torch.from_numpy(done == 0)] = 0.0
    return out, EmbeddingStats(teacher_calls=calls, seconds=time.perf_counter() - t0, views=done.tolist())


def embed_instances(scene: ScanNetScene, masks: list[np.ndarray], teacher, top_k: int = 5, select: str = "folk",
                    frame_stride: int = 1, crop: bool = True, occlusion_ratio: float = DEFAULT_OCCLUSION_RATIO,
                    begin_scene: bool = True) -> tuple[torch.Tensor, EmbeddingStats]:
    """View choice and embedding in one call: ``select="count"`` is the OpenMask3D-like baseline,
    ``"folk"`` FOLK's instance teacher."""
    views = instance_views(scene, masks, top_k, select, frame_stride=frame_stride, occlusion_ratio=occlusion_ratio)
    return instance_embeddings(scene, masks, teacher, views, crop, occlusion_ratio, begin_scene)
