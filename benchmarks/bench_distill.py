"""The distillation ablation: 2D fusion of the teacher vs the distilled 3D student, with and
without superpoint distillation and geometric pooling, on held-out synthetic scenes.

Run: .venv/bin/python benchmarks/bench_distill.py [--train-scenes 18] [--epochs 40] [--jobs 2]
     [--input occupancy|color] [--work DIR]
Synthetic world and simulated teacher (test instruments), random CLIP weights; the table
compares methods on the same held-out scenes in one run. The two students train side by side
(``--jobs`` processes, CPU threads split between them): about 40 minutes on 2 cores with the
defaults (2 min synthesis, 2 x 30 min training, 3 min affinity student, 1 min evaluation).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ovseg3d.data.openscene import fused_path, load_fused
from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_dataset
from ovseg3d.eval.semantic import SemanticMeter
from ovseg3d.eval.tables import miou_table
from ovseg3d.labels import load_label_set
from ovseg3d.student.checkpoint import load_student
from ovseg3d.student.pooling import geometric_pooling
from ovseg3d.text.vocabulary import build_vocabulary

BIN = Path(sys.executable).parent


def sh(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(a) for a in args], check=True)
    return time.perf_counter() - t0


def sh_parallel(commands: dict[str, list], jobs: int, threads: int) -> dict[str, float]:
    """Run the commands ``jobs`` at a time, ``threads`` CPU threads each; wall seconds of each.

    OMP_NUM_THREADS too: MinkowskiEngine's CPU kernels have their own OpenMP pool, which
    torch.set_num_threads does not reach.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    pending, running, times = list(commands.items()), {}, {}
    while pending or running:
        while pending and len(running) < jobs:
            key, cmd = pending.pop(0)
            running[key] = (subprocess.Popen([str(a) for a in cmd], env=env), time.perf_counter())
        time.sleep(1.0)
        for key, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                if proc.returncode != 0:
                    raise SystemExit(f"{key} failed (exit {proc.returncode})")
                times[key] = time.perf_counter() - t0
                del running[key]
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-scenes", type=int, default=18)
    p.add_argument("--val-scenes", type=int, default=4)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=0.002)
    # the "test" world's meshes have 10 cm vertex spacing: at 5 cm voxels two thirds of the voxels
    # have no occupied neighbour and the full-resolution convolutions see nothing but themselves
    p.add_argument("--voxel", type=float, default=0.1, help="student voxel size in metres (default 0.1)")
    p.add_argument("--input", choices=["occupancy", "color"], default="occupancy",
                   help="what the students see besides point positions (default: nothing, geometry only)")
    p.add_argument("--jobs", type=int, default=2, help="students trained at once (threads split between them)")
    p.add_argument("--affinity-epochs", type=int, default=10)
    p.add_argument("--work", type=Path, default=Path("runs/bench_distill"))
    args = p.parse_args()
    work = args.work
    n = args.train_scenes + args.val_scenes
    data, feats = work / "scenes", work / "features"
    times = {}
    if not (data / f"scene{n - 1:04d}_00").exists():
        t0 = time.perf_counter()
        generate_dataset(data, n, 100, SYNTH_PRESETS["test"])
        times["synth"] = time.perf_counter() - t0
    times["extract"] = sh(BIN / "ovseg3d", "extract", data, "--teacher", "simulated", "--out", feats)
    names = [f"scene{i:04d}_00" for i in range(n)]
    train, val = names[: args.train_scenes], names[args.train_scenes:]
    runs = {"cosine": ["loss.superpoint=0"], "cosine+superpoint": ["loss.superpoint=1"]}
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    commands = {f"train {run}": [BIN / "ovseg3d-train", "--config", "training/configs/synthetic.yaml",
                                 f"data.scenes={data}", f"data.targets={feats}", f"data.train=[{','.join(train)}]",
                                 f"data.val=[{','.join(val)}]", f"optim.epochs={args.epochs}", f"optim.lr={args.lr}",
                                 f"student.voxel_size={args.voxel}", f"student.input={args.input}", f"out={work}/runs",
                                 f"name={run}", "val_every=5", f"threads={threads}", *extra]
                for run, extra in runs.items()}
    times.update(sh_parallel(commands, args.jobs, threads))
    times["train affinity (GeoPurify)"] = sh(
        BIN / "ovseg3d-train", "--config", "training/configs/geopurify_affinity.yaml", f"data.scenes={data}",
        f"data.train=[{','.join(train)}]", f"affinity.teacher={work}/runs/cosine+superpoint/last.pt",
        f"student.voxel_size={args.voxel}", f"student.input={args.input}",  # it sees what the students see
        f"optim.epochs={args.affinity_epochs}", f"out={work}/runs", "name=affinity")
    labels = load_label_set("scannet20")
    vocab = build_vocabulary(labels)
    meters = {k: SemanticMeter(len(labels)) for k in ("2D fusion (teacher)", "3D cosine", "3D cosine+superpoint",
                                                      "3D cosine+superpoint + pooling (own backbone)",
                                                      "3D cosine+superpoint + pooling (affinity student)")}
    affinity = load_student(work / "runs" / "affinity" / "last.pt", "cpu")[0]
    students = {run: load_student(work / "runs" / run / "last.pt", "cpu")[0] for run in runs}
    t_pool = 0.0
    for name in val:
        scene = ScanNetScene(data / name)
        gt = scene.semantic(labels)
        f2d, mask = load_fused(fused_path(feats, name), scene.num_points)
        pred = np.full(scene.num_points, -1)
        pred[mask.numpy()] = vocab.classify(f2d.float())[0].numpy()
        meters["2D fusion (teacher)"].update(pred, gt)
        f3d = {}  # students take the colours only if they were trained with them
        for run, st in students.items():
            f3d[run] = st.predict(scene.points, scene.colors)
            meters[f"3D {run}"].update(vocab.classify(f3d[run])[0].numpy(), gt)
        st = students["cosine+superpoint"]
        with torch.no_grad():
            st.eval()
            own = st.backbone_features(st.make_field([scene.points], [scene.colors]))
        for key, aff in (("own backbone", own), ("affinity student", affinity.predict(scene.points, scene.colors))):
            t0 = time.perf_counter()
            pooled = geometric_pooling(scene.points, f3d["cosine+superpoint"], aff)
            t_pool += time.perf_counter() - t0
            meters[f"3D cosine+superpoint + pooling ({key})"].update(vocab.classify(pooled)[0].numpy(), gt)
    print(f"\n== distillation ablation on {len(val)} held-out synthetic scenes ({len(train)} training scenes, "
          f"{args.epochs} epochs, {args.voxel * 100:g} cm voxels, input {args.input}; simulated teacher; "
          "random CLIP) ==")
    scores = {k: m.compute() for k, m in meters.items()}
    print(miou_table(scores, "2D fusion (teacher)"))
    print("\nper-class IoU (held-out points of the class):")
    print(f"{'class':<16}{'points':>8}" + "".join(f"{k[:22]:>24}" for k in scores))
    counts = meters["2D fusion (teacher)"].cm.sum(1) + meters["2D fusion (teacher)"].misses
    for i, name in enumerate(labels.names):
        if counts[i]:
            print(f"{name:<16}{counts[i]:>8}" + "".join(f"{s.iou[i] * 100:>24.1f}" for s in scores.values()))
    print("times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f", pooling {t_pool:.1f} s")


if __name__ == "__main__":
    main()
