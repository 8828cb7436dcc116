"""FOLK: the instance teacher (views by visibility and viewpoint diversity, crops), label-guided
distillation into the student's instance head, and naming instances from 3D alone (infer, live map)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg3d.cli import main as ovseg3d
from ovseg3d.data.instance_targets import instance_targets_path, load_instance_targets, save_instance_targets
from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.errors import UserError
from ovseg3d.fusion.instance_views import choose_views, crop_frame, instance_embeddings, instance_views
from ovseg3d.geometry.camera import project, world_to_camera
from ovseg3d.labels import load_label_set
from ovseg3d.student.checkpoint import load_student
from ovseg3d.teachers.base import TeacherContext, build_teacher
from ovseg3d.text.vocabulary import build_vocabulary
from ovseg3d_train.config import load_config
from ovseg3d_train.losses import instance_distillation, label_guided_targets
from ovseg3d_train.trainer import Trainer, train

BIN = Path(sys.executable).parent
CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "synthetic.yaml"


# ---------------------------------------------------------------- view choice and crops, by hand
def test_view_choice_weighs_visibility_and_viewpoint_diversity():
    visible = np.array([0.9, 0.85, 0.5, 0.0])
    front, also_front, side = np.array([1.0, 0, 0]), np.array([0.99, 0.14, 0]), np.array([0.0, 1, 0])
    dirs = np.stack([front, also_front, side, side])
    # the most visible views are two nearly identical ones: "count" takes both, "folk" takes the side view
    assert choose_views(visible, dirs, 2, "count")[0] == [0, 1]
    chosen, weights = choose_views(visible, dirs, 2, "folk", diversity=0.5)
    assert chosen == [0, 2] and weights == pytest.approx([0.9 / 1.4, 0.5 / 1.4])
    assert choose_views(visible, dirs, 2, "folk", diversity=0.0)[0] == [0, 1]  # no diversity term: as count
    assert choose_views(visible, dirs, 10, "folk")[0] == [0, 2, 1]  # never an unseen view
    assert choose_views(np.zeros(3), dirs[:3], 2) == ([], [])
    with pytest.raises(UserError, match="view selection"):
        choose_views(visible, dirs, 2, "best")


def test_a_crop_sees_points_where_the_whole_frame_does(synth_scene):
    frame = next(synth_scene.frames())
    uv, z = project(world_to_camera(synth_scene.points, frame.pose), frame.K)
    inside = (z > 0) & (uv[:, 0] > 100) & (uv[:, 0] < 200) & (uv[:, 1] > 50) & (uv[:, 1] < 150)
    assert inside.sum() > 10
    u, v = np.round(uv[inside]).astype(int).T
    sub, x0, y0 = crop_frame(frame, u, v, margin=0.1)
    uv2, _ = project(world_to_camera(synth_scene.points[inside], sub.pose), sub.K)
    assert np.allclose(uv2, uv[inside] - [x0, y0])
    assert (sub.depth == frame.depth[y0:y0 + sub.depth.shape[0], x0:x0 + sub.depth.shape[1]]).all()
    w, h = sub.image_size
    assert w >= np.ptp(u) and h >= np.ptp(v) and w <= frame.image_size[0] and h <= frame.image_size[1]


# ---------------------------------------------------------------- label-guided distillation, by hand
def test_label_guided_targets_keep_consistent_teachers_and_fall_back_to_text():
    text = torch.eye(3)
    teacher = torch.tensor([[2.0, 0.1, 0], [0.1, 1.0, 0], [0, 0, 0], [0, 0, 0], [0.2, 0, 1.0]])
    labels = torch.tensor([0, 2, 1, -1, -1])  # right; teacher says 1 for class 2; unseen; unseen, no class; no class
    target, usable, consistent = label_guided_targets(teacher, labels, text)
    assert consistent.tolist() == [True, False, False, False, True]
    assert usable.tolist() == [True, True, True, False, True]
    assert torch.allclose(target[0], torch.nn.functional.normalize(teacher[0], dim=0))
    assert torch.equal(target[1], text[2]) and torch.equal(target[2], text[1])  # the annotated class's text


def test_instance_distillation_pools_each_instance_by_hand():
    text = torch.eye(2)
    ids, labels = torch.tensor([7, 9]), torch.tensor([0, 1])
    target, usable = text.clone(), torch.tensor([True, True])
    # instance 7: points (1, 1) and (1, -1) pool to (1, 0) = its target; instance 9 pools to (1, 0), target (0, 1)
    pred = torch.tensor([[1.0, 1.0], [1.0, -1.0], [2.0, 0.0], [5.0, 5.0]])
    point_instance = torch.tensor([7, 7, 9, 0])  # the last point belongs to no instance
    distill, ce = instance_distillation(pred, point_instance, ids, target, usable, labels, text, scale=1.0)
    assert distill.item() == pytest.approx((0.0 + 1.0) / 2)
    expected_ce = (torch.nn.functional.cross_entropy(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), labels)).item()
    assert ce.item() == pytest.approx(expected_ce)
    # an unusable instance and ids the table does not know are left out
    distill, _ = instance_distillation(pred, torch.tensor([7, 7, 9, 3]), ids, target, torch.tensor([True, False]),
                                       labels, text, scale=1.0)
    assert distill.item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- the instance teacher on synthetic scenes
def test_folk_teacher_names_annotated_instances(synth_scene, tiny_clip):
    labels = load_label_set("scannet20")
    vocab = build_vocabulary(labels, tiny_clip)
    teacher = build_teacher("simulated", TeacherContext(clip=tiny_clip, labels=labels))
    inst, sem = synth_scene.instance_ids, synth_scene.semantic(labels)
    ids = [i for i in np.unique(inst[inst > 0]) if (sem[inst == i] >= 0).any()]
    masks = [inst == i for i in ids]
    truth = [int(np.bincount(sem[m][sem[m] >= 0]).argmax()) for m in masks]
    views = instance_views(synth_scene, masks, top_k=3, select="folk", frame_stride=2)
    assert all(len(f) <= 3 and (not w or sum(w) == pytest.approx(1.0)) for f, w in zip(views.frames, views.weights))
    emb, stats = instance_embeddings(synth_scene, masks, teacher, views, crop=True)
    assert stats.teacher_calls == sum(stats.views) <= 3 * len(masks)
    seen = np.array(stats.views) > 0
    named = vocab.classify(emb[torch.from_numpy(seen)])[0].numpy()
    accuracy = float((named == np.array(truth)[seen]).mean())
    print(f"FOLK teacher: {seen.sum()}/{len(masks)} instances seen, named right {accuracy:.2f}")
    assert seen.mean() > 0.8 and accuracy > 0.7
    assert torch.all(emb[torch.from_numpy(~seen)] == 0)


def test_instance_target_files_round_trip_and_reject_garbage(tmp_path):
    path = tmp_path / "s_instances.pt"
    save_instance_targets(path, [3, 5], torch.eye(2, 4), [2, 0])
    ids, feat, views = load_instance_targets(path)
    assert ids.tolist() == [3, 5] and feat.shape == (2, 4) and views.tolist() == [2, 0]
    torch.save({"feat": torch.zeros(2, 4)}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="not an ovseg3d instance-target file"):
        load_instance_targets(tmp_path / "bad.pt")
    with pytest.raises(UserError, match="3 instance embeddings for 2"):
        save_instance_targets(tmp_path / "x.pt", [1, 2], torch.zeros(3, 4), [1, 1, 1])


# ---------------------------------------------------------------- training and inference end to end
@pytest.fixture(scope="module")
def folk_targets(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("folk_targets")
    subprocess.run([str(BIN / "ovseg3d"), "extract", str(synth_root), "--teacher", "simulated", "--out", str(out),
                    "--stride", "6", "--teacher-option", "patch=32", "--instance-teacher", "--instance-views", "3"],
                   check=True, capture_output=True)
    return out


def _folk_cfg(synth_root, targets, out, *extra):
    return load_config(CONFIG, [f"data.scenes={synth_root}", f"data.targets={targets}", f"out={out}",
                                "data.max_points=2500", "data.train=[scene0000_00]", "data.val=[scene0001_00]",
                                "threads=1", "optim.epochs=1", "student.instance_hidden=32",
                                "loss.instance_distill=1.0", "loss.instance_label_ce=0.1", *extra])


def test_extract_writes_instance_targets_for_every_annotated_instance(synth_root, folk_targets):
    for scene in ("scene0000_00", "scene0001_00"):
        ids, feat, views = load_instance_targets(instance_targets_path(folk_targets, scene))
        gt = ScanNetScene(synth_root / scene).instance_ids
        assert ids.tolist() == sorted(np.unique(gt[gt > 0]).tolist())
        assert feat.shape[1] == 512 and ((feat.norm(dim=1) - 1).abs() < 1e-2).sum() == (views > 0).sum()
    manifest = json.loads((folk_targets / "extract.0of1.json").read_text())
    assert manifest["instance_teacher"] == "simulated"
    assert all(r["instances_seen"] > 0 and r["instance_crops"] > 0 for r in manifest["scenes"])


def test_folk_training_run_and_3d_only_instance_inference(synth_root, folk_targets, tmp_path):
    cfg = _folk_cfg(synth_root, folk_targets, tmp_path, "name=folk")
    path = train(cfg)
    student, _ = load_student(path, "cpu")
    assert student.has_instance_head
    rows = list(csv.DictReader((tmp_path / "folk" / "log.csv").read_text().splitlines()))
    assert float(rows[0]["loss_instance_distill"]) > 0 and float(rows[0]["loss_instance_label_ce"]) > 0
    assert 0 <= float(rows[0]["val_instance_acc"]) <= 1
    out = tmp_path / "pred"
    assert ovseg3d(["infer", str(synth_root / "scene0001_00"), "--checkpoint", str(path), "--out", str(out),
                    "--instances", "--no-pictures"]) == 0
    assert json.loads((out / "infer.json").read_text())["instance_naming"] == "instance head"
    data = np.load(out / "scene0001_00.npz")
    assert len(data["instance_labels"]) == len(data["instance_scores"]) == data["instance_ids"].max() + 1


def test_folk_config_mistakes_are_named(synth_root, folk_targets, tmp_path):
    with pytest.raises(UserError, match=r"student\.instance_hidden"):
        _folk_cfg(synth_root, folk_targets, tmp_path, "student.instance_hidden=0")
    with pytest.raises(UserError, match="nothing trains"):
        _folk_cfg(synth_root, folk_targets, tmp_path, "loss.instance_distill=0", "loss.instance_label_ce=0")
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in folk_targets.glob("*_0.pt"):
        (bare / f.name).write_bytes(f.read_bytes())
    with pytest.raises(UserError, match="--instance-teacher"):
        Trainer(_folk_cfg(synth_root, bare, tmp_path))


def test_extract_refuses_an_instance_teacher_without_annotation(synth_root, tmp_path, capsys):
    scene = tmp_path / "data" / "scene0000_00"
    shutil.copytree(synth_root / "scene0000_00", scene)
    for f in scene.glob("*.aggregation.json"):
        f.unlink()
    out = tmp_path / "t"
    assert ovseg3d(["extract", str(tmp_path / "data"), "--teacher", "simulated", "--out", str(out),
                    "--instance-teacher"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no instance annotation" in err[0]
    assert not list(out.glob("*.pt"))  # refused before any work


def test_live_map_instances_are_proposals_named_by_the_instance_head(synth_root, node_checkpoint, tiny_clip):
    from scipy.spatial import cKDTree

    from ovseg3d.segment.live_map import LiveConfig, LiveSegmenter

    labels = load_label_set("scannet20")
    student, _ = load_student(node_checkpoint, "cpu")
    live = LiveSegmenter(student, build_vocabulary(labels, tiny_clip),
                         LiveConfig(voxel_size=0.05, instance_cell=0.1, instance_min_points=20))
    scene = ScanNetScene(synth_root / "scene0000_00")
    for f in scene.frames(stride=2):
        live.add_rgbd(f.depth, f.K, f.pose, stamp=float(f.frame_id), rgb=f.color)
    live.update(force=True)
    assert live.instance_codec.dim == student.cfg.feature_dim
    assert np.abs(live.voxel_codes(instance=True).astype(np.float32)).sum() > 0
    assert live.instances and all(0 < i.score <= 1 and i.num_points >= 20 for i in live.instances)
    # each instance's name against the annotated class of most of its voxels' nearest vertices
    gt = scene.semantic(labels)[cKDTree(scene.points).query(live.map.points)[1]]
    right = []
    for inst in live.instances:
        g = gt[live.map.instances == inst.id]
        g = g[g >= 0]
        if len(g):
            right.append(inst.label == np.bincount(g).argmax())
    print(f"live map: {len(live.instances)} proposals, named right {np.mean(right):.2f}, rows {live.table.dtype}, "
          f"{live.memory()['voxels_per_row']:.2f} voxels a row")
    assert len(right) >= 5 and np.mean(right) > 0.5
    # ids survive a relabel; names follow the new words
    before = {i.id for i in live.instances}
    live.set_vocabulary(build_vocabulary(load_label_set("scannet20"), tiny_clip))
    assert {i.id for i in live.instances} & before
    ranked = live.query(live.vocab.class_embeddings()[labels.names.index("chair")], threshold=-1,
                        max_points=10, max_instances=3).instances
    assert 1 <= len(ranked) <= 3 and ranked[0][1] >= ranked[-1][1]
