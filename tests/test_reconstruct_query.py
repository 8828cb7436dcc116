"""Synthetic scenes re-made from their own depth (as ScanNet's points are), and `ovseg3d query`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ovseg3d.cli import main as ovseg3d
from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_dataset
from ovseg3d.data.synth.reconstruct import reconstruct_scene
from ovseg3d.errors import UserError
from ovseg3d.labels import load_label_set
from ovseg3d.teachers.simulated import SimulatedSegmenter, SimulatedTeacherConfig


def test_reconstruction_replaces_points_keeps_labels_and_the_teacher_still_sees_the_mesh(tmp_path):
    cfg = dataclasses.replace(SYNTH_PRESETS["test"], frames=6, sweeps=1)
    path = generate_dataset(tmp_path, 1, seed=5, cfg=cfg)[0]
    before = ScanNetScene(path)
    mesh_points, mesh_nyu40 = before.points.copy(), before.nyu40.copy()
    n = reconstruct_scene(path, voxel_size=0.05)
    scene = ScanNetScene(path)
    assert scene.num_points == n and n != len(mesh_points) and scene.faces is None
    dist, nearest = cKDTree(mesh_points).query(scene.points)
    near = dist <= 0.1
    assert near.mean() > 0.9  # a depth reconstruction lies on the surfaces
    assert (scene.nyu40[near] == mesh_nyu40[nearest[near]]).all() and (scene.nyu40[~near] == 0).all()
    assert len(scene.segments) == n and len(scene.instance_ids) == n
    mesh = scene.source_mesh()
    assert mesh is not None and np.allclose(mesh.points, mesh_points) and mesh.faces is not None
    labels = load_label_set("scannet20")
    teacher = SimulatedSegmenter(labels, SimulatedTeacherConfig())
    teacher.begin_scene(scene)
    segments = teacher(next(scene.frames()))
    assert segments and all(s.mask.any() for s in segments)
    with pytest.raises(UserError, match="already reconstructed"):
        reconstruct_scene(path, voxel_size=0.05)


def test_query_command_ranks_instances_and_writes_a_picture(synth_root, node_checkpoint, tiny_clip, tmp_path,
                                                           capsys):
    png = tmp_path / "q.png"
    code = ovseg3d(["query", str(synth_root / "scene0000_00"), "a chair", "--checkpoint", str(node_checkpoint),
                    "--out", str(png), "--top", "3"])
    out = capsys.readouterr().out
    assert code == 0 and "| rank | instance | label | score |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert 1 <= len(rows) <= 3
    scores = [float(r.split("|")[4]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert png.stat().st_size > 0 and png.with_suffix(".ply").exists()
    assert ovseg3d(["query", str(synth_root / "scene0000_00"), "  ", "--checkpoint", str(node_checkpoint)]) == 2
    assert "query text is empty" in capsys.readouterr().err
    for flag, value, message in (("--instance-min-points", "0", "at least 1"), ("--instance-threshold", "2", "[-1, 1]"),
                                 ("--instance-threshold", "nan", "[-1, 1]")):
        assert ovseg3d(["query", str(synth_root / "scene0000_00"), "a chair", "--checkpoint", str(node_checkpoint),
                        flag, value]) == 2
        assert message in capsys.readouterr().err


def test_bad_reconstruct_voxel_is_refused_before_anything_is_written(tmp_path, capsys):
    assert ovseg3d(["synth", str(tmp_path / "d"), "--preset", "test", "--reconstruct", "-1"]) == 2
    assert "--reconstruct needs a positive voxel size" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
