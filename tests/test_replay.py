"""rosbag2 files of a synthetic scene (test instrument) in both storages, and their replay through
the real node with every message accounted for and the labels scored against ground truth."""

from __future__ import annotations

import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from ovseg3d.labels import load_label_set
from ovseg3d.ros_tools.bag import read_bag, write_bag
from ovseg3d.ros_tools.harness import NodeHarness
from ovseg3d.ros_tools.replay import ReplayConfig, header_stamp, replay
from ovseg3d.ros_tools.scene_stream import scene_stream

OVSEG3D = str(Path(sys.executable).parent / "ovseg3d")
INPUTS = ("rgb/image", "depth/image", "rgb/camera_info", "lidar/points")


def test_synth_writes_bags_in_both_storages(tmp_path):
    out = subprocess.run([OVSEG3D, "synth", str(tmp_path / "d"), "--preset", "test", "--frames", "6", "--sweeps",
                          "2", "--bag"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    scene = tmp_path / "d" / "scene0000_00"
    counts = {}
    for storage in ("sqlite3", "mcap"):
        types, total, messages = read_bag(scene / f"rosbag2_{storage}")
        assert types["/depth/image"] == "sensor_msgs/msg/Image" and types["/tf"] == "tf2_msgs/msg/TFMessage"
        assert types["/lidar/points"] == "sensor_msgs/msg/PointCloud2"
        msgs = list(messages)
        assert len(msgs) == total == 6 * 4 + 2 * 2  # per frame tf+rgb+depth+info; per sweep tf+cloud
        assert all(a.timestamp_ns <= b.timestamp_ns for a, b in pairwise(msgs))
        depth = next(m for m in msgs if m.topic == "/depth/image")
        assert header_stamp(depth.raw) == pytest.approx(depth.timestamp_ns * 1e-9)
        counts[storage] = [(m.topic, len(m.raw)) for m in msgs]
    assert counts["sqlite3"] == counts["mcap"]
    again = subprocess.run([OVSEG3D, "synth", str(tmp_path / "d"), "--preset", "test", "--frames", "6",
                            "--sweeps", "2", "--bag"], capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_replay_accounts_for_every_message_and_scores_above_chance(rclpy_context, node_checkpoint, tiny_clip,
                                                                   synth_root, tmp_path):
    scene = synth_root / "scene0000_00"
    bag = tmp_path / "bag"
    write_bag(scene_stream(scene), bag, "mcap")
    labels = load_label_set("scannet20")
    harness = NodeHarness(rclpy_context, {"checkpoint": str(node_checkpoint), "clip.model": tiny_clip.model,
                                          "map.voxel_size": 0.05, "depth.stride": 4, "inference.rate_hz": 2.0,
                                          "qos_depth": 100},  # played at 2x: room for bursts
                          namespace="")
    try:
        harness.start()
        report = replay(bag, harness, ReplayConfig(rate=2.0, settle_timeout=120), tmp_path / "out", scene, labels)
    finally:
        harness.close()
    assert report["settled"]
    assert report["played"] == {**report["received_by_node"], "/tf": 32}  # nothing lost on the way
    assert {k: report["played"][k] for k in INPUTS} == {"rgb/image": 24, "depth/image": 24, "rgb/camera_info": 24,
                                                        "lidar/points": 8}
    # every received message ended somewhere: matched into a frame, or counted as unmatched
    assert report["rgbd_frames_matched"] * 3 + report["camera_messages_unmatched"] == 72
    handled = (sum(report["ingested"].values()) + sum(report["skipped"].values()) + report["queue_drops"]
               + sum(report["rejected"].values()))
    assert handled == report["rgbd_frames_matched"] + 8
    e = report["eval"]
    assert e["miou"] > 2 * 100 / len(labels) and e["macc"] > 2 * e["chance_macc"], e
    assert report["latency_s"]["samples"] >= 1 and report["latency_s"]["median"] > 0
    assert all(Path(p).stat().st_size > 0 for p in report["pictures"])
    assert (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("args, message", [
    (["/nonexistent_bag", "--checkpoint", "x.pt"], "does not exist"),
    (["{tmp}", "--checkpoint", "{ckpt}"], "not a rosbag2 folder"),
    (["{tmp}", "--checkpoint", "{ckpt}", "--topic", "nonsense"], "is not NAME=VALUE"),
    (["{tmp}", "--checkpoint", "{ckpt}", "--rate", "-1"], "--rate"),
    (["{tmp}", "--checkpoint", "{ckpt}", "--param", "map.voxel_size=abc"], "takes a float, not 'abc'"),
    (["{tmp}", "--checkpoint", "{ckpt}", "--param", "no.such=1"], "unknown node parameter 'no.such'"),
])
def test_replay_bad_input(tmp_path, node_checkpoint, args, message):
    args = [a.format(tmp=tmp_path, ckpt=node_checkpoint) for a in args]
    out = subprocess.run([OVSEG3D, "replay", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-1500:]


def test_a_robot_bag_replays_like_the_raw_one(rclpy_context, node_checkpoint, tiny_clip, synth_root, tmp_path):
    """The same scene recorded as a robot records it (`ovseg3d synth --bag --robot`: jpeg colour, png
    compressedDepth as image_transport writes them, map -> odom -> base_link -> camera_link ->
    optical frame with the sensors on /tf_static, LiDAR with ring and t) and raw: every message
    accounted for, the same score."""
    from ovseg3d.ros_tools.bag import write_scene_bag
    from ovseg3d.ros_tools.replay import stream_params

    scene = tmp_path / "scene0000_00"
    shutil.copytree(synth_root / "scene0000_00", scene)
    cli = str(Path(sys.executable).parent / "ovseg3d")
    out = subprocess.run([cli, "synth", str(tmp_path / "x"), "--robot"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "give --bag too" in out.stderr and "Traceback" not in out.stderr
    labels = load_label_set("scannet20")
    reports = {}
    for kind in ("raw", "robot"):
        bag = write_scene_bag(scene, "mcap", robot=kind == "robot")
        topics, _, _ = read_bag(bag)
        params = stream_params({t.lstrip("/") for t in topics})
        assert params == ({} if kind == "raw" else {"rgb.transport": "compressed",
                                                    "depth.transport": "compressedDepth"})
        # played at the rate it was recorded (10 Hz); this test compares formats, not throughput (the
        # rate tests are in tests/adversarial): a queue of 16 lets a loaded CI machine pause the
        # node and this player's shared process for a second without dropping an input. The student sees
        # the whole room on every update (a context wider than the room): a voxel's final label then
        # comes from the last update, on the whole map, not from whichever partial map an update at
        # 2 Hz happened to catch -- that schedule moved both replays' mIoU by up to 0.65 on a loaded CI
        # machine, whatever the format; with it fixed, updates at 0.7-9 Hz gave identical scores
        harness = NodeHarness(rclpy_context, {"checkpoint": str(node_checkpoint), "clip.model": tiny_clip.model,
                                              "map.voxel_size": 0.05, "depth.stride": 4, "inference.rate_hz": 2.0,
                                              "inference.context": 20.0, "qos_depth": 100, "queue_size": 16,
                                              **params}, namespace="")
        try:
            harness.start()
            reports[kind] = replay(bag, harness, ReplayConfig(rate=1.0, settle_timeout=120), tmp_path / kind, scene,
                                   labels)
        finally:
            harness.close()
    raw, robot = reports["raw"], reports["robot"]
    assert robot["settled"] and robot["played"]["rgb/image/compressed"] == \
        robot["played"]["depth/image/compressedDepth"] == raw["played"]["rgb/image"] == 24
    assert robot["played"]["/tf_static"] == 1 and robot["played"]["lidar/points"] == 8
    assert robot["rgbd_frames_matched"] == raw["rgbd_frames_matched"] and not robot["rejected"], robot
    handled = (sum(robot["ingested"].values()) + sum(robot["skipped"].values()) + robot["queue_drops"]
               + sum(robot["rejected"].values()))
    assert handled == robot["rgbd_frames_matched"] + 8 and robot["ingested"] == raw["ingested"], \
        ({k: raw[k] for k in ("rejected", "skipped", "queue_drops", "received_by_node")}, robot["rejected"])
    assert abs(robot["eval"]["miou"] - raw["eval"]["miou"]) <= 0.5, (robot["eval"], raw["eval"])
