"""Open-vocabulary instances from 3D alone (FOLK's inference) against the 2D-projection way
(OpenMask3D-like), on held-out synthetic scenes with the simulated teacher (test instrument).

Both name the same class-agnostic proposals (superpoints merged by student-feature similarity and
adjacency), so the comparison isolates how an instance is named: from the mean student feature,
or by projecting the proposal into its 5 best frames, running the 2D teacher there and averaging
its features over the proposal's pixels. Also shown: the same two namings of the ground-truth
masks (proposal quality taken out). Prints AP / AP50 / AP25 and seconds per scene side by side.

Needs a student and its data, e.g. from `make demo`:
  .venv/bin/python benchmarks/bench_instances.py --data demo_out/data --checkpoint demo_out/runs/demo/best.pt
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from ovseg3d.data.scannet import ScanNetScene, list_scenes
from ovseg3d.eval.instance import InstanceMeter
from ovseg3d.labels import load_label_set, stuff_indices
from ovseg3d.segment.instance_classify import name_instances, projected_features
from ovseg3d.segment.proposals import Proposal, instance_recovery, merge_superpoints
from ovseg3d.student.checkpoint import load_student
from ovseg3d.teachers.base import TeacherContext, build_teacher
from ovseg3d.text.vocabulary import build_vocabulary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("demo_out/data"))
    p.add_argument("--checkpoint", type=Path, default=Path("demo_out/runs/demo/best.pt"))
    p.add_argument("--scenes", nargs="*", help="held-out scene names (default: the last scene of --data)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.9)
    args = p.parse_args()
    labels = load_label_set("scannet20")
    student, _ = load_student(args.checkpoint, "cpu")
    vocab = build_vocabulary(labels)
    teacher = build_teacher("simulated", TeacherContext(labels=labels))
    stuff = stuff_indices(labels.names)
    paths = [args.data / s for s in args.scenes] if args.scenes else list_scenes(args.data)[-1:]
    meters = {k: InstanceMeter(len(labels)) for k in ("3d", "2d", "gt3d", "gt2d")}
    secs = {"student": 0.0, "proposals": 0.0, "name3d": 0.0, "name2d": 0.0}
    frames_run, recovery = 0, []
    for path in paths:
        scene = ScanNetScene(path)
        gt_sem, gt_inst = scene.semantic(labels), scene.instance_ids
        gt_label = np.where(gt_sem >= 0, gt_sem, -1)
        t0 = time.perf_counter()
        feats = student.predict(scene.points)
        secs["student"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        props = merge_superpoints(scene.points, feats, scene.segments, args.threshold, 100)
        secs["proposals"] += time.perf_counter() - t0
        thing = np.where(np.isin(gt_sem, list(stuff)) | (gt_sem < 0), 0, gt_inst)
        recovery.append(instance_recovery([q.mask for q in props], thing)[0])
        t0 = time.perf_counter()
        mean3d = torch.stack([q.feature for q in props])
        meters["3d"].update(name_instances(mean3d, props, vocab, stuff), gt_inst, gt_label)
        secs["name3d"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        f2d, stats = projected_features(scene, props, teacher, args.top_k)
        meters["2d"].update(name_instances(f2d, props, vocab, stuff), gt_inst, gt_label)
        secs["name2d"] += time.perf_counter() - t0
        frames_run += stats.frames_run
        gt_props = []
        for i in np.unique(thing[thing > 0]):
            m = gt_inst == i
            gt_props.append(Proposal(mask=m, confidence=1.0,
                                     feature=torch.nn.functional.normalize(feats[torch.from_numpy(m)].mean(0), dim=0)))
        meters["gt3d"].update(name_instances(torch.stack([q.feature for q in gt_props]), gt_props, vocab, stuff),
                              gt_inst, gt_label)
        f2d_gt, _ = projected_features(scene, gt_props, teacher, args.top_k)
        meters["gt2d"].update(name_instances(f2d_gt, gt_props, vocab, stuff), gt_inst, gt_label)
    n = len(paths)
    print(f"{n} held-out scene(s); proposals recover ground-truth instances with mean best IoU "
          f"{np.mean(recovery):.3f}; simulated teacher (test instrument), random-weight CLIP text encoder\n")
    print("| masks | named by | AP | AP50 | AP25 | s/scene (naming) |\n| --- | --- | --- | --- | --- | --- |")
    rows = [("proposals", "3D student only", "3d", secs["name3d"] + secs["student"]),
            ("proposals", f"2D projection, {args.top_k} best frames", "2d", secs["name2d"]),
            ("ground truth", "3D student only", "gt3d", None), ("ground truth", "2D projection", "gt2d", None)]
    for masks, how, key, s in rows:
        ap = meters[key].compute()
        t = f"{s / n:.2f}" if s is not None else "-"
        print(f"| {masks} | {how} | {100 * ap['AP']:.1f} | {100 * ap['AP50']:.1f} | {100 * ap['AP25']:.1f} | {t} |")
    print(f"\nnaming speed ratio 2D / 3D: {secs['name2d'] / (secs['name3d'] + secs['student']):.1f}x "
          f"(3D includes the student's forward pass, {secs['student'] / n:.2f} s/scene; 2D ran the teacher on "
          f"{frames_run / n:.0f} frames/scene); proposals {secs['proposals'] / n:.2f} s/scene, shared")


if __name__ == "__main__":
    main()
