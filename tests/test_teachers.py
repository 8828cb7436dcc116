"""Teachers: MaskCLIP against the model's own computation, label teachers, the simulated teacher."""

import numpy as np
import pytest
import torch

from ovseg3d.data.scannet import Frame
from ovseg3d.errors import UserError
from ovseg3d.labels import load_label_set
from ovseg3d.teachers.base import TeacherContext, available_teachers, build_teacher
from ovseg3d.teachers.label_teacher import LabelTeacher, Segment
from ovseg3d.teachers.maskclip import (
    MaskClipTeacher,
    interpolate_positional_embedding,
    maskclip_dense,
    value_path,
    vit_tokens_before_last_block,
)
from ovseg3d.text.clip_model import load_clip
from ovseg3d.text.vocabulary import build_vocabulary, embed_prompts


def test_maskclip_trunk_matches_the_models_forward_at_native_size(tiny_clip):
    model, _ = load_clip(tiny_clip)
    visual = model.visual
    images = torch.randn(2, 3, 64, 64)
    captured = {}
    handle = visual.transformer.resblocks[-1].register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    with torch.no_grad():
        visual(images)
        ours, grid = vit_tokens_before_last_block(visual, images)
    handle.remove()
    assert grid == (4, 4)
    assert torch.allclose(ours, captured["x"], atol=1e-5)


def test_value_path_equals_attention_restricted_to_each_token_itself(tiny_clip):
    model, _ = load_clip(tiny_clip)
    block = model.visual.transformer.resblocks[-1]
    x = torch.randn(1, 17, 64)
    eye_only = torch.full((17, 17), float("-inf")).fill_diagonal_(0.0)
    with torch.no_grad():
        theirs = block.attention(q_x=block.ln_1(x), attn_mask=eye_only)
        ours = value_path(block, x)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_position_embeddings_interpolate_to_any_grid(tiny_clip):
    model, _ = load_clip(tiny_clip)
    pos = model.visual.positional_embedding
    assert interpolate_positional_embedding(pos, (4, 4)) is pos  # native grid: untouched
    assert interpolate_positional_embedding(pos, (3, 5)).shape == (1 + 15, 64)
    feats = maskclip_dense(model, torch.randn(1, 3, 48, 80))
    assert feats.shape == (1, 64, 3, 5)


def test_maskclip_teacher_on_a_frame(tiny_clip):
    teacher = MaskClipTeacher(tiny_clip, image_size=(80, 64))
    frame = Frame(0, np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8),
                  np.ones((120, 160), np.float32), np.eye(4), np.eye(3))
    fm = teacher(frame)
    assert fm.features.shape == (64, 4, 5) and teacher.dim == 64
    assert torch.allclose(fm.features.norm(dim=0), torch.ones(4, 5), atol=1e-5)


def test_label_teacher_paints_text_embeddings_of_labels(tiny_clip):
    mask_a = np.zeros((6, 8), bool)
    mask_a[:3] = True
    mask_b = np.zeros((6, 8), bool)
    mask_b[2:, :4] = True  # overlaps mask_a on row 2; the higher score wins there

    teacher = LabelTeacher(lambda f: [Segment(mask_a, "chair", 0.9), Segment(mask_b, "a red sofa", 0.5, caption=True)],
                           tiny_clip, ("a {} in a scene",))
    frame = Frame(0, np.zeros((60, 80, 3), np.uint8), np.ones((60, 80), np.float32), np.eye(4), np.eye(3))
    fm = teacher(frame)
    chair = embed_prompts(["chair"], tiny_clip, ("a {} in a scene",))[0]
    sofa = embed_prompts(["a red sofa"], tiny_clip, ("{}",))[0]
    assert torch.allclose(fm.features[:, 0, 0], chair) and torch.allclose(fm.features[:, 2, 0], chair)
    assert torch.allclose(fm.features[:, 4, 1], sofa)
    assert fm.confidence[4, 1] == pytest.approx(0.5) and fm.confidence[5, 7] == 0
    assert (fm.features[:, 5, 7] == 0).all()


