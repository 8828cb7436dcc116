"""`ovseg3d extract` and `ovseg3d calibrate` end to end: files, resume, sharding, bad input."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import interruptible
from ovseg3d.data.openscene import load_fused
from ovseg3d.data.scannet import ScanNetScene

OVSEG3D = str(Path(sys.executable).parent / "ovseg3d")
FAST = ["--teacher-option", "patch=32", "--stride", "4"]


def run(*args, check=True):
    proc = subprocess.run([OVSEG3D, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_extract_writes_files_the_reader_loads(synth_root, tmp_path):
    out = tmp_path / "feat"
    proc = run("extract", synth_root, "--teacher", "simulated", "--out", out, *FAST)
    assert "RANDOM weights" in proc.stderr  # no pretrained CLIP: said loudly
    for name in ("scene0000_00", "scene0001_00"):
        scene = ScanNetScene(synth_root / name)
        feat, mask = load_fused(out / f"{name}_0.pt", num_points=scene.num_points)
        assert feat.shape == (int(mask.sum()), 512) and mask.float().mean() > 0.5
    manifest = json.loads((out / "extract.0of1.json").read_text())
    assert manifest["teachers"] == ["simulated"] and len(manifest["scenes"]) == 2


def test_resume_after_an_interrupted_run(synth_root, tmp_path):
    out = tmp_path / "feat"
    proc = subprocess.Popen([OVSEG3D, "extract", str(synth_root), "--teacher", "simulated", "--out", str(out),
                             "--teacher-option", "patch=32"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=interruptible)
    first = out / "scene0000_00_0.pt"
    end = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert first.exists() and not (out / "scene0001_00_0.pt").exists(), "the run was not interrupted mid-way"
    before = first.stat().st_mtime_ns
    proc2 = run("extract", synth_root, "--teacher", "simulated", "--out", out, "--teacher-option", "patch=32")
    assert "1 already done" in proc2.stdout
    assert first.stat().st_mtime_ns == before  # the finished scene was not redone
    load_fused(out / "scene0001_00_0.pt")
    assert not list(out.glob(".*.tmp"))


def test_shards_split_the_scenes(synth_root, tmp_path):
    out = tmp_path / "feat"
    out.mkdir()
    writing = out / ".scene0000_00_0.pt.999999.tmp"  # shard 0/2, started first, in the middle of a write
    writing.write_bytes(b"half")
    run("extract", synth_root, "--teacher", "simulated", "--out", out, "--shard", "1/2", *FAST)
    assert sorted(p.name for p in out.glob("*.pt")) == ["scene0001_00_0.pt"]
    assert writing.read_bytes() == b"half"  # shard 1 left shard 0's file alone


def test_workers_write_what_one_process_writes(synth_root, tmp_path):
    """``--workers 2`` (the demo's: shards side by side in processes) gives the same features and
    instance targets as one process, with one manifest per shard."""
    one, two = tmp_path / "one", tmp_path / "two"
    run("extract", synth_root, "--teacher", "simulated", "--out", one, "--instance-teacher", *FAST)
    proc = run("extract", synth_root, "--teacher", "simulated", "--out", two, "--instance-teacher", "--workers", "2",
               *FAST)
    assert "extract 1/2" in proc.stderr and "extract 2/2" in proc.stderr  # each shard's progress named
    for name in ("scene0000_00", "scene0001_00"):
        a, b = load_fused(one / f"{name}_0.pt"), load_fused(two / f"{name}_0.pt")
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        ia = torch.load(one / f"{name}_instances.pt", weights_only=False)
        ib = torch.load(two / f"{name}_instances.pt", weights_only=False)
        assert ia.keys() == ib.keys() and all(
            torch.equal(ia[k], ib[k]) if isinstance(ia[k], torch.Tensor) else ia[k] == ib[k] for k in ia)
    shards = [json.loads((two / f"extract.{i}of2.json").read_text())["scenes"] for i in range(2)]
    assert [[r["scene"] for r in s] for s in shards] == [["scene0000_00"], ["scene0001_00"]]


def test_two_teachers_with_capability_tables(synth_root, tmp_path):
    caps = []
    for t in ("simulated_a", "simulated_b"):
        caps.append(tmp_path / f"{t}.json")
        run("calibrate", synth_root, "--teacher", t, "--out", caps[-1], "--stride", "8", "--teacher-option", "patch=32")
    out = tmp_path / "fused"
    run("extract", synth_root, "--teacher", "simulated_a", "--teacher", "simulated_b", "--capability", caps[0],
        "--capability", caps[1], "--out", out, *FAST)
    feat, _ = load_fused(out / "scene0000_00_0.pt")
    assert torch.isfinite(feat.float()).all()
    bad = run("extract", synth_root, "--teacher", "simulated_a", "--teacher", "simulated_b", "--capability", caps[1],
              "--capability", caps[0], "--out", out, check=False)
    assert bad.returncode == 2 and "capability table for 'simulated_b' given for teacher 'simulated_a'" in bad.stderr


@pytest.mark.parametrize("args,message", [
    (["--teacher", "lseg"], "unknown teacher 'lseg'"),
    (["--teacher", "simulated", "--labels", "scannet21"], "unknown label set 'scannet21'"),
    (["--teacher", "maskclip", "--clip-weights", "/nonexistent/w.pt"], "does not exist"),
    (["--teacher", "simulated", "--teacher", "simulated_a"], "needs 2 --capability tables"),
    (["--teacher", "simulated", "--stride", "0"], "--stride must be >= 1"),
    (["--teacher", "simulated", "--shard", "2/2"], "out of range"),
    (["--teacher", "simulated", "--workers", "0"], "--workers must be at least 1"),
    (["--teacher", "simulated", "--workers", "2", "--shard", "0/2"], "give --workers or --shard, not both"),
])
def test_bad_input_is_one_clear_line(synth_root, tmp_path, args, message):
    proc = run("extract", synth_root, "--out", tmp_path / "o", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_unreadable_weights_file(synth_root, tmp_path):
    junk = tmp_path / "w.pt"
    junk.write_bytes(b"not a checkpoint")
    proc = run("extract", synth_root, "--out", tmp_path / "o", "--teacher", "maskclip", "--clip-weights", junk,
               check=False)
    assert proc.returncode == 2 and "cannot load CLIP" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.pt"))


def test_not_a_dataset(tmp_path):
    proc = run("extract", tmp_path, "--out", tmp_path / "o", "--teacher", "simulated", check=False)
    assert proc.returncode == 2 and "holds no ScanNet scene folders" in proc.stderr
