"""Maps that survive a restart: a node process autosaving while a robot streams into it is killed
with SIGKILL in the middle of writing a save, and a second process started with ``map.load``
resumes with exactly that save's voxels, labels and instance ids. ``~/load_map`` and ``map.load``
refuse files this node cannot read with one line and leave the live map (and the saved files) as
they were."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np

from ovseg3d.data.map_files import read_map_file
from ovseg3d.ros_tools.node_process import until
from ovseg3d.ros_tools.robot_stream import RobotStream
from ovseg3d_interfaces.srv import LoadMap, SaveMap, TextQuery


def _by_key(arrays: dict) -> dict:
    """A saved map's voxels in key order, each with its own feature row (``codes``), wherever the
    rows lie in the file's table."""
    order = np.argsort(arrays["keys"])
    rows = arrays["feature_row"]
    table = arrays["table_codes"]
    codes = np.where((rows >= 0)[:, None], table[rows], 0) if len(table) else np.zeros((len(rows), table.shape[1]))
    return {"codes": codes[order], **{k: arrays[k][order] for k in ("keys", "labels", "instances", "points")}}


def _settled(node, save_dir: Path, timeout: float = 60.0) -> dict:
    """The node's map (through ~/save_map) once the student has labelled every voxel of it and two
    saves a second apart agree (the last updates after the robot stopped have run)."""
    end = time.monotonic() + timeout
    last = None
    while True:
        assert node.call(SaveMap, "save_map", SaveMap.Request(path="before")).success
        arrays = _by_key(read_map_file(save_dir / "before.npz"))
        same = last is not None and all(np.array_equal(arrays[k], last[k]) for k in arrays)
        if ((arrays["labels"] >= 0).all() and same) or time.monotonic() > end:
            return arrays
        last = arrays
        time.sleep(1.0)


