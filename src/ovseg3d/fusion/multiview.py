"""Average dense 2D features over the views in which each 3D point is visible (OpenScene).

Any per-frame feature source works: it maps a ``Frame`` to a (C, h, w) map at any resolution
(optionally with an (h, w) per-pixel confidence used as a weight). Frames stream one at a time,
so memory is the (N, C) accumulator plus one frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ovseg3d.data.scannet import Frame
from ovseg3d.errors import UserError
from ovseg3d.geometry.camera import DEFAULT_OCCLUSION_RATIO, Visibility, visible_points
from ovseg3d.teachers.base import FeatureMap

FeatureSource = Callable[[Frame], "FeatureMap | torch.Tensor | np.ndarray"]


@dataclass
class FusedFeatures:
    features: torch.Tensor  # (N, C) float32; zero where unseen
    mask: torch.Tensor  # (N,) bool: seen by at least one view (with positive weight)
    weight: torch.Tensor  # (N,) summed view weights (views seen, without confidences)
    frames_used: int


def as_feature_map(out) -> FeatureMap:
    if isinstance(out, FeatureMap):
        fm = out
    else:
        fm = FeatureMap(torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out))
    if fm.features.ndim != 3:
        raise UserError(f"a feature source must return (C, h, w) features, got shape {tuple(fm.features.shape)}")
    if fm.confidence is not None and fm.confidence.shape != fm.features.shape[1:]:
        raise UserError(f"confidence shape {tuple(fm.confidence.shape)} does not match features "
                        f"{tuple(fm.features.shape[1:])}")
    return fm


def sample_feature_map(fm: FeatureMap, v: np.ndarray, u: np.ndarray, image_size: tuple[int, int]
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features (M, C) at image pixels (v, u) of a ``image_size`` image, nearest cell of the map."""
    w, h = image_size
    C, fh, fw = fm.features.shape
    fv = np.minimum(((v + 0.5) * fh / h).astype(np.int64), fh - 1)
    fu = np.minimum(((u + 0.5) * fw / w).astype(np.int64), fw - 1)
    flat = torch.as_tensor(fv * fw + fu)
    feats = fm.features.reshape(C, -1).index_select(1, flat).T.float()
    conf = fm.confidence.reshape(-1).index_select(0, flat).float() if fm.confidence is not None else None
    return feats, conf


class FusionAccumulator:
    """Running weighted sums of one source's features over views (bounded memory: (N, C))."""

    def __init__(self, num_points: int):
        self.n = num_points
        self.acc: torch.Tensor | None = None
        self.weight = torch.zeros(num_points, dtype=torch.float64)
        self.views = torch.zeros(num_points, dtype=torch.float64)
        self.frames_used = 0

    def add(self, vis: Visibility, fm: FeatureMap, frame: Frame) -> None:
        if not len(vis.index):
            return
        feats, conf = sample_feature_map(fm, vis.v, vis.u, frame.image_size)
        if self.acc is None:
            self.acc = torch.zeros(self.n, feats.shape[1], dtype=torch.float32)
        elif feats.shape[1] != self.acc.shape[1]:
            raise UserError(f"feature dimension changed from {self.acc.shape[1]} to {feats.shape[1]} "
                            f"at frame {frame.frame_id}")
        idx = torch.as_tensor(vis.index)
        w = conf if conf is not None else torch.ones(len(idx))
        self.acc.index_add_(0, idx, feats * w[:, None])
        self.weight.index_add_(0, idx, w.double())
        self.views.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
        self.frames_used += 1

    def result(self) -> FusedFeatures:
        if self.acc is None:
            raise UserError("no frame saw any point: check poses, intrinsics and depth units")
        mask = self.weight > 0
        out = self.acc.clone()
        out[mask] /= self.weight[mask, None].float()
        return FusedFeatures(features=out, mask=mask, weight=self.views.float(), frames_used=self.frames_used)


def fuse_many(points: np.ndarray, frames: Iterable[Frame], sources: dict[str, FeatureSource],
              occlusion_ratio: float = DEFAULT_OCCLUSION_RATIO,
              on_frame: Callable[[int], None] | None = None) -> dict[str, FusedFeatures]:
    """Fuse several sources in one pass over the frames (each frame is read and projected once)."""
    points = np.asarray(points, dtype=np.float64)
    accs = {name: FusionAccumulator(len(points)) for name in sources}
    for frame in frames:
        vis = visible_points(points, frame.pose, frame.K, frame.image_size, frame.depth, occlusion_ratio)
        if len(vis.index):
            for name, source in sources.items():
                accs[name].add(vis, as_feature_map(source(frame)), frame)
        if on_frame is not None:
            on_frame(frame.frame_id)
    return {name: acc.result() for name, acc in accs.items()}


def fuse_features(points: np.ndarray, frames: Iterable[Frame], source: FeatureSource,
                  occlusion_ratio: float = DEFAULT_OCCLUSION_RATIO,
                  on_frame: Callable[[int], None] | None = None) -> FusedFeatures:
    """Mean of the source's features over every view in which each point is visible."""
    return fuse_many(points, frames, {"source": source}, occlusion_ratio, on_frame)["source"]
