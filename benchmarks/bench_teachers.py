"""Teachers: cost per frame, extract throughput, SAS multi-teacher fusion ablation, frame selection.

Run: .venv/bin/python benchmarks/bench_teachers.py [--scenes N] [--preset test|demo]
Everything runs on synthetic scenes with the simulated teacher (a test instrument) and random
CLIP weights; numbers compare methods side by side in one run, they do not measure real CLIP.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_dataset
from ovseg3d.eval.semantic import SemanticMeter
from ovseg3d.eval.tables import miou_table
from ovseg3d.fusion.frame_selection import coverage, frame_visibility, select_frames
from ovseg3d.fusion.multiteacher import fuse_teachers, measure_capability
from ovseg3d.fusion.multiview import fuse_many
from ovseg3d.labels import load_label_set
from ovseg3d.teachers.base import TeacherContext, build_teacher
from ovseg3d.text.clip_model import ClipSpec
from ovseg3d.text.vocabulary import build_vocabulary


def teacher_cost(scene: ScanNetScene, labels, spec: ClipSpec) -> None:
    frames = list(scene.frames(stride=4))[:8]
    print("\n== teacher cost per frame (CPU, random weights) ==")
    print(f"{'teacher':<34}{'ms/frame':>10}{'output':>16}")
    rows = [("simulated (patch 16)", "simulated", {}), ("maskclip ViT-B-16 @320x240", "maskclip", {}),
            ("maskclip ViT-B-16 @640x480", "maskclip", {"image_w": "640", "image_h": "480"})]
    for label, name, opts in rows:
        t = build_teacher(name, TeacherContext(clip=spec, labels=labels, options=opts))
        t.begin_scene(scene)
        t(frames[0])  # warm-up
        t0 = time.perf_counter()
        for f in frames:
            fm = t(f)
        ms = 1000 * (time.perf_counter() - t0) / len(frames)
        print(f"{label:<34}{ms:>10.1f}{'x'.join(map(str, fm.features.shape)):>16}")


def ablation(scenes: list[ScanNetScene], labels, spec: ClipSpec) -> None:
    vocab = build_vocabulary(labels, spec)
    calib, evals = scenes[: len(scenes) // 2], scenes[len(scenes) // 2:]
    teachers = [build_teacher(n, TeacherContext(clip=spec, labels=labels)) for n in ("simulated_a", "simulated_b")]
    t0 = time.perf_counter()
    caps = [measure_capability(t, calib, labels, vocab, stride=2) for t in teachers]
    t_cal = time.perf_counter() - t0
    meters = {k: SemanticMeter(len(labels)) for k in ("teacher A alone", "teacher B alone", "average",
                                                      "max_similarity", "SAS (capability-guided)")}
    frames = 0
    t0 = time.perf_counter()
    for s in evals:
        sem = s.semantic(labels)
        for t in teachers:
            t.begin_scene(s)
        fused = fuse_many(s.points, s.frames(), {t.name: t for t in teachers})
        frames += fused[teachers[0].name].frames_used
        feats = [fused[t.name].features for t in teachers]
        masks = [fused[t.name].mask for t in teachers]
        for key, f, m in zip(("teacher A alone", "teacher B alone"), feats, masks):
            meters[key].update(np.where(m.numpy(), vocab.classify(f)[0].numpy(), -1), sem)
        for key, method in (("average", "average"), ("max_similarity", "max_similarity"),
                            ("SAS (capability-guided)", "sas")):
            f, m = fuse_teachers(feats, masks, method, vocab, [c.values for c in caps])
            meters[key].update(np.where(m.numpy(), vocab.classify(f)[0].numpy(), -1), sem)
    t_ext = time.perf_counter() - t0
    print(f"\n== 2D fusion mIoU, two simulated teachers failing on different classes ({len(evals)} held-out "
          f"scenes; capability from {len(calib)} others) ==")
    print(miou_table({k: m.compute() for k, m in meters.items()}, "average", header="fusion"))
    points = sum(s.num_points for s in evals)
    print(f"calibration {t_cal:.1f} s; extract of 2 teachers: {frames} frames, {points} points in {t_ext:.1f} s "
          f"({frames / t_ext:.1f} frames/s, {frames * 2 / t_ext:.1f} teacher calls/s)")


def frame_selection(root: Path) -> None:
    cfg = dataclasses.replace(SYNTH_PRESETS["test"], frames=240, sweeps=1)
    scenes = [ScanNetScene(p) for p in generate_dataset(root / "long", 3, 21, cfg)]
    print("\n== informative-frame selection vs fixed stride (240-frame scans) ==")
    print(f"{'scene':<14}{'stride':>7}{'frames':>8}{'coverage':>10}{'selected':>10}{'coverage':>10}{'saved':>8}")
    for s in scenes:
        fv = frame_visibility(s)
        for stride in (10, 20):
            ids = fv.frame_ids[::stride]
            target = coverage(fv, ids)
            chosen = select_frames(fv, target_coverage=target)
            print(f"{s.name:<14}{stride:>7}{len(ids):>8}{target:>10.3f}{len(chosen):>10}{coverage(fv, chosen):>10.3f}"
                  f"{1 - len(chosen) / len(ids):>8.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6, help="synthetic scenes (half calibrate, half evaluate)")
    parser.add_argument("--preset", default="test", choices=["test", "demo"])
    args = parser.parse_args()
    torch.manual_seed(0)
    labels = load_label_set("scannet20")
    spec = ClipSpec()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        scenes = [ScanNetScene(p) for p in generate_dataset(root / "s", args.scenes, 11, SYNTH_PRESETS[args.preset])]
        print(f"generated {len(scenes)} {args.preset} scenes in {time.perf_counter() - t0:.1f} s "
              "(synthetic test instrument; simulated teachers; random CLIP weights)")
        teacher_cost(scenes[0], labels, spec)
        ablation(scenes, labels, spec)
        frame_selection(root)


if __name__ == "__main__":
    main()
