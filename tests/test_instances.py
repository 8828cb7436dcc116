"""Class-agnostic proposals, naming instances from 3D or by 2D projection, and instance output of
`ovseg3d infer` scored by `ovseg3d eval` (AP)."""

from __future__ import annotations

import json

import numpy as np
import torch

from ovseg3d.cli import main as ovseg3d
from ovseg3d.fusion.instance_views import embed_instances
from ovseg3d.labels import load_label_set
from ovseg3d.segment.instance_classify import name_instances
from ovseg3d.segment.proposals import Proposal, instance_recovery, merge_superpoints
from ovseg3d.teachers.base import TeacherContext, build_teacher
from ovseg3d.text.vocabulary import build_vocabulary


def _stuff_free_instances(scene, labels):
    sem = scene.semantic(labels)
    stuff = np.isin(sem, [labels.names.index("wall"), labels.names.index("floor")]) | (sem < 0)
    return np.where(stuff, 0, scene.instance_ids)


def test_proposals_recover_generated_instances(synth_scene):
    labels = load_label_set("scannet20")
    sem = synth_scene.semantic(labels)
    g = torch.Generator().manual_seed(0)
    classes = torch.nn.functional.normalize(torch.randn(21, 64, generator=g), dim=1)
    # features that know the class but not the instance, with noise: instances must come from geometry
    feats = classes[torch.as_tensor(np.where(sem >= 0, sem, 20))] + 0.06 * torch.randn(len(sem), 64, generator=g)
    props = merge_superpoints(synth_scene.points, feats, synth_scene.segments, threshold=0.9, min_points=20)
    mean_iou, best = instance_recovery([p.mask for p in props], _stuff_free_instances(synth_scene, labels))
    print(f"proposals recover {len(best)} generated instances with mean best IoU {mean_iou:.3f}")
    assert mean_iou > 0.9 and len(best) > 10
    assert all(0 < p.confidence <= 1 for p in props)
    masks = np.stack([p.mask for p in props])
    assert masks.sum(0).max() == 1  # a partition: no point in two proposals


def test_merging_recomputes_means_so_it_does_not_chain():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(0, 0.1, (60, 3)) + np.array([0.1 * i, 0, 0]) for i in range(3)])
    sp = np.repeat([0, 1, 2], 60)
    e1, e2 = torch.eye(2)
    feats = torch.stack([e1, torch.nn.functional.normalize(e1 + e2, dim=0), e2]).repeat_interleave(60, 0)
    # a~b and b~c (cos 0.71 > 0.6) but the merged a+b is not like c (cos 0.38): two proposals, not one
    props = merge_superpoints(points, feats, sp, threshold=0.6, min_points=10)
    assert sorted(int(p.mask.sum()) for p in props) == [60, 120]
    assert len(merge_superpoints(points, feats, sp, threshold=0.3, min_points=10)) == 1


def test_naming_from_3d_and_by_2d_projection(synth_scene, tiny_clip):
    labels = load_label_set("scannet20")
    vocab = build_vocabulary(labels, tiny_clip)
    inst = _stuff_free_instances(synth_scene, labels)
    sem = synth_scene.semantic(labels)
    truth, props = [], []
    for i in np.unique(inst[inst > 0]):
        mask = inst == i
        truth.append(int(np.bincount(sem[mask][sem[mask] >= 0]).argmax()))
        props.append(Proposal(mask=mask, confidence=1.0, feature=vocab.class_embeddings()[truth[-1]]))
    # 3D naming of perfect features is exact; stuff is dropped
    named = name_instances(torch.stack([p.feature for p in props]), props, vocab)
    assert [p.label for p in named] == truth and all(0 < p.score <= 1 for p in named)
    assert name_instances(vocab.class_embeddings()[[0]], props[:1], vocab, stuff={0}) == []
    # the 2D projection baseline with the simulated teacher names most instances right
    teacher = build_teacher("simulated", TeacherContext(clip=tiny_clip, labels=labels))
    f2d, stats = embed_instances(synth_scene, [p.mask for p in props], teacher, top_k=3, select="count")
    named2d = name_instances(f2d, props, vocab)
    accuracy = np.mean([p.label == t for p, t in zip(named2d, truth)])
    assert accuracy > 0.6 and 0 < stats.teacher_calls <= 3 * len(props), (accuracy, stats)  # one crop per view


def test_infer_instances_scored_by_eval(synth_root, node_checkpoint, tmp_path):
    out = tmp_path / "pred"
    assert ovseg3d(["infer", str(synth_root / "scene0000_00"), "--checkpoint", str(node_checkpoint), "--out", str(out),
                    "--instances", "--no-pictures"]) == 0
    data = np.load(out / "scene0000_00.npz")
    ids, lab, score = data["instance_ids"], data["instance_labels"], data["instance_scores"]
    assert len(lab) == len(score) > 0 and ids.max() == len(lab) - 1 and (ids >= -1).all()
    assert ovseg3d(["eval", str(out), "--gt", str(synth_root), "--labels", "scannet20"]) == 0
    ap = json.loads((out / "eval.json").read_text())["instances"]
    assert 0 <= ap["AP"] <= ap["AP50"] <= ap["AP25"] <= 1
