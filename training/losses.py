"""Distillation losses, each from the paper that introduced it (all switchable in the config).

- ``cosine_distillation`` (OpenScene): 1 - cos(student, fused teacher) on points with a target.
- ``superpoint_distillation`` (SAS, after GGSD): the same on features averaged inside each
  superpoint, so a superpoint learns one consistent feature even where the teacher's views
  disagree; with ``uncertainty`` (GeoGuide) each superpoint is weighted by how much its
  teacher features agree (mean cosine to their mean), so noisy superpoints count less.
- ``superpoint_targets`` (SAS, eq. 10): the point loss's targets replaced by the teacher features
  averaged over each point's superpoint, mapped back onto all its points.
- ``relation_consistency`` (GeoGuide): MSE between the instance-to-instance cosine similarity
  matrices of two feature sets (e.g. geometric backbone features and semantic features).
- ``instance_mask_bce`` (GeoGuide): binary cross-entropy of predicted instance masks.
- ``superpoint_pseudo_labels`` + ``text_cross_entropy`` (SAS temporal-ensembling
  self-distillation): a history model's features, averaged per superpoint, give one class per
  superpoint; the student's text logits learn it with cross-entropy.
- ``adept_expert_loss`` (HAS-KD adept snapshot distillation): each training snapshot supervises
  only the points whose teacher class is one it is adept at.
- ``label_guided_targets`` + ``instance_distillation`` (FOLK label-guided distillation): each
  annotated instance's pooled instance-head feature learns its instance teacher's 2D embedding
  where that embedding names the annotated class (label-consistent) and the class's text
  embedding where it does not; plus cross-entropy of the instance's text logits. Our reading of
  FOLK's abstract (the full text is not available here).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ovseg3d.geometry.voxels import segment_mean

from .affine_features import AffineFeatures, rows_cosine, rows_cosine_to_table

Features = torch.Tensor | AffineFeatures  # per-point student outputs, formed or as (inputs, weight, bias)


def rows_of(pred: Features, index) -> Features:
    return pred.rows(index) if isinstance(pred, AffineFeatures) else pred[index]


def _num_rows(pred: Features) -> int:
    return len(pred.x) if isinstance(pred, AffineFeatures) else len(pred)


def zero_loss(pred: Features) -> torch.Tensor:
    """A zero loss still attached to the student's graph."""
    return (pred.x.sum() + pred.weight.sum() if isinstance(pred, AffineFeatures) else pred.sum()) * 0.0


def _segment_mean(pred: Features, segments: torch.Tensor, n: int) -> torch.Tensor:
    return pred.segment_mean(segments, n) if isinstance(pred, AffineFeatures) else segment_mean(pred, segments, n)[0]


def _shifted(pred: Features, mean: torch.Tensor | None) -> Features:
    """Student features with a fixed vector subtracted (``mean=None``: as they are)."""
    if mean is None:
        return pred
    if isinstance(pred, AffineFeatures):
        return pred.shifted(mean)
    return pred - mean.to(pred.device, pred.dtype)


def center(pred: Features, target: torch.Tensor, mean: torch.Tensor | None):
    """Student and (unit) teacher features with a fixed mean direction removed (``mean=None``: as is)."""
    dtype = pred.x.dtype if isinstance(pred, AffineFeatures) else pred.dtype
    if mean is None:
        return pred, target.to(dtype)
    return _shifted(pred, mean), F.normalize(target.to(dtype), dim=1) - mean.to(target.device, dtype)


