"""Instance segmentation AP following ScanNet's benchmark protocol (evaluate_semantic_instance).

Per class: ground-truth instances and predictions smaller than ``min_region_size`` vertices are
ignored; predictions are ranked by confidence; at each IoU threshold a prediction is a true
positive if it overlaps a not-yet-matched ground-truth instance of its class by more than the
threshold; a prediction that matches nothing is a false positive unless the part of it lying on
ignored ground truth (small instances of its class) exceeds the threshold, as in ScanNet's
script. AP integrates the precision-recall curve with ScanNet's step widths; AP is the mean over
thresholds 0.50:0.95 (step 0.05), with AP50 and AP25 alongside; classes without ground truth are
left out of the means. Checked against ScanNet's own script on the same files: equal to 4 decimals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ovseg3d.segment.proposals import InstancePrediction

OVERLAPS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
MIN_REGION_SIZE = 100


@dataclass
class _Matches:
    scores: list
    tp: list
    num_gt: int


def _scene_matches(preds: list[InstancePrediction], gt_ids: np.ndarray, gt_labels: np.ndarray, cls: int,
                   overlap: float, min_region: int) -> _Matches:
    """Per prediction of class ``cls`` in one scene: (score, true positive?) and the GT count."""
    inst_ids = [i for i in np.unique(gt_ids) if i > 0 and gt_labels[gt_ids == i][0] == cls]
    sizes = {i: int((gt_ids == i).sum()) for i in inst_ids}
    valid = [i for i in inst_ids if sizes[i] >= min_region]
    ignored = np.isin(gt_ids, [i for i in inst_ids if sizes[i] < min_region])
    matched: set[int] = set()
    out = _Matches([], [], len(valid))
    for p in sorted((p for p in preds if p.label == cls), key=lambda p: -p.score):
        area = int(p.mask.sum())
        if area < max(min_region, 1):
            continue
        best, best_iou = None, overlap
        for i in valid:
            if i in matched:
                continue
            g = gt_ids == i
            inter = int((p.mask & g).sum())
            iou = inter / float(area + sizes[i] - inter)
            if iou > best_iou:
                best, best_iou = i, iou
        if best is not None:
            matched.add(best)
            out.scores.append(p.score)
            out.tp.append(True)
        elif (p.mask & ignored).sum() / area <= overlap:
            out.scores.append(p.score)
            out.tp.append(False)
    return out


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """ScanNet's AP: precision at each distinct score, integrated with its step widths."""
    if num_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    scores = scores[order]
    cum_tp, cum_fp = np.cumsum(tp), np.cumsum(1 - tp)
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # the last entry of each distinct score
    precision = cum_tp[last] / (cum_tp[last] + cum_fp[last])
    recall = cum_tp[last] / num_gt
    precision, recall = precision[::-1], recall[::-1]  # from the lowest score (highest recall) down
    precision = np.append(precision, 1.0)
    recall = np.append(recall, 0.0)
    conv = np.append(recall[0], recall)
    conv = np.append(conv, 0.0)
    steps = np.convolve(conv, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, steps))


class InstanceMeter:
    """Accumulates scenes; ``compute`` gives AP, AP50, AP25 per class and their means."""

    def __init__(self, num_classes: int, classes: list[int] | None = None, min_region_size: int = MIN_REGION_SIZE):
        self.classes = list(range(num_classes)) if classes is None else list(classes)
        self.min_region = min_region_size
        self.per = {(c, o): _Matches([], [], 0) for c in self.classes for o in range(len(OVERLAPS))}

    def update(self, preds: list[InstancePrediction], gt_instance: np.ndarray, gt_label: np.ndarray) -> None:
        """``gt_instance``: per point instance id (0 = none); ``gt_label``: per point class index."""
        for c in self.classes:
            for o, thr in enumerate(OVERLAPS):
                m = _scene_matches(preds, gt_instance, gt_label, c, thr, self.min_region)
                acc = self.per[(c, o)]
                acc.scores += m.scores
                acc.tp += m.tp
                acc.num_gt += m.num_gt

    def compute(self) -> dict:
        ap = np.full((len(self.classes), len(OVERLAPS)), np.nan)
        for i, c in enumerate(self.classes):
            for o in range(len(OVERLAPS)):
                m = self.per[(c, o)]
                ap[i, o] = average_precision(np.asarray(m.scores, float), np.asarray(m.tp, bool), m.num_gt)
        main = ap[:, :-1]
        per_class = {int(c): {"AP": float(np.mean(main[i])) if not np.isnan(main[i]).all() else None,
                              "AP50": None if np.isnan(ap[i, 0]) else float(ap[i, 0]),
                              "AP25": None if np.isnan(ap[i, -1]) else float(ap[i, -1])}
                     for i, c in enumerate(self.classes)}
        has = ~np.isnan(ap[:, 0])
        return {"AP": float(np.nanmean(main[has])) if has.any() else float("nan"),
                "AP50": float(np.nanmean(ap[has, 0])) if has.any() else float("nan"),
                "AP25": float(np.nanmean(ap[has, -1])) if has.any() else float("nan"),
                "per_class": per_class}
