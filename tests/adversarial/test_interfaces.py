"""Parameter and lifecycle services work for every client, from another process, as `ros2 param`,
`ros2 lifecycle` and a lifecycle manager use them; bad start-up parameters are one-line errors."""

from __future__ import annotations

import subprocess

from ovseg3d.ros_tools.harness import wait_for
from ovseg3d.ros_tools.node_process import node_executable
from ovseg3d_interfaces.srv import TextQuery


def test_parameter_services_get_set_describe_and_refuse(start_node):
    node = start_node()
    assert node.get_parameters("inference.rate_hz", "depth.stride", "map_frame") == [5.0, 2, "map"]
    assert "stamps" in node.describe_parameters("time.max_future")[0].description
    ok = node.set_parameters({"inference.rate_hz": 2.0, "depth.stride": 3})
    assert all(r.successful for r in ok), ok
    assert node.get_parameters("inference.rate_hz", "depth.stride") == [2.0, 3]
    refused = {
        "out of range": {"inference.rate_hz": 500.0},
        "wrong type": {"depth.stride": "two"},
        "read-only": {"checkpoint": "other.pt"},
        "min above max": {"depth.min": 7.0},
        "no such method": {"instances.method": "kmeans"},
    }
    for why, change in refused.items():
        (result,) = node.set_parameters(change)
        assert not result.successful and result.reason, why
    assert "depth.min" in node.set_parameters({"depth.min": 7.0})[0].reason  # in the node's words
    assert node.get_parameters("inference.rate_hz", "depth.stride", "depth.min") == [2.0, 3, 0.1]  # unchanged
    # a change that is only valid as a whole, set atomically
    (together,) = node.set_parameters({"depth.max": 9.0, "depth.min": 7.0}, atomically=True)
    assert together.successful, together.reason
    assert node.get_parameters("depth.min", "depth.max") == [7.0, 9.0]
    assert node.alive()


def test_the_student_runs_on_the_cpu_threads_it_is_given(start_node):
    node = start_node(**{"inference.threads": 1})
    assert wait_for(lambda: node.counter("student cpu threads") == 1, 30), node.diagnostics
    assert node.describe_parameters("inference.threads")[0].read_only


def test_lifecycle_services_drive_the_node_from_unconfigured_to_finalized(start_node):
    node = start_node(wait_service="get_state", autostart=False)
    assert node.lifecycle_state() == "unconfigured"
    assert node.change_state("configure") and node.lifecycle_state() == "inactive"
    assert node.change_state("activate") and node.lifecycle_state() == "active"
    res = node.call(TextQuery, "text_query", TextQuery.Request(text="chair", threshold=-1.0, max_points=3))
    assert res.success, res.message
    assert node.change_state("deactivate") and node.lifecycle_state() == "inactive"
    assert not node.change_state("deactivate")  # not a transition from inactive: refused, state kept
    assert node.lifecycle_state() == "inactive"
    assert node.change_state("cleanup") and node.lifecycle_state() == "unconfigured"
    assert node.change_state("configure") and node.change_state("activate")
    assert node.change_state("shutdown")
    node.proc.wait(60)  # finalized: the process ends by itself, cleanly
    assert node.proc.returncode == 0, node.log()[-2000:]


def test_a_failed_configure_is_reported_and_the_node_stays_unconfigured(start_node, tmp_path):
    node = start_node(wait_service="get_state", autostart=False, checkpoint=str(tmp_path / "missing.pt"))
    assert not node.change_state("configure")
    assert node.lifecycle_state() == "unconfigured" and node.alive()
    assert "configure failed" in node.log() and "does not exist" in node.log()


def test_bad_start_up_parameters_are_one_line_errors(adv_checkpoint):
    for arg, words in (("inference.rate_hz:=500.0", "inference.rate_hz must be in [0.01, 50]"),
                       ("depth.stride:=two", "depth.stride takes an integer"),
                       ("map.voxel_size:=1", "map.voxel_size takes a number with a decimal point")):
        out = subprocess.run([node_executable(), "--ros-args", "-p", f"checkpoint:={adv_checkpoint}", "-p", arg],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 1 and words in out.stderr, (arg, out.stderr[-2000:])
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
