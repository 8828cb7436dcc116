"""Open-vocabulary instances from 3D alone (FOLK's inference) against the 2D-projection way
(OpenMask3D-like), on held-out synthetic scenes with the simulated teacher (test instrument).

Every row names the same class-agnostic proposals (superpoints merged by student-feature
similarity and adjacency), so the comparison isolates how an instance is named:
- 3D, instance head: the pooled output of the student's FOLK instance head (needs a checkpoint
  trained with `student.instance_hidden` and `loss.instance_distill`, as `make demo` trains);
- 3D, mean feature: the mean of the student's per-point (semantic) features, no instance head;
- 2D projection: the proposal's 5 frames with the most visible points, the teacher run on a crop
  around it in each, its features averaged over the proposal's pixels (OpenMask3D-like);
- 2D, FOLK views: the same with FOLK's instance-teacher view choice (visibility x viewpoint
  diversity, visibility-weighted) -- the training-time teacher applied at inference, for reference.
Also shown: the same namings of the ground-truth masks (proposal quality taken out). Prints AP /
AP50 / AP25 and seconds per scene side by side, and the speed ratio 2D / 3D.

Needs a student and its data, e.g. from `make demo`:
  .venv/bin/python benchmarks/bench_instances.py --data demo_out/data --checkpoint demo_out/runs/demo/last.pt
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from ovseg3d.data.scannet import ScanNetScene, list_scenes
from ovseg3d.eval.instance import InstanceMeter
from ovseg3d.fusion.instance_views import embed_instances
from ovseg3d.labels import stuff_indices
from ovseg3d.pipelines.context import load_context
from ovseg3d.segment.instance_classify import name_instances, name_proposals, pooled_features
from ovseg3d.segment.proposals import Proposal, instance_recovery, merge_superpoints
from ovseg3d.teachers.base import TeacherContext, build_teacher

ROWS = [("head", "3D only: FOLK instance head"), ("mean", "3D only: mean student feature"),
        ("count", "2D projection, {k} best frames, crops (OpenMask3D-like)"),
        ("folk", "2D, FOLK views (visibility x diversity), crops")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("demo_out/data"))
    p.add_argument("--checkpoint", type=Path, default=Path("demo_out/runs/demo/last.pt"))
    p.add_argument("--scenes", nargs="*", help="held-out scene names (default: the last scene of --data)")
    p.add_argument("--all", action="store_true", help="every scene of --data is held out (e.g. a fresh `synth` seed)")
    p.add_argument("--teacher", choices=["simulated", "simulated_hard"], default="simulated",
                   help="the simulated 2D teacher of the projection rows (test instrument; simulated_hard errs the "
                        "same way in every view; default simulated)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--time-teacher", default="maskclip",
                   help="also time the 2D projection with this real teacher architecture (random weights: speed "
                        "only) on the first scene's proposals; empty: skip (default maskclip, ViT-B-16)")
    args = p.parse_args()
    ctx = load_context(args.checkpoint, device="cpu", label_set="scannet20")
    labels, student, vocab = ctx.labels, ctx.student, ctx.vocab
    teacher = build_teacher(args.teacher, TeacherContext(labels=labels))
    stuff = stuff_indices(labels.names)
    paths = ([args.data / s for s in args.scenes] if args.scenes else
             list_scenes(args.data) if args.all else list_scenes(args.data)[-1:])
    rows = [r for r in ROWS if r[0] != "head" or student.has_instance_head]
    meters = {(m, k): InstanceMeter(len(labels)) for m in ("proposals", "gt") for k, _ in rows}
    secs = {k: 0.0 for k, _ in rows} | {"student": 0.0, "proposals": 0.0}
    calls = {k: 0 for k, _ in rows}
    recovery, scene_props = [], []
    for path in paths:
        scene = ScanNetScene(path)
        gt_sem, gt_inst = scene.semantic(labels), scene.instance_ids
        gt_label = np.where(gt_sem >= 0, gt_sem, -1)
        t0 = time.perf_counter()
        feats, inst_feats = student.predict_instance(scene.points, scene.colors)  # inst_feats: None without a head
        secs["student"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        props = merge_superpoints(scene.points, feats, scene.segments, args.threshold, 100)
        scene_props.append(props)
        secs["proposals"] += time.perf_counter() - t0
        thing = np.where(np.isin(gt_sem, list(stuff)) | (gt_sem < 0), 0, gt_inst)
        recovery.append(instance_recovery([q.mask for q in props], thing)[0])
        gt_masks = [gt_inst == i for i in np.unique(thing[thing > 0])]
        gt_props = [Proposal(mask=m, confidence=1.0, feature=f)
                    for m, f in zip(gt_masks, pooled_features(feats, [Proposal(m, 1.0, None) for m in gt_masks]))]
        teacher.begin_scene(scene)  # warm-up outside the timing: the simulated teacher builds its ray caster
        teacher(next(scene.frames()))  # and embeds its words once per scene
        for masks, ps in (("proposals", props), ("gt", gt_props)):
            for key, _ in rows:
                t0 = time.perf_counter()
                if key in ("head", "mean"):  # from 3D alone
                    preds = name_proposals(ps, vocab, stuff, inst_feats if key == "head" else None)
                else:
                    named, stats = embed_instances(scene, [q.mask for q in ps], teacher, args.top_k, key,
                                                   begin_scene=False)
                    if masks == "proposals":
                        calls[key] += stats.teacher_calls
                    preds = name_instances(named, ps, vocab, stuff)
                if masks == "proposals":
                    secs[key] += time.perf_counter() - t0
                meters[masks, key].update(preds, gt_inst, gt_label)
    n = len(paths)
    real = _time_real_teacher(args, ScanNetScene(paths[0]), scene_props[0], labels) if args.time_teacher else None
    live = _time_live_grouping(ScanNetScene(paths[0]), student, vocab)
    print(f"{n} held-out scene(s); {len(props)} proposals in the last, recovering ground-truth instances with mean "
          f"best IoU {np.mean(recovery):.3f}; teacher {args.teacher} (test instrument), random-weight CLIP text "
          "encoder\n")
    print("| masks | named by | AP | AP50 | AP25 | s/scene to name |\n| --- | --- | --- | --- | --- | --- |")
    three_d = secs["student"]
    for masks in ("proposals", "gt"):
        for key, how in rows:
            ap = meters[masks, key].compute()
            t = "-"
            if masks == "proposals":
                t = f"{(secs[key] + (three_d if key in ('head', 'mean') else 0)) / n:.2f}"
            print(f"| {'proposals' if masks == 'proposals' else 'ground truth'} | {how.format(k=args.top_k)} | "
                  f"{100 * ap['AP']:.1f} | {100 * ap['AP50']:.1f} | {100 * ap['AP25']:.1f} | {t} |")
    best3d = "head" if student.has_instance_head else "mean"
    print(f"\nnaming speed ratio 2D projection / 3D ({best3d}): "
          f"{secs['count'] / (secs[best3d] + three_d):.1f}x (3D includes the student's forward pass, "
          f"{three_d / n:.2f} s/scene; 2D ran the teacher on {calls['count'] / n:.0f} crops/scene); "
          f"proposals {secs['proposals'] / n:.2f} s/scene, shared by all rows")
    print("node map of {name} ({voxels} voxels at 5 cm, instances.cell 0.1 m): regrouping after an update takes "
          "{proposals:.2f} s as proposals named by the instance head ({n_p} instances) vs {connected:.2f} s as "
          "connected same-label cells ({n_c}); the student's update itself {update:.2f} s".format(**live))
    if real is not None:
        t, crops = real
        print(f"with a {args.time_teacher} teacher (ViT-B-16, random weights: speed only) the 2D projection of "
              f"{paths[0].name}'s proposals takes {t:.1f} s for {crops} crops: {t / (secs[best3d] + three_d) * n:.0f}x "
              "the 3D naming")


def _time_live_grouping(scene: ScanNetScene, student, vocab) -> dict:
    """The node's instance regrouping on a live map of one scene: proposals vs connected cells."""
    from ovseg3d.segment.live_map import LiveConfig, LiveSegmenter

    out = {"name": scene.name}
    for method in ("proposals", "connected"):
        live = LiveSegmenter(student, vocab, LiveConfig(voxel_size=0.05, instance_cell=0.1,
                                                        instance_method=method))
        for f in scene.frames():
            live.add_rgbd(f.depth, f.K, f.pose, stamp=float(f.frame_id), rgb=f.color)
        t0 = time.perf_counter()
        live.update(force=True)
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        live._group_instances()
        out[method] = time.perf_counter() - t0
        out["update"] = total - out[method]
        out["n_p" if method == "proposals" else "n_c"] = len(live.instances)
        out["voxels"] = len(live.map)
    return out


def _time_real_teacher(args, scene: ScanNetScene, props: list[Proposal], labels) -> tuple[float, int]:
    """Seconds and crops of the OpenMask3D-like projection of ``props`` with a real teacher architecture."""
    teacher = build_teacher(args.time_teacher, TeacherContext(labels=labels))
    teacher.begin_scene(scene)
    teacher(next(scene.frames()))  # warm-up
    t0 = time.perf_counter()
    _, stats = embed_instances(scene, [q.mask for q in props], teacher, args.top_k, "count", begin_scene=False)
    return time.perf_counter() - t0, stats.teacher_calls


if __name__ == "__main__":
    main()
