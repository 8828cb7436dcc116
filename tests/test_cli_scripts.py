"""The console scripts exist, explain themselves, and refuse what they cannot do yet."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("script", ["ovseg3d", "ovseg3d-train", "ovseg3d_node"])
def test_console_script_help(script):
    exe = BIN / script
    assert exe.exists() or shutil.which(script), f"{script} is not installed"
    proc = subprocess.run([str(exe if exe.exists() else script), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"usage: {script}" in proc.stdout


def test_ovseg3d_info_reports_every_part():
    proc = subprocess.run([str(BIN / "ovseg3d"), "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for part in ("torch", "MinkowskiEngine", "open_clip", "rclpy", "ovseg3d_interfaces"):
        assert f"ok       {part}" in proc.stdout


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`ovseg3d info | head -1`: once the pipe's reader has gone, writing ends the command with
    SIGPIPE's status and no traceback (Python would print BrokenPipeError twice)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    proc = subprocess.run([str(BIN / "ovseg3d"), "info"], stdout=write, stderr=subprocess.PIPE, text=True,
                          timeout=120)
    os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


def test_unknown_subcommand_is_one_clear_error():
    proc = subprocess.run([str(BIN / "ovseg3d"), "no-such-command"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "invalid choice" in proc.stderr


def test_bench_unknown_name_is_one_line():
    proc = subprocess.run([str(BIN / "ovseg3d"), "bench", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown benchmark nope; available:" in proc.stderr


def test_bench_passes_options_to_the_one_benchmark_named():
    run = [str(BIN / "ovseg3d"), "bench"]
    proc = subprocess.run([*run, "distill", "--args=--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "--tune-scenes" in proc.stdout and "--seed" in proc.stdout
    proc = subprocess.run([*run, "distill", "speed", "--args", "--seed 1"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--args goes to one benchmark; 2 were named" in proc.stderr
    # options after one benchmark's name go to it, as `ovseg3d bench node --minutes 60` needs
    proc = subprocess.run([*run, "node", "--minutes", "sixty"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "argument --minutes: invalid float value: 'sixty'" in proc.stderr
    proc = subprocess.run([*run, "speed", "node", "--bogus"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "(--bogus) go to one benchmark; 2 were named" in proc.stderr


@pytest.mark.slow
def test_quick_speed_benchmark_runs():
    proc = subprocess.run([str(BIN / "ovseg3d"), "bench", "speed", "--quick"], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3D speed-up" in proc.stdout and "labels s" in proc.stdout


@pytest.mark.slow
def test_distill_benchmark_prints_every_claim_under_both_teachers(tmp_path):
    """One room each for training, tuning and evaluation, one epoch: the whole bench under each
    teacher (about 3 minutes alone), students kept apart per teacher and input, claims side by side."""
    sizes = ["--train-scenes", "1", "--val-scenes", "1", "--tune-scenes", "1", "--epochs", "1",
             "--affinity-epochs", "1", "--work", str(tmp_path)]
    proc = subprocess.run([str(BIN / "ovseg3d"), "bench", "distill", f"--args={' '.join(sizes)} --teacher both"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout.split("== every claim under each teacher")[1].splitlines()
    assert table[1].split() == ["claim", "simulated", "simulated_hard"]
    claims = [line for line in table[2:] if line.strip()]
    assert len(claims) == 6 and all(line.count("/1") == 2 for line in claims)
    for runs in ("runs", "runs_simulated_hard"):
        assert (tmp_path / runs / "occupancy_seed0" / "cosine+superpoint" / "last.pt").exists()


@pytest.mark.parametrize("package", ["ovseg3d", "ovseg3d_train"])
@pytest.mark.parametrize("user_policy", [None, "ACTIVE"])
def test_openmp_threads_sleep_when_idle_unless_the_user_says_otherwise(package, user_policy):
    """Importing either package sets OMP_WAIT_POLICY before torch (and its libgomp) loads; a user's is kept."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_policy:
        env["OMP_WAIT_POLICY"] = user_policy
    code = (f"import sys, os; import {package}; assert 'torch' not in sys.modules, 'torch loaded first'; "
            "import torch; print(os.environ.get('OMP_WAIT_POLICY'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (user_policy or "PASSIVE")
