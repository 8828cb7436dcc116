"""SAS capability-guided fusion on hand-made numbers; capability measurement; frame selection."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_scene
from ovseg3d.errors import UserError
from ovseg3d.fusion.frame_selection import coverage, frame_visibility, select_frames
from ovseg3d.fusion.multiteacher import Capability, fuse_teachers, measure_capability
from ovseg3d.labels import load_label_set
from ovseg3d.teachers.base import TeacherContext, build_teacher
from ovseg3d.text.vocabulary import Vocabulary, build_vocabulary

E = torch.eye(3)
VOCAB = Vocabulary(names=["a", "b", "c"], embeddings=E, row_class=torch.arange(3))


def test_sas_weights_by_hand():
    fa = torch.stack([E[0], E[2], torch.zeros(3), E[1]])
    fb = torch.stack([E[1], torch.zeros(3), torch.zeros(3), E[1]])
    ma = torch.tensor([True, True, False, True])
    mb = torch.tensor([True, False, False, True])
    caps = [np.array([0.2, 0.9, 0.5]), np.array([0.8, 0.6, 0.5])]
    fused, seen = fuse_teachers([fa, fb], [ma, mb], "sas", VOCAB, caps, temperature=0.05)
    # point 0: A says a, B says b; s_A = (0.2 + 0.9) / 2 = 0.55, s_B = (0.8 + 0.6) / 2 = 0.7
    w_b = 1 / (1 + math.exp(-(0.7 - 0.55) / 0.05))
    assert torch.allclose(fused[0], (1 - w_b) * E[0] + w_b * E[1], atol=1e-6)
    assert torch.allclose(fused[1], E[2])  # only A saw it
    assert seen.tolist() == [True, True, False, True] and (fused[2] == 0).all()
    assert torch.allclose(fused[3], E[1], atol=1e-6)  # agreement


def test_baselines_by_hand():
    fa = torch.stack([E[0] * 0.9, E[2]])
    fb = torch.stack([E[1] * 0.5 + E[2] * 0.1, E[2] * 0.3])
    m = torch.tensor([True, True])
    avg, _ = fuse_teachers([fa, fb], [m, m], "average", VOCAB)
    assert torch.allclose(avg, (fa + fb) / 2)
    best, _ = fuse_teachers([fa, fb], [m, m], "max_similarity", VOCAB)
    # cosine: A's 0.9*e0 has similarity 1 to "a"; B's has 0.98 to "b" -> A wins point 0
    assert torch.allclose(best[0], fa[0])
    with pytest.raises(UserError, match="needs one capability table per teacher"):
        fuse_teachers([fa, fb], [m, m], "sas", VOCAB, None)
    with pytest.raises(UserError, match="unknown teacher fusion"):
        fuse_teachers([fa], [m], "vote", VOCAB)


def test_capability_of_a_perfect_teacher_is_one(synth_scene, tiny_clip, tmp_path):
    labels = load_label_set("scannet20")
    vocab = build_vocabulary(labels, tiny_clip)
    perfect = build_teacher("simulated", TeacherContext(clip=tiny_clip, labels=labels, options={
        "confusion": "", "bleed_prob": "0", "noise": "0", "patch": "8"}))
    flawed = build_teacher("simulated", TeacherContext(clip=tiny_clip, labels=labels, options={
        "confusion": "chair>sofa:1.0", "bleed_prob": "0", "noise": "0", "patch": "8"}))
    cap = measure_capability(perfect, [synth_scene], labels, vocab, stride=8)
    bad = measure_capability(flawed, [synth_scene], labels, vocab, stride=8)
    chair, sofa = labels.names.index("chair"), labels.names.index("sofa")
    assert cap.values.min() > 0.99  # the same ray casting on both sides
    assert bad.values[chair] == 0 and bad.values[sofa] < cap.values[sofa]
    cap.save(tmp_path / "cap.json")
    back = Capability.load(tmp_path / "cap.json")
    assert back.classes == list(labels.names) and np.allclose(back.values, cap.values, atol=1e-6)


def test_frame_selection_beats_a_fixed_stride(tmp_path, record_property):
    cfg = dataclasses.replace(SYNTH_PRESETS["test"], frames=160, sweeps=1)
    scene = ScanNetScene(generate_scene(tmp_path, 0, seed=5, cfg=cfg))
    fv = frame_visibility(scene)
    stride = fv.frame_ids[::20]
    target = coverage(fv, stride)
    chosen = select_frames(fv, target_coverage=target)
    record_property("stride20_frames", len(stride))
    record_property("selected_frames", len(chosen))
    print(f"stride 20: {len(stride)} frames, coverage {target:.3f}; selection: {len(chosen)} frames, "
          f"coverage {coverage(fv, chosen):.3f}")
    assert coverage(fv, chosen) >= target
    assert len(chosen) < len(stride)
