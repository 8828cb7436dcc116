"""The distillation loss terms by name: ``LOSS_TERMS`` maps each weight key of the config's ``loss``
section to the function that computes that term for one sample.

Adding a loss is one entry here plus its weight field in ``LossSection``. A term gets (trainer,
pred, sample, extra) -- the sample's tensors on the trainer's device, ``extra`` what
``Trainer._extra_targets`` prepared for it -- and gives None when it is off. The table's order
is the order the terms are summed (so the same numbers for the same seed) and logged (log.csv).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .config import LossSection
from .data import Sample
from .losses import (
    SegmentTargets,
    adept_expert_loss,
    cosine_distillation,
    instance_distillation,
    reconstruct_instance_masks,
    relation_consistency,
    segment_targets,
    superpoint_distillation,
    superpoint_pseudo_labels,
    superpoint_target_distillation,
    text_cross_entropy,
)

if TYPE_CHECKING:
    from .trainer import Trainer

Term = Callable[["Trainer", torch.Tensor, Sample, dict], "torch.Tensor | None"]


def relation_groups(superpoints: torch.Tensor, count: int) -> torch.Tensor:
    """Superpoint ids with all but ``count`` random superpoints set to -1 (ignored).

    Used as the instances of GeoGuide's relation and mask losses."""
    ids = torch.unique(superpoints)
    g = torch.Generator().manual_seed(int(ids.sum()))
    keep = ids[torch.randperm(len(ids), generator=g)[:count]]
    return torch.where(torch.isin(superpoints, keep.to(superpoints.device)), superpoints, -1)


def _mean(t: Trainer) -> torch.Tensor | None:
    return t.target_mean if t.cfg.loss.center_targets else None


def _segments(s: Sample, extra: dict) -> SegmentTargets:
    """The sample's per-superpoint teacher means, computed once for both of SAS's terms."""
    if "segment_targets" not in extra:
        extra["segment_targets"] = segment_targets(s.target, s.superpoints, s.mask)
    return extra["segment_targets"]


def _cosine(t: Trainer, pred: torch.Tensor, s: Sample, extra: dict) -> torch.Tensor | None:
    L = t.cfg.loss
    if not L.cosine > 0:
        return None
    balance = L.class_balance > 0
    if L.superpoint_point_targets:  # SAS eq. 10: each point learns its superpoint's mean teacher feature
        st = _segments(s, extra)
        return superpoint_target_distillation(pred, st, _mean(t), t.class_weights(st.mean) if balance else None)
    return cosine_distillation(pred, s.target, s.mask, _mean(t), t.class_weights(s.target) if balance else None)


def _superpoint(t: Trainer, pred: torch.Tensor, s: Sample, extra: dict) -> torch.Tensor | None:
    L = t.cfg.loss
    if not L.superpoint > 0:
        return None
    return superpoint_distillation(pred, s.target, s.superpoints, s.mask, uncertainty=L.superpoint_uncertainty,
                                   mean=_mean(t), segments=None if L.superpoint_uncertainty else _segments(s, extra))


def _relation(t: Trainer, pred: torch.Tensor, s: Sample, extra: dict) -> torch.Tensor | None:
    if "backbone" not in extra:
        return None
    return relation_consistency(extra["backbone"], pred, relation_groups(s.superpoints, t.cfg.loss.relation_groups))


def _instance_masks(t: Trainer, pred: torch.Tensor, s: Sample, extra: dict) -> torch.Tensor | None:
    L = t.cfg.loss
    if not L.instance_masks > 0:
        return None
    return reconstruct_instance_masks(pred, relation_groups(s.superpoints, L.relation_groups), L.instance_mask_scale)


def _temporal_ensembling(t: Trainer, pred: torch.Tensor, s: Sample, extra: dict) -> torch.Tensor | None:
    if "history" not in extra:
        return None
    labels = superpoint_pseudo_labels(extra["history"], s.superpoints, t.vocab)
    return text_cross_entropy(pred, labels, t.vocab, t.cfg.loss.te_logit_scale)


def _snapshot_experts(t: Trainer, pred: torch.Tensor, s: Sample, extra: dict) -> torch.Tensor | None:
    if "experts" not in extra:
        return None
    return adept_expert_loss(pred, s.target, s.mask, extra["experts"], t.vocab)


def _folk(t: Trainer, s: Sample, extra: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """FOLK's (distill, cross-entropy) pair: one pooling gives both, so it runs once per sample
    (kept in ``extra``) and the two terms share its graph, as one backward pass."""
    if "folk_losses" not in extra:
        ids, target, usable, labels = t.folk_targets(s.name)
        extra["folk_losses"] = instance_distillation(extra["instance"], s.instances, ids, target, usable, labels,
                                                     t.vocab.class_embeddings(), t.cfg.loss.instance_logit_scale)
    return extra["folk_losses"]


def _instance_distill(t: Trainer, pred: torch.Tensor, s: Sample, extra: dict) -> torch.Tensor | None:
    if "instance" not in extra or not t.cfg.loss.instance_distill > 0:
        return None
    return _folk(t, s, extra)[0]


def _instance_label_ce(t: Trainer, pred: torch.Tensor, s: Sample, extra: dict) -> torch.Tensor | None:
    if "instance" not in extra or not t.cfg.loss.instance_label_ce > 0:
        return None
    return _folk(t, s, extra)[1]


LOSS_TERMS: dict[str, Term] = {
    "cosine": _cosine,
    "superpoint": _superpoint,
    "relation": _relation,
    "instance_masks": _instance_masks,
    "temporal_ensembling": _temporal_ensembling,
    "snapshot_experts": _snapshot_experts,
    "instance_distill": _instance_distill,
    "instance_label_ce": _instance_label_ce,
}
LOSSES = list(LOSS_TERMS)

_weights = {f.name for f in dataclasses.fields(LossSection)}
if not set(LOSS_TERMS) <= _weights:  # each term's weight is the loss section's key of its name
    raise AssertionError(f"LOSS_TERMS without a LossSection weight: {sorted(set(LOSS_TERMS) - _weights)}")


def on_device(sample: Sample, device: torch.device) -> Sample:
    """The sample with the tensors the terms read moved to ``device`` (once, not per term)."""
    return dataclasses.replace(sample, target=sample.target.to(device), mask=sample.mask.to(device),
                               superpoints=sample.superpoints.to(device),
                               instances=None if sample.instances is None else sample.instances.to(device))
