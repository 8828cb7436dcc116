"""ovseg3d.pipelines called as a library, as the demo and the benchmarks call it (no argv)."""

import numpy as np
import pytest
import torch

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.errors import UserError
from ovseg3d.pipelines.context import load_context
from ovseg3d.pipelines.evaluate import evaluate_predictions
from ovseg3d.pipelines.extract import ExtractOptions, build_teachers, extract_scenes
from ovseg3d.pipelines.infer import InferOptions, infer_scenes
from ovseg3d.pipelines.query import query_scene
from ovseg3d.text.vocabulary import Vocabulary, save_vocabulary


def test_context_checks_dimensions_and_follows_the_checkpoint(node_checkpoint, tmp_path):
    ctx = load_context(node_checkpoint, device="cpu")  # the text encoder the checkpoint was trained against
    assert ctx.text_encoder.model == "ovseg3d-test-tiny"
    assert ctx.vocab.dim == ctx.student.cfg.feature_dim == 64 and ctx.names == list(ctx.labels.names)
    other = Vocabulary(["a", "b"], torch.nn.functional.normalize(torch.randn(2, 16), dim=1), torch.arange(2))
    save_vocabulary(tmp_path / "v16.pt", other)
    with pytest.raises(UserError, match="vocabulary is 16-d but the student predicts 64-d"):
        load_context(node_checkpoint, device="cpu", vocabulary_file=tmp_path / "v16.pt")
    with pytest.raises(UserError, match="no text encoder"):
        load_context(node_checkpoint, device="cpu", clip_model="")
    # a robot carrying only a vocabulary file needs no label set (the node's configure asks for none)
    save_vocabulary(tmp_path / "v64.pt", ctx.vocab)
    alone = load_context(node_checkpoint, device="cpu", vocabulary_file=tmp_path / "v64.pt", clip_model="",
                         label_set="no-such-label-set", load_labels=False)
    assert alone.labels is None and alone.text_encoder is None and alone.names == ctx.names


def test_extract_infer_evaluate_query_without_argv(synth_root, node_checkpoint, tiny_clip, tmp_path):
    feats, pred = tmp_path / "features", tmp_path / "pred"
    opts = ExtractOptions(teachers=["simulated"], teacher_options={"simulated": {"patch": "32"}}, clip=tiny_clip,
                          stride=4)
    manifest = extract_scenes(synth_root, feats, opts)
    assert [s["scene"] for s in manifest["scenes"]] == ["scene0000_00", "scene0001_00"]
    ctx = load_context(None, device="cpu", clip_model=tiny_clip.model)
    report = infer_scenes(synth_root, pred, ctx, InferOptions(mode="2d", features=feats, pictures=False))
    assert len(report["scenes"]) == 2 and report["mode"] == "2d"
    scores = evaluate_predictions(pred, synth_root)
    assert scores["scenes"] == ["scene0000_00", "scene0001_00"] and scores["mIoU"] > 0.3, scores["mIoU"]
    with pytest.raises(UserError, match="needs --features"):
        infer_scenes(synth_root, pred, ctx, InferOptions(mode="2d"))
    # the student's proposals named by 2D projection (OpenMask3D-like): the demo's baseline for FOLK
    student_ctx = load_context(node_checkpoint, device="cpu")
    teacher = build_teachers(["simulated"], "scannet20", tiny_clip, student_ctx.templates,
                             {"simulated": {"patch": "32"}})
    projected = InferOptions(mode="2d", features=feats, instances=True, instance_min_points=30, pictures=False)
    with pytest.raises(UserError, match="needs --teacher"):
        infer_scenes(synth_root, tmp_path / "p2d", student_ctx, projected)
    report = infer_scenes(synth_root, tmp_path / "p2d", student_ctx, projected, teacher=teacher[1][0])
    assert report["instance_naming"] == "2D projection (simulated, 5 views)"
    with_instances = evaluate_predictions(tmp_path / "p2d", synth_root)
    assert with_instances["mIoU"] == scores["mIoU"] and with_instances["instances"]["AP50"] > 0
    scene = ScanNetScene(synth_root / "scene0000_00")
    result = query_scene(load_context(node_checkpoint, device="cpu"), scene, "  a   chair ", top=3,
                         instance_min_points=30)
    assert result.text == "a chair" and result.point_scores.shape == (scene.num_points,)
    ranked = [s for _, s in result.ranked]
    assert 0 < len(ranked) <= 3 and ranked == sorted(ranked, reverse=True) and np.isfinite(ranked).all()
