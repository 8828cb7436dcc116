"""The node as its own process (``ovseg3d_node``), reached only through ROS from this one.

Its student is a random-weight MinkUNetSmall (512-d, so the default ViT-B-16 text encoder with
random weights fits it): these tests are about the node surviving its clients, not about labels.
"""

from __future__ import annotations

import pytest

from ovseg3d.ros_tools.node_process import NodeProcess

BASE_PARAMS = {"map.voxel_size": 0.05, "depth.stride": 2, "inference.rate_hz": 5.0, "diagnostics.period": 0.25,
               "warn_throttle": 60.0, "device": "cpu"}


@pytest.fixture(scope="session")
def adv_checkpoint(tmp_path_factory):
    import torch

    from ovseg3d.student.checkpoint import save_checkpoint
    from ovseg3d.student.model import Student, StudentConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        student = Student(StudentConfig(arch="MinkUNetSmall", feature_dim=512, voxel_size=0.1))
    return save_checkpoint(tmp_path_factory.mktemp("adv_ckpt") / "student.pt", student.eval(),
                           {"note": "random weights, written by the adversarial tests"}, "scannet20")


@pytest.fixture(scope="session")
def adv_params(adv_checkpoint, tmp_path_factory) -> dict:
    """The node's parameters in these tests."""
    return {"checkpoint": str(adv_checkpoint), "save_dir": str(tmp_path_factory.mktemp("maps")), **BASE_PARAMS}


@pytest.fixture(scope="session")
def adv_env(tmp_path_factory) -> dict:
    """The node processes' environment: a text-embedding cache of their own, so every vocabulary a
    test asks for is really built (a cache filled by an earlier run would skip the prompt templates)."""
    return {"OVSEG3D_CACHE": str(tmp_path_factory.mktemp("ovseg3d_cache"))}


@pytest.fixture
def start_node(adv_params, adv_env, tmp_path):
    """``start_node(**params)`` -> a started NodeProcess; every one is stopped after the test."""
    started: list[NodeProcess] = []

    def start(wait_service: str | None = "text_query", extra_args: tuple[str, ...] = (), **params) -> NodeProcess:
        values = {**adv_params, **params}
        node = NodeProcess(values, tmp_path / f"node{len(started)}.log", extra_args=extra_args, env=adv_env)
        started.append(node)
        return node.start(wait_service)

    yield start
    for node in started:
        node.close()