def test_registry_and_unknown_teacher():
    names = available_teachers()
    assert {"maskclip", "precomputed", "label_files", "simulated", "simulated_a", "simulated_b"} <= set(names)
    assert "TEST INSTRUMENT" in names["simulated"]
    with pytest.raises(UserError, match="unknown teacher 'lseg'"):
        build_teacher("lseg", TeacherContext())
    with pytest.raises(UserError, match="needs a label set"):
        build_teacher("simulated", TeacherContext())
    with pytest.raises(UserError, match="needs folder="):
        build_teacher("precomputed", TeacherContext())
    labels = load_label_set("scannet20")
    for option, message in (("noise=abc", "teacher option noise must be a float, got 'abc'"),
                            ("patch=1.5", "teacher option patch must be an int"),
                            ("consistent=maybe", "teacher option consistent must be true or false"),
                            ("unseen=2", r"teacher option unseen is a probability in \[0, 1\], got 2.0")):
        key, value = option.split("=")
        with pytest.raises(UserError, match=message):
            build_teacher("simulated_hard", TeacherContext(labels=labels, options={key: value}))


def test_simulated_teacher_fails_as_configured(synth_scene, tiny_clip):
    labels = load_label_set("scannet20")
    vocab = build_vocabulary(labels, tiny_clip)
    frame = next(synth_scene.frames())
    perfect = build_teacher("simulated", TeacherContext(clip=tiny_clip, labels=labels, options={
        "confusion": "", "bleed_prob": "0", "noise": "0"}))
    always = build_teacher("simulated", TeacherContext(clip=tiny_clip, labels=labels, options={
        "confusion": "wall>door:1.0", "bleed_prob": "0", "noise": "0"}))
    for t in (perfect, always):
        t.begin_scene(synth_scene)
    a, b = perfect(frame), always(frame)
    assert a.features.shape[1:] == (30, 40)  # 640x480 at 16-pixel patches
    wall = vocab.embeddings[labels.names.index("wall")][:, None, None]
    door = vocab.embeddings[labels.names.index("door")][:, None, None]

    def cells_of(fm, emb):
        return torch.isclose(fm.features, emb, atol=1e-5).all(0)

    assert cells_of(a, wall).sum() > 50 and not cells_of(b, wall).any()  # every wall in view became a door
    assert (cells_of(b, door) >= cells_of(a, wall)).all()
    again = perfect(frame)
    assert torch.equal(again.features, a.features)  # deterministic per scene and frame


def _words_per_object(segmenter, frames):
    """{instance id: set of words it was given} over the frames (cells of one object only)."""
    seen: dict[int, list[set]] = {}
    for frame in frames:
        sem, inst, hit = segmenter._cell_labels(frame)
        words = np.full(sem.shape, "", dtype=object)
        for seg in segmenter(frame):
            words[seg.mask] = seg.label
        for i in np.unique(inst[hit & (sem >= 0)]):
            seen.setdefault(int(i), []).append(set(words[inst == i].tolist()))
    return seen


def test_hard_simulated_teacher_errs_the_same_way_in_every_view(synth_scene):
    """``consistent``: an object's misreading (or its never being labelled) is drawn once per object, so
    fusing views cannot average it away; the default teacher draws it per view."""
    from ovseg3d.teachers.simulated import SimulatedSegmenter, SimulatedTeacherConfig

    labels = load_label_set("scannet20")
    frames = list(synth_scene.frames())[:6]
    kw = dict(confusion={"chair": {"sofa": 0.5}, "table": {"desk": 0.5}}, bleed_prob=0.0, noise=0.0)
    per_view = SimulatedSegmenter(labels, SimulatedTeacherConfig(**kw))
    hard = SimulatedSegmenter(labels, SimulatedTeacherConfig(**kw, consistent=True, unseen=0.3))
    for s in (per_view, hard):
        s.begin_scene(synth_scene)
    confusable = {labels.names.index("chair"), labels.names.index("table")}
    sem = synth_scene.semantic(labels)
    ids = synth_scene.instance_ids

    def confused_objects(seen):
        return [i for i, views in seen.items() if len(views) >= 2
                and int(np.bincount(sem[ids == i][sem[ids == i] >= 0]).argmax()) in confusable]

    soft_seen, hard_seen = _words_per_object(per_view, frames), _words_per_object(hard, frames)
    # per view: some chair or table is read differently in two views
    assert any(len({frozenset(v) for v in soft_seen[i]}) > 1 for i in confused_objects(soft_seen))
    # consistent: every object is read the same way in every view that sees it
    assert confused_objects(hard_seen)
    for i, views in hard_seen.items():
        assert len({frozenset(v) for v in views}) == 1, i
    never = [i for i, views in hard_seen.items() if views[0] == {""}]
    assert 0 < len(never) < len(hard_seen)
    assert "TEST INSTRUMENT" in available_teachers()["simulated_hard"]