def _all_stopped(pid: int) -> bool:
    """Every thread of the process is in the stopped state (``T`` in /proc/<pid>/task/*/stat)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
        if state not in "Tt":
            return False
    return True


def _kill_while_saving(robot: RobotStream, save_dir: Path, timeout: float = 60.0) -> bool:
    """SIGKILL the node while a half-written autosave lies beside the last whole one (the robot
    keeps adding LiDAR returns at new places, so the map keeps changing and being saved). A small
    map is written in milliseconds, so the save may end between seeing its file and the kill:
    the node is frozen (SIGSTOP) first and killed only if the file is still there, else let go on."""
    node = robot.node
    pid = node.proc.pid
    half = save_dir / f".autosave.npz.{pid}.tmp"
    rng = np.random.default_rng(0)
    end = time.monotonic() + timeout
    next_points = 0.0
    while time.monotonic() < end:
        if half.exists():
            os.kill(pid, signal.SIGSTOP)
            assert until(lambda: _all_stopped(pid), 10), "the node did not stop on SIGSTOP"
            if half.exists():
                node.proc.kill()
                node.proc.wait(30)
                return True
            os.kill(pid, signal.SIGCONT)  # that save had ended: wait for the next one
        if time.monotonic() > next_points:
            robot.lidar(rng.uniform(-3, 3, (40, 3)), frame="fixed_lidar")  # posed by static TF alone
            next_points = time.monotonic() + 0.3
        time.sleep(0.0005)
    return False


# the random-weight student labels the robot's wall as anything: every label may be an instance
INSTANCES = {"instances.method": "connected", "instances.min_points": 5, "instances.stuff_labels": ["ceiling"]}


def test_a_node_killed_while_autosaving_restarts_from_its_last_save(start_node, tmp_path):
    save_dir = tmp_path / "maps"
    first = start_node(save_dir=str(save_dir), **{"map.autosave_period": 0.2, **INSTANCES})
    robot = RobotStream(first).start()
    try:
        assert robot.probe(), first.log()[-3000:]
        def saved_instances() -> bool:  # the autosave on disk holds labelled voxels in instances
            if not (save_dir / "autosave.npz").exists():
                return False
            saved = read_map_file(save_dir / "autosave.npz")  # renamed into place: always whole
            return bool((saved["labels"] >= 0).any() and (saved["instances"] >= 0).any())

        assert until(saved_instances, 90), (first.diagnostics, first.log()[-3000:])
        assert _kill_while_saving(robot, save_dir), ("no autosave was caught in the act", first.diagnostics,
                                                     os.listdir(save_dir), first.log()[-2000:])
    finally:
        robot.stop()
    assert first.proc.returncode == -9
    assert list(save_dir.glob(".autosave.npz.*.tmp")), "the kill should have left a half-written save behind"
    last = read_map_file(save_dir / "autosave.npz")  # the previous save is whole
    assert (last["labels"] >= 0).any() and (last["instances"] >= 0).any()

    second = start_node(save_dir=str(save_dir), **{"map.load": "autosave", **INSTANCES})
    assert "restored" in second.log() and not list(save_dir.glob(".autosave.*.tmp"))
    res = second.call(SaveMap, "save_map", SaveMap.Request(path="restored"))
    assert res.success, res.message
    got, want = _by_key(read_map_file(save_dir / "restored.npz")), _by_key(last)
    for name in ("keys", "labels", "instances", "codes"):
        assert np.array_equal(got[name], want[name]), name
    assert np.allclose(got["points"], want["points"])
    res = second.call(TextQuery, "text_query", TextQuery.Request(text="wall", threshold=-1.0, max_points=10))
    assert res.success and len(res.instances) > 0, res.message  # answered from the restored codes
    # /diagnostics tells what the restored map's features cost: a 4-byte row index per voxel and its share
    # of a float16 row (128 bytes: 56 semantic and 8 instance columns) by how many voxels share one
    assert until(lambda: "feature bytes per voxel in use" in second.diagnostics, 15), second.diagnostics
    kind, shared = second.diagnostics["feature rows"].split(", ")
    in_use = float(second.diagnostics["feature bytes per voxel in use"])
    share = float(shared.split()[0])  # printed to 0.1
    assert kind == "float16" and 4 + 128 / (share + 0.05) - 0.1 <= in_use <= 4 + 128 / (share - 0.05) + 0.1, \
        second.diagnostics

    # a node started without map.load autosaves only what it maps: its empty map never replaces
    # the last autosave (a map from before a reboot)
    before = (save_dir / "autosave.npz").read_bytes()
    third = start_node(save_dir=str(save_dir), **{"map.autosave_period": 0.1, **INSTANCES})
    time.sleep(1.5)
    assert third.alive() and (save_dir / "autosave.npz").read_bytes() == before


def test_maps_this_node_cannot_read_are_refused_and_the_live_map_kept(start_node, tmp_path, adv_params):
    save_dir = tmp_path / "maps"
    node = start_node(save_dir=str(save_dir), **{"diagnostics.period": 0.2})
    robot = RobotStream(node).start()
    try:
        assert robot.probe(), node.log()[-3000:]
    finally:
        robot.stop()
    assert node.call(SaveMap, "save_map", SaveMap.Request(path="good")).success
    good = save_dir / "good.npz"
    data = good.read_bytes()
    (save_dir / "truncated.npz").write_bytes(data[: len(data) // 2])
    np.savez(save_dir / "foreign.npz", x=np.arange(3))
    (save_dir / "text.npz").write_text("%s%n {} not a map\n")
    arrays = dict(np.load(good))
    np.savez(save_dir / "other_student.npz", **{**arrays, "student_fingerprint": np.array("0" * 64)})
    np.savez(save_dir / "other_voxels.npz", **{**arrays, "voxel_size": np.array(0.2)})
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(good, outside / "map.npz")
    os.symlink(outside, save_dir / "link")
    before = _settled(node, save_dir)
    cases = {"truncated": "not a readable map", "foreign": "not an ovseg3d map", "text": "not a readable map",
             "other_student": "another student", "other_voxels": "voxels", "missing": "no saved map",
             "../outside/map": "leaves the allowed folder", "link/map": "leads out of the allowed folder",
             "/etc/passwd": "leaves the allowed folder"}
    for path, words in cases.items():
        res = node.call(LoadMap, "load_map", LoadMap.Request(path=path))
        assert not res.success and words in res.message and "\n" not in res.message, (path, res.message)
    assert node.call(SaveMap, "save_map", SaveMap.Request(path="after")).success
    after = _by_key(read_map_file(save_dir / "after.npz"))
    for name in ("keys", "labels", "instances", "codes"):
        assert np.array_equal(after[name], before[name]), name
    assert good.read_bytes() == data  # the files it was offered are left as they were
    res = node.call(LoadMap, "load_map", LoadMap.Request(path="good"))
    assert res.success and res.voxels == len(before["keys"]), res.message

    # map.load with a file this student cannot read: the configure fails (an autosave must not
    # overwrite the map the user asked for), the process says why in one line and exits 1
    refused = start_node(wait_service=None, save_dir=str(save_dir),
                         **{"map.load": "other_student", "map.autosave_period": 0.1})
    assert refused.proc.wait(120) == 1
    assert "another student" in refused.log() and "Traceback" not in refused.log()
    assert not (save_dir / "autosave.npz").exists()
