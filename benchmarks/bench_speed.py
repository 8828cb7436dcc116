"""Speed and memory, side by side in one run: the 3D student against the 2D path on one scene,
and text queries against map size and vocabulary size.

Run: .venv/bin/python benchmarks/bench_speed.py [--quick]
Each measurement runs in its own process so that its peak memory (max RSS) is its own. CPU only
here; random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

MEASURE = textwrap.dedent('''
    import json, resource, sys, time
    import numpy as np, torch
    task, arg = sys.argv[1], json.loads(sys.argv[2])
    out = {}
    if task == "student":
        from ovseg3d.data.scannet import ScanNetScene
        from ovseg3d.student.model import Student, StudentConfig
        scene = ScanNetScene(arg["scene"])
        st = Student(StudentConfig(voxel_size=arg["voxel"])).eval()
        st.predict(scene.points[:1000])  # warm-up
        t0 = time.perf_counter()
        st.predict(scene.points)
        out["seconds"] = time.perf_counter() - t0
        out["points"] = scene.num_points
    elif task == "2d":
        from ovseg3d.data.scannet import ScanNetScene
        from ovseg3d.fusion.multiview import fuse_features
        from ovseg3d.labels import load_label_set
        from ovseg3d.teachers.base import TeacherContext, build_teacher
        scene = ScanNetScene(arg["scene"])
        teacher = build_teacher(arg["teacher"], TeacherContext(labels=load_label_set("scannet20")))
        teacher.begin_scene(scene)
        frames = list(scene.frames(stride=arg["stride"]))
        teacher(frames[0])  # warm-up
        t0 = time.perf_counter()
        fuse_features(scene.points, frames, teacher)
        out["seconds"] = time.perf_counter() - t0
        out["frames"] = len(frames)
    elif task == "ingest":
        from ovseg3d.data.scannet import ScanNetScene
        from ovseg3d.data.synth.writer import read_sweep
        from ovseg3d.geometry.camera import backproject_strided
        from ovseg3d.geometry.voxel_map import VoxelMap
        scene = ScanNetScene(arg["scene"])
        vmap = VoxelMap(voxel_size=0.02)
        frames = list(scene.frames())
        sweeps = [read_sweep(scene.path, i) for i in range(arg["sweeps"])]
        t_rgbd, t_lidar, n_rgbd, n_lidar = 0.0, 0.0, 0, 0
        for k in range(max(len(frames), len(sweeps))):
            if k < len(frames):
                f = frames[k]
                t0 = time.perf_counter()
                pts, pix = backproject_strided(f.depth, f.K, f.pose, stride=2)  # the node's default stride
                vmap.insert(pts, f.color[pix[:, 0], pix[:, 1]], stamp=k)
                t_rgbd += time.perf_counter() - t0; n_rgbd += 1
            if k < len(sweeps):
                pts, _, pose = sweeps[k]
                t0 = time.perf_counter()
                vmap.insert(pts @ pose[:3, :3].T + pose[:3, 3], stamp=k)
                t_lidar += time.perf_counter() - t0; n_lidar += 1
        out.update(rgbd_ms=1000 * t_rgbd / n_rgbd, lidar_ms=1000 * t_lidar / n_lidar, voxels=len(vmap))
    elif task == "query":
        from ovseg3d.text.vocabulary import Vocabulary
        n, k = arg["points"], arg["labels"]
        feats = torch.empty(n, 512, dtype=torch.float16)  # a map's features, stored as fp16
        for i in range(0, n, 200000):
            feats[i:i + 200000] = torch.nn.functional.normalize(torch.randn(min(200000, n - i), 512), dim=1)
        vocab = Vocabulary([str(i) for i in range(k)], torch.nn.functional.normalize(torch.randn(k, 512), dim=1),
                           torch.arange(k))
        t0 = time.perf_counter()
        for i in range(0, n, 200000):
            vocab.classify(feats[i:i + 200000].float())
        out["seconds"] = time.perf_counter() - t0
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
''')


def measure(task: str, **arg) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE, task, json.dumps(arg)], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", **__import__("os").environ})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="test-sized scene, fewer query sizes")
    args = p.parse_args()
    from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_scene

    with tempfile.TemporaryDirectory() as tmp:
        preset = "test" if args.quick else "demo"
        scene = generate_scene(Path(tmp), 0, seed=3, cfg=SYNTH_PRESETS[preset])
        print(f"\n== 3D student vs 2D path on one {preset} synthetic scene (CPU) ==")
        s3 = measure("student", scene=str(scene), voxel=0.05)
        print(f"{'path':<46}{'seconds':>9}{'peak MiB':>10}{'3D speed-up':>13}")
        print(f"{'3D student (MinkUNet18A, 5 cm voxels)':<46}{s3['seconds']:>9.2f}{s3['peak_mib']:>10.0f}{1:>13.1f}")
        for teacher, stride in (("maskclip", 1), ("maskclip", 10), ("simulated", 1)):
            r = measure("2d", scene=str(scene), teacher=teacher, stride=stride)
            label = f"2D: {teacher} on {r['frames']} frames + fusion"
            print(f"{label:<46}{r['seconds']:>9.2f}{r['peak_mib']:>10.0f}{r['seconds'] / s3['seconds']:>13.1f}")
        print(f"({s3['points']} points; the 2D path needs the posed images, the 3D path only the points)")
        r = measure("ingest", scene=str(scene), sweeps=SYNTH_PRESETS[preset].sweeps)
        print("\n== map ingest per message against the sensor period (2 cm voxel map) ==")
        print(f"{'message':<34}{'ms':>8}{'period ms':>11}{'load':>8}")
        print(f"{'RGB-D frame (320x240 depth)':<34}{r['rgbd_ms']:>8.1f}{33:>11}{r['rgbd_ms'] / 33:>8.2f}")
        print(f"{'LiDAR sweep (16 x 1024 beams)':<34}{r['lidar_ms']:>8.1f}{100:>11}{r['lidar_ms'] / 100:>8.2f}")
        print(f"(map grew to {r['voxels']} voxels; peak {r['peak_mib']:.0f} MiB)")
    print("\n== labelling a map against a vocabulary (text query core: cosine to every label) ==")
    sizes = [100_000, 500_000] if args.quick else [100_000, 500_000, 1_000_000, 2_000_000]
    vocabs = [20, 200]
    print(f"{'points':>10}" + "".join(f"{f'{k} labels s':>14}{'MiB':>8}" for k in vocabs))
    for n in sizes:
        row = f"{n:>10}"
        for k in vocabs:
            r = measure("query", points=n, labels=k)
            row += f"{r['seconds']:>14.3f}{r['peak_mib']:>8.0f}"
        print(row)


if __name__ == "__main__":
    main()
