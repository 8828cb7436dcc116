"""Semantic segmentation metrics from a confusion matrix, in a functional and an accumulating form.

Conventions follow OpenScene and ScanNet: points whose ground truth is ``IGNORE`` are left out;
a class absent from the ground truth (no true points) is left out of the means; IoU = TP / (TP +
FP + FN) and accuracy = TP / (TP + FN) per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d.labels import IGNORE


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts (rows = ground truth, columns = prediction) and (K,) misses.

    Points whose ground truth is ignored are left out.

    A prediction outside 0..K-1 (e.g. IGNORE for "no prediction") counts as a miss of the true
    class without a false positive anywhere.
    """
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    gt = np.asarray(gt, dtype=np.int64).reshape(-1)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} entries, ground truth {gt.size}")
    keep = (gt >= 0) & (gt < num_classes) & (gt != IGNORE)
    pred, gt = pred[keep], gt[keep]
    valid_pred = (pred >= 0) & (pred < num_classes)
    cm = np.bincount(gt[valid_pred] * num_classes + pred[valid_pred], minlength=num_classes**2)
    cm = cm.reshape(num_classes, num_classes)
    misses = np.bincount(gt[~valid_pred], minlength=num_classes)
    return cm, misses


@dataclass
class SemanticScores:
    iou: np.ndarray  # (K,) nan where the class is absent from the ground truth
    acc: np.ndarray  # (K,)
    present: np.ndarray  # (K,) bool
    points: int

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou)) if self.present.any() else float("nan")

    @property
    def macc(self) -> float:
        return float(np.nanmean(self.acc)) if self.present.any() else float("nan")

    def split_mious(self, splits: tuple[str, ...] | list[str]) -> dict[str, float]:
        """mIoU over each long-tail split's present classes (e.g. ScanNet200 head/common/tail)."""
        out = {}
        for name in dict.fromkeys(splits):
            sel = np.array([s == name for s in splits]) & self.present
            out[name] = float(np.nanmean(self.iou[sel])) if sel.any() else float("nan")
        return out

    def as_dict(self, names: list[str] | tuple[str, ...] | None = None) -> dict:
        names = list(names) if names is not None else [str(i) for i in range(len(self.iou))]
        return {"mIoU": self.miou, "mAcc": self.macc, "points": self.points,
                "per_class": {n: {"iou": None if np.isnan(i) else float(i), "acc": None if np.isnan(a) else float(a)}
                              for n, i, a in zip(names, self.iou, self.acc)}}


def scores_from_confusion(cm: np.ndarray, misses: np.ndarray | None = None) -> SemanticScores:
    cm = np.asarray(cm, dtype=np.float64)
    misses = np.zeros(len(cm)) if misses is None else np.asarray(misses, dtype=np.float64)
    tp = np.diag(cm)
    gt_count = cm.sum(1) + misses
    pred_count = cm.sum(0)
    present = gt_count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / (gt_count + pred_count - tp), np.nan)
        acc = np.where(present, tp / gt_count, np.nan)
    return SemanticScores(iou=iou, acc=acc, present=present, points=int(gt_count.sum()))


def semantic_scores(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> SemanticScores:
    """Functional form: mIoU/mAcc of one set of predictions."""
    return scores_from_confusion(*confusion_matrix(pred, gt, num_classes))


class SemanticMeter:
    """Accumulating form: add scenes one by one, read the dataset-level scores."""

    def __init__(self, num_classes: int, keep_scenes: bool = False):
        self.num_classes = num_classes
        self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.misses = np.zeros(num_classes, dtype=np.int64)
        # per update, for intervals over scenes (opt-in: 320 kB a scene with 200 classes)
        self.keep_scenes = keep_scenes
        self.scenes: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        cm, misses = confusion_matrix(pred, gt, self.num_classes)
        self.cm += cm
        self.misses += misses
        if self.keep_scenes:
            self.scenes.append((cm, misses))

    def compute(self) -> SemanticScores:
        return scores_from_confusion(self.cm, self.misses)


def _mious(cms: np.ndarray, misses: np.ndarray) -> np.ndarray:
    """mIoU of each of a stack of confusion matrices (B, K, K) with misses (B, K)."""
    return np.array([scores_from_confusion(cm, m).miou for cm, m in zip(cms, misses)])


@dataclass
class Difference:
    """mIoU of b minus mIoU of a, with a bootstrap interval over scenes."""
    delta: float
    low: float
    high: float
    scenes_better: int  # scenes whose own mIoU is higher with b
    scenes: int


def miou_difference(a: SemanticMeter, b: SemanticMeter, level: float = 0.95, rounds: int = 2000,
                    seed: int = 0) -> Difference:
    """Paired bootstrap over scenes of mIoU(b) - mIoU(a).

    Points of one room are not independent (a misread table costs thousands of them), so the
    room is the unit: rooms are drawn with replacement, the same draw for both methods, and the
    dataset-level mIoU is recomputed from the summed confusion matrices of the drawn rooms.
    """
    if not (a.keep_scenes and b.keep_scenes):
        raise ValueError("a paired comparison needs meters made with keep_scenes=True")
    if len(a.scenes) != len(b.scenes) or not a.scenes:
        raise ValueError(f"a paired comparison needs the same scenes in both meters ({len(a.scenes)} vs "
                         f"{len(b.scenes)})")
    n = len(a.scenes)
    draws = np.random.default_rng(seed).integers(0, n, size=(rounds, n))
    weights = np.stack([np.bincount(d, minlength=n) for d in draws])  # (rounds, scenes)
    deltas = []
    for meter in (a, b):
        cms = np.stack([cm for cm, _ in meter.scenes])
        misses = np.stack([m for _, m in meter.scenes])
        deltas.append(_mious(np.einsum("bs,sij->bij", weights, cms), weights @ misses))
    boot = deltas[1] - deltas[0]
    tail = (1 - level) / 2
    better = sum(scores_from_confusion(*sb).miou > scores_from_confusion(*sa).miou
                 for sa, sb in zip(a.scenes, b.scenes))
    return Difference(delta=b.compute().miou - a.compute().miou, low=float(np.nanquantile(boot, tail)),
                      high=float(np.nanquantile(boot, 1 - tail)), scenes_better=int(better), scenes=n)
