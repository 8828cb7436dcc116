"""Fusing several teachers' point features by what each is good at (SAS, Sec. 3.2-3.3).

Capability: per class, the IoU of a teacher's 2D predictions against ground-truth labels on a
labelled calibration set (SAS builds its references with Stable Diffusion + SAM; we use any
labelled frames, the synthetic world included), accumulated over all calibration pixels.

Fusion (SAS Eq. 6-8): each teacher t predicts a class P_t per point (argmax text similarity);
its score is the mean of its own capabilities for the classes the teachers predict,
s_t = mean_t' S_t[P_t'], and the fused feature is sum_t softmax(s / tau)_t F_t with tau = 0.05.
The paper writes the mean for two teachers as (S[P_1] + S[P_2]) / 2; the same mean serves any
number of teachers. Only the teachers that saw a point take part for it.
Baselines: the plain average, and per point the teacher whose feature has the highest maximum
text similarity (``max_similarity``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.errors import UserError
from ovseg3d.eval.semantic import SemanticMeter
from ovseg3d.geometry.raycast import MeshRaycaster, vertex_label_image
from ovseg3d.labels import IGNORE, LabelSet
from ovseg3d.teachers.base import Teacher
from ovseg3d.text.vocabulary import Vocabulary

SAS_TEMPERATURE = 0.05
FUSIONS = ("sas", "average", "max_similarity")


@dataclass
class Capability:
    teacher: str
    classes: list[str]
    values: np.ndarray  # (K,) per-class IoU in [0, 1]; classes never seen get the mean
    cells: int  # calibration pixels (feature cells) it was measured on

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"teacher": self.teacher, "classes": self.classes,
                                          "capability": [round(float(v), 6) for v in self.values],
                                          "cells": self.cells}, indent=1))

    @classmethod
    def load(cls, path: Path) -> Capability:
        try:
            d = json.loads(Path(path).read_text())
            cap = cls(teacher=d["teacher"], classes=list(d["classes"]), values=np.asarray(d["capability"], float),
                      cells=int(d.get("cells", 0)))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"cannot read capability table {path}: {exc}") from None
        if len(cap.values) != len(cap.classes):
            raise UserError(f"capability table {path}: {len(cap.values)} values for {len(cap.classes)} classes")
        return cap


def measure_capability(teacher: Teacher, scenes: Iterable[ScanNetScene], labels: LabelSet, vocab: Vocabulary,
                       stride: int = 5) -> Capability:
    """Per-class IoU of the teacher's per-pixel argmax against ray-cast ground truth."""
    meter = SemanticMeter(len(labels))
    for scene in scenes:
        teacher.begin_scene(scene)
        caster = MeshRaycaster(scene.points, scene.faces)
        sem = scene.semantic(labels)
        for frame in scene.frames(stride=stride):
            fm = teacher(frame)
            C, h, w = fm.features.shape
            gt = vertex_label_image(caster, frame.pose, frame.K, frame.image_size, (w, h), sem, fill=IGNORE)
            pred = vocab.classify(fm.features.reshape(C, -1).T)[0].numpy()
            if fm.confidence is not None:  # cells the teacher said nothing about
                pred[fm.confidence.reshape(-1).numpy() <= 0] = IGNORE
            meter.update(pred, gt.reshape(-1))
    scores = meter.compute()
    if not scores.present.any():
        raise UserError("the calibration set has no labelled pixels of the label set's classes")
    values = np.where(scores.present, scores.iou, np.nanmean(scores.iou))
    return Capability(teacher=teacher.name, classes=list(labels.names), values=values, cells=scores.points)


def _stack(features: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if not features:
        raise UserError("no teacher features to fuse")
    n = {len(m) for m in masks}
    if len(n) != 1:
        raise UserError(f"teachers cover different point counts: {sorted(n)}")
    return torch.stack([f.float() for f in features]), torch.stack([m.bool() for m in masks])


def fuse_teachers(features: list[torch.Tensor], masks: list[torch.Tensor], method: str, vocab: Vocabulary,
                  capabilities: list[np.ndarray] | None = None,
                  temperature: float = SAS_TEMPERATURE) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse per-point features (each (N, D), zero where its mask is False); returns (features, mask)."""
    F, M = _stack(features, masks)  # (T, N, D), (T, N)
    T, _N, _ = F.shape
    seen = M.any(0)
    if method == "average":
        w = M.float()
    elif method == "max_similarity":
        best = torch.stack([vocab.scores(f).max(1).values for f in F])  # (T, N)
        best[~M] = -torch.inf
        w = torch.nn.functional.one_hot(best.argmax(0), T).T.float() * seen
    elif method == "sas":
        if capabilities is None or len(capabilities) != T:
            raise UserError("SAS fusion needs one capability table per teacher")
        caps = torch.tensor(np.stack(capabilities), dtype=torch.float32)  # (T, K)
        if caps.shape[1] != len(vocab):
            raise UserError(f"capability tables have {caps.shape[1]} classes, the vocabulary {len(vocab)}")
        pred = torch.stack([vocab.classify(f)[0] for f in F])  # (T, N)
        # s_t = mean over the teachers t' that saw the point of S_t[P_t']
        s = torch.stack([(caps[t][pred] * M).sum(0) for t in range(T)]) / M.sum(0).clamp(min=1)
        logits = (s / temperature).masked_fill(~M, -torch.inf)
        w = torch.softmax(logits, dim=0).nan_to_num(0.0)
    else:
        raise UserError(f"unknown teacher fusion {method!r}; use one of {', '.join(FUSIONS)}")
    w = w * M
    fused = (w[..., None] * F).sum(0) / w.sum(0).clamp(min=1e-12)[:, None]
    return fused, seen