def _dense_ids(ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per row a segment index 0..n-1 (superpoints, instances: any ids), and n."""
    unique, seg = torch.unique(ids, return_inverse=True)
    return seg, len(unique)


def _weighted_mean(loss: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return loss.mean()
    weights = weights.to(loss.dtype)
    return (weights * loss).sum() / weights.sum().clamp(min=1e-12)


def cosine_distillation(pred: Features, target: torch.Tensor, mask: torch.Tensor | None = None,
                        mean: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``weights``: (N,) per point (``class_balance``), or None for the plain mean."""
    if mask is not None:
        pred, target = rows_of(pred, mask), target[mask]
        weights = None if weights is None else weights[mask]
    if _num_rows(pred) == 0:
        return zero_loss(pred)
    pred, target = center(pred, target, mean)
    return _weighted_mean(1.0 - rows_cosine(pred, target), weights)


def teacher_classes(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(N,) the vocabulary class whose text embedding best matches each teacher feature row."""
    return (features.float() @ text.to(features.device, torch.float32).T).argmax(1)


def class_balance_weights(counts: torch.Tensor, power: float) -> torch.Tensor:
    """Per-class weights (share of points) ** -power, normalised so that the mean weight over the
    counted points is 1; a class with no point weighs 0."""
    share = counts.double() / counts.sum().clamp(min=1)
    w = torch.where(counts > 0, share.clamp(min=1e-12) ** -power, torch.zeros_like(share))
    return (w / (share * w).sum().clamp(min=1e-12)).float()


class SegmentTargets(NamedTuple):
    """A sample's teacher features averaged per superpoint, once: both of SAS's losses (eq. 10's point
    targets and the superpoint loss) need these means, and forming them per point is (N, 512) work."""

    seg: torch.Tensor  # (N,) each row's superpoint as 0..n-1
    mean: torch.Tensor  # (n, D) mean unit teacher feature of the superpoint's rows that have one
    count: torch.Tensor  # (n,) how many of its rows have one


def segment_targets(target: torch.Tensor, superpoints: torch.Tensor, mask: torch.Tensor) -> SegmentTargets:
    seg, n = _dense_ids(superpoints)
    rows = target[mask]
    unit = F.normalize(rows.to(torch.promote_types(rows.dtype, torch.float32)), dim=1)
    mean, count = segment_mean(unit, seg[mask], n)
    return SegmentTargets(seg, mean, count)


def superpoint_distillation(pred: Features, target: torch.Tensor, superpoints: torch.Tensor,
                            mask: torch.Tensor | None = None, uncertainty: bool = False,
                            mean: torch.Tensor | None = None, segments: SegmentTargets | None = None) -> torch.Tensor:
    """1 - cos between superpoint-averaged student and teacher features, over superpoints with targets.

    ``segments``: the sample's ``segment_targets``, when the caller already has them."""
    if uncertainty:
        return _weighted_superpoint_distillation(pred, target, superpoints, mask, mean)
    mask = torch.ones(len(target), dtype=torch.bool, device=target.device) if mask is None else mask
    st = segments if segments is not None else segment_targets(target, superpoints, mask)
    has = st.count > 0
    if not bool(has.any()):
        return zero_loss(pred)
    sp_pred = _segment_mean(_shifted(rows_of(pred, mask), mean), st.seg[mask], len(st.count))[has]
    sp_target = st.mean[has].to(sp_pred.dtype)
    if mean is not None:
        sp_target = sp_target - mean.to(sp_target.device, sp_target.dtype)
    return (1.0 - F.cosine_similarity(sp_pred, sp_target, dim=1)).mean()


def _weighted_superpoint_distillation(pred: Features, target: torch.Tensor, superpoints: torch.Tensor,
                                      mask: torch.Tensor | None, mean: torch.Tensor | None) -> torch.Tensor:
    """GeoGuide's variant: each superpoint weighted by how much its points' teacher features agree."""
    if mask is not None:
        pred, target, superpoints = rows_of(pred, mask), target[mask], superpoints[mask]
    if _num_rows(pred) == 0:
        return zero_loss(pred)
    seg, n = _dense_ids(superpoints)
    pred, target = center(pred, target, mean)
    sp_pred = _segment_mean(pred, seg, n)
    sp_target, _ = segment_mean(target, seg, n)
    loss = 1.0 - F.cosine_similarity(sp_pred, sp_target, dim=1)
    agree, _ = segment_mean(F.cosine_similarity(target, sp_target[seg], dim=1)[:, None], seg, n)
    w = agree[:, 0].clamp(min=0).detach()
    return (w * loss).sum() / w.sum().clamp(min=1e-12)


def superpoint_targets(target: torch.Tensor, superpoints: torch.Tensor, mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point's superpoint's mean (unit) teacher feature, and which points now have a target.

    The mean is over the superpoint's points that have a target of their own; SAS maps it onto
    all the superpoint's points, so points no camera saw inherit their superpoint's feature.
    """
    if not mask.any():
        return target, mask
    st = segment_targets(target, superpoints, mask)
    return st.mean[st.seg].to(target.dtype), st.count[st.seg] > 0


def superpoint_target_distillation(pred: Features, segments: SegmentTargets, mean: torch.Tensor | None = None,
                                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """``cosine_distillation`` on ``superpoint_targets`` (SAS eq. 10) without forming a target per
    point: each superpoint's target is projected once, then gathered for its points.

    ``weights``: (n,) per superpoint, given to each of its points (``class_balance``), or None."""
    keep = segments.count[segments.seg] > 0
    if not bool(keep.any()):
        return zero_loss(pred)
    seg = segments.seg[keep]
    pred, table = center(rows_of(pred, keep), segments.mean, mean)
    return _weighted_mean(1.0 - rows_cosine_to_table(pred, table, seg), None if weights is None else weights[seg])


def relation_consistency(a: torch.Tensor, b: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
    """MSE between instance-level cosine-similarity matrices of two per-point feature sets."""
    keep = instances >= 0
    inst, n = _dense_ids(instances[keep])
    if n < 2:
        return a.sum() * 0.0
    ma, _ = segment_mean(a[keep], inst, n)
    mb, _ = segment_mean(b[keep], inst, n)
    sa = F.normalize(ma, dim=1) @ F.normalize(ma, dim=1).T
    sb = F.normalize(mb, dim=1) @ F.normalize(mb, dim=1).T
    return F.mse_loss(sa, sb)


def instance_mask_bce(mask_logits: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
    """BCE of (M, N) predicted masks of instances 0..M-1 against per-point instance ids (-1: none)."""
    target = (instances[None, :] == torch.arange(mask_logits.shape[0], device=instances.device)[:, None]).float()
    return F.binary_cross_entropy_with_logits(mask_logits, target)


def text_logits(pred: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, K) scaled cosine similarity of features to each class's text embedding (``text``: (K, D))."""
    return scale * F.normalize(pred, dim=1) @ F.normalize(text.to(pred.device, pred.dtype), dim=1).T


def superpoint_pseudo_labels(history: torch.Tensor, superpoints: torch.Tensor, vocab) -> torch.Tensor:
    """Per point, the class of its superpoint's averaged (history) feature."""
    seg, n = _dense_ids(superpoints)
    mean, _ = segment_mean(F.normalize(history.float(), dim=1), seg, n)
    return vocab.classify(mean.cpu())[0].to(history.device)[seg]


def text_cross_entropy(pred: torch.Tensor, labels: torch.Tensor, vocab, scale: float = 100.0) -> torch.Tensor:
    return F.cross_entropy(text_logits(pred, vocab.class_embeddings(), scale), labels)


def adept_expert_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      experts: list[tuple[torch.Tensor, torch.Tensor]], vocab) -> torch.Tensor:
    """Cosine loss to each expert's features on the points of the classes it is adept at.

    ``experts``: (expert features (N, D), adept (K,) bool) pairs; a point's class is its teacher
    target's class.
    """
    if not experts or not mask.any():
        return pred.sum() * 0.0
    cls = torch.full((len(pred),), -1, dtype=torch.long, device=pred.device)
    cls[mask] = vocab.classify(target[mask].float().cpu())[0].to(pred.device)
    total, count = pred.sum() * 0.0, 0
    for feats, adept in experts:
        adept = adept.to(pred.device)
        sel = (cls >= 0) & adept[cls.clamp(min=0)]
        if sel.any():
            total = total + (1.0 - F.cosine_similarity(pred[sel], feats[sel].to(pred.dtype), dim=1)).sum()
            count += int(sel.sum())
    return total / max(count, 1)


def reconstruct_instance_masks(pred: torch.Tensor, groups: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """BCE of masks predicted from each group's mean feature: logit_ij = scale * (cos(q_i, f_j) - 0.5).

    ``groups``: per point a group id (-1: ignored); the masks cover every point of the sample.
    """
    keep = groups >= 0
    if not keep.any():
        return pred.sum() * 0.0
    inv, n = _dense_ids(groups[keep])
    queries, _ = segment_mean(F.normalize(pred[keep], dim=1), inv, n)
    logits = scale * (F.normalize(queries, dim=1) @ F.normalize(pred, dim=1).T - 0.5)
    member = torch.full_like(groups, -1)
    member[keep] = inv
    return instance_mask_bce(logits, member)


def label_guided_targets(teacher: torch.Tensor, labels: torch.Tensor, text: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per instance: (target (M, D), usable (M,) bool, label-consistent (M,) bool).

    ``teacher``: (M, D) instance-teacher embeddings (zero rows: never seen); ``labels``: (M,)
    annotated class (-1: outside the label set); ``text``: (K, D) class text embeddings. A seen
    teacher embedding is kept when it names the annotated class or there is no class to check;
    otherwise the class's text embedding is the target; unseen instances without a class are unusable.
    """
    text = F.normalize(text.to(teacher.dtype), dim=1)
    seen = teacher.norm(dim=1) > 0
    named = (F.normalize(teacher, dim=1) @ text.T).argmax(1)
    has_label = labels >= 0
    consistent = seen & (~has_label | (named == labels))
    target = torch.where(consistent[:, None], F.normalize(teacher, dim=1), text[labels.clamp(min=0)])
    return target, consistent | has_label, consistent


def instance_distillation(inst_pred: Features, point_instance: torch.Tensor, ids: torch.Tensor,
                          target: torch.Tensor, usable: torch.Tensor, labels: torch.Tensor, text: torch.Tensor,
                          scale: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 - cos of pooled instance features to their targets, text cross-entropy), both means over
    the instances present in ``point_instance`` (per point an instance id; ids absent from ``ids``
    are ignored). ``ids``/``target``/``usable``/``labels`` describe the M annotated instances."""
    zero = zero_loss(inst_pred)
    device = zero.device
    size = max(int(ids.max()) if len(ids) else 0, int(point_instance.max())) + 1
    pos = torch.full((size,), -1, dtype=torch.long, device=device)  # annotated id -> row of ``ids``
    pos[ids.to(device)] = torch.arange(len(ids), device=device)
    row = pos[point_instance.clamp(min=0)]
    keep = (point_instance > 0) & (row >= 0)
    keep &= usable.to(device)[row.clamp(min=0)]
    if not keep.any():
        return zero, zero
    present, inv = torch.unique(row[keep], return_inverse=True)
    pooled = _segment_mean(rows_of(inst_pred, keep), inv, len(present))
    tgt = target.to(device, pooled.dtype)[present]
    distill = (1.0 - F.cosine_similarity(pooled, tgt, dim=1)).mean()
    lab = labels.to(device)[present]
    has = lab >= 0
    if not has.any():
        return distill, zero
    return distill, F.cross_entropy(text_logits(pooled[has], text, scale), lab[has])
