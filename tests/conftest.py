"""Test isolation: no network for model hubs, a private ROS 2 domain on localhost."""

from __future__ import annotations

import os
import random

import pytest

from ovseg3d.ros.dds import use_sensor_profile  # imports no ROS

# Set before anything imports open_clip/huggingface_hub or rclpy.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
use_sensor_profile()  # Fast DDS reads it once per process, when the first ROS context starts
if "ROS_DOMAIN_ID" not in os.environ:
    os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid()).randint(1, 100))


def interruptible() -> None:
    """preexec_fn for children a test interrupts with SIGINT: a shell that started the test run in
    the background (`cmd &`) leaves SIGINT ignored, children inherit that, and Python then never
    raises KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def rclpy_context():
    """A fresh rclpy context per test, shut down afterwards."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """Two test-sized synthetic scenes (the test instrument) in ScanNet's raw layout."""
    from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, scenes=2, seed=7, cfg=SYNTH_PRESETS["test"])
    return root


@pytest.fixture(scope="session")
def synth_scene(synth_root):
    from ovseg3d.data.scannet import ScanNetScene

    return ScanNetScene(synth_root / "scene0000_00")


TINY_CLIP_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip ViT registered under the name 'ovseg3d-test-tiny' (random weights)."""
    import json

    import open_clip

    from ovseg3d.text.clip_model import ClipSpec

    path = tmp_path_factory.mktemp("clipcfg") / "ovseg3d-test-tiny.json"
    path.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(path)
    return ClipSpec(model="ovseg3d-test-tiny")


@pytest.fixture(scope="session")
def node_checkpoint(tmp_path_factory, synth_root, tiny_clip):
    """A small student trained for the tests (about a minute) on what the node will see: points
    back-projected from scene0000_00's depth images, labelled by their nearest mesh vertex, with
    the tiny random CLIP's text embeddings of those labels as targets, and an instance head that
    names each annotated instance from its pooled features (FOLK). (Trained on the mesh vertices
    alone it labels depth-built maps at chance: the synthetic mesh is much sparser.)"""
    import numpy as np
    import torch
    from scipy.spatial import cKDTree

    from ovseg3d.data.scannet import ScanNetScene
    from ovseg3d.geometry.camera import backproject_strided
    from ovseg3d.geometry.voxel_map import VoxelMap
    from ovseg3d.labels import load_label_set
    from ovseg3d.student.checkpoint import save_checkpoint
    from ovseg3d.student.model import Student, StudentConfig
    from ovseg3d.text.vocabulary import build_vocabulary
    from ovseg3d_train.losses import instance_distillation

    labels = load_label_set("scannet20")
    vocab = build_vocabulary(labels, tiny_clip, cache_dir=tmp_path_factory.mktemp("vocab"))
    scene = ScanNetScene(synth_root / "scene0000_00")
    cloud = VoxelMap(0.05)
    for f in scene.frames(stride=2, with_color=False):
        cloud.insert(backproject_strided(f.depth, f.K, f.pose, stride=4)[0])
    points = cloud.points
    dist, nearest = cKDTree(scene.points).query(points)
    target = torch.as_tensor(np.where(dist < 0.1, scene.semantic(labels)[nearest], -1)).long()
    # FOLK's instance head learns each instance's class from its pooled features (label-guided)
    instance = torch.as_tensor(np.where(dist < 0.1, scene.instance_ids[nearest], 0)).long()
    ids = torch.unique(instance[instance > 0])
    inst_label = torch.stack([torch.mode(target[(instance == i) & (target >= 0)]).values
                              if ((instance == i) & (target >= 0)).any() else torch.tensor(-1) for i in ids])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        student = Student(StudentConfig(arch="MinkUNetSmall", feature_dim=vocab.dim, voxel_size=0.1,
                                        instance_hidden=64))
        opt = torch.optim.Adam(student.parameters(), lr=3e-3)
        text = vocab.class_embeddings()
        inst_target = text[inst_label.clamp(min=0)]
        student.train()
        for _ in range(40):  # 20 left the instance head under-trained: it named half the proposals otherfurniture
            sem, inst = student(student.make_field([points]), True)
            logits = 20 * torch.nn.functional.normalize(sem, dim=1) @ text.T
            _, inst_ce = instance_distillation(inst, instance, ids, inst_target, inst_label >= 0, inst_label, text,
                                               20.0)
            loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=-1) + inst_ce
            opt.zero_grad()
            loss.backward()
            opt.step()
    return save_checkpoint(tmp_path_factory.mktemp("node_ckpt") / "student.pt", student.eval(),
                           {"clip_model": tiny_clip.model, "note": "trained by the test fixture"}, "scannet20")
