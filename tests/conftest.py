"""Test isolation: no network for model hubs, a private ROS 2 domain on localhost."""

from __future__ import annotations

import os
import random

# Set before anything imports open_clip/huggingface_hub or rclpy.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
if "ROS_DOMAIN_ID" not in os.environ:
    os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid()).randint(1, 100))

import pytest


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
