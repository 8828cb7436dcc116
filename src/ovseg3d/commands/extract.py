"""`ovseg3d extract`: 2D teacher features fused onto every scene's points, in OpenScene's format."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "run 2D teacher(s) over scenes and write fused per-point features (OpenScene <scene>_0.pt files)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ovseg3d.commands.common import add_clip_args, add_shard_args, add_teacher_args

    p.add_argument("data", type=Path, help="dataset root of ScanNet-layout scenes (or one scene folder)")
    p.add_argument("--out", type=Path, required=True, help="output folder of <scene>_0.pt files")
    add_teacher_args(p)
    p.add_argument("--fusion", choices=["sas", "average", "max_similarity"], default="sas",
                   help="how several teachers are fused (default sas: capability-guided, needs --capability)")
    p.add_argument("--capability", action="append", type=Path, default=[],
                   help="capability table per teacher, in --teacher order (from `ovseg3d calibrate`)")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    p.add_argument("--select-frames", action="store_true",
                   help="run the teacher only on informative frames (greedy coverage + viewpoint variety) "
                        "reaching the coverage of --stride")
    p.add_argument("--image-size", default=None, metavar="WxH", help="resize frames (default: depth resolution)")
    p.add_argument("--occlusion-ratio", type=float, default=0.25, help="OpenScene visibility test ratio")
    p.add_argument("--overwrite", action="store_true", help="recompute scenes whose output exists")
    p.add_argument("--instance-teacher", action="store_true",
                   help="also write FOLK instance-teacher targets <scene>_instances.pt: one embedding per annotated "
                        "instance from its best views (visibility x viewpoint diversity), by the first --teacher "
                        "on crops; needs instance annotation")
    p.add_argument("--instance-views", type=int, default=5, help="views per instance (default 5)")
    add_clip_args(p)
    add_shard_args(p)


def parse_size(text: str | None) -> tuple[int, int] | None:
    from ovseg3d.errors import UserError

    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"image size must look like 320x240, got {text!r}") from None
    if w < 8 or h < 8:
        raise UserError(f"image size {text} is too small")
    return w, h


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ovseg3d.commands.common import build_teachers, shard, templates
    from ovseg3d.data.instance_targets import instance_targets_path
    from ovseg3d.data.openscene import fused_path, save_fused
    from ovseg3d.data.scannet import ScanNetScene, list_scenes
    from ovseg3d.errors import UserError
    from ovseg3d.fusion.frame_selection import coverage, frame_visibility, select_frames
    from ovseg3d.fusion.multiteacher import Capability, fuse_teachers
    from ovseg3d.fusion.multiview import fuse_many
    from ovseg3d.progress import bar
    from ovseg3d.text.vocabulary import build_vocabulary

    if args.stride < 1:
        raise UserError(f"--stride must be >= 1, got {args.stride}")
    if args.instance_views < 1:
        raise UserError(f"--instance-views must be >= 1, got {args.instance_views}")
    size = parse_size(args.image_size)
    names = list(args.teacher)
    if len(set(names)) != len(names):
        raise UserError("a teacher is named twice")
    labels, spec, teachers = build_teachers(args, names)
    caps = None
    if len(teachers) > 1 and args.fusion == "sas":
        if len(args.capability) != len(teachers):
            raise UserError(f"SAS fusion of {len(teachers)} teachers needs {len(teachers)} --capability tables "
                            "(make them with `ovseg3d calibrate`), or choose --fusion average")
        loaded = [Capability.load(p) for p in args.capability]
        for name, cap in zip(names, loaded):
            if cap.classes != list(labels.names):
                raise UserError(f"capability table of {cap.teacher} is for other classes than --labels {labels.name}")
            if cap.teacher != name:
                raise UserError(f"capability table for {cap.teacher!r} given for teacher {name!r}")
        caps = [c.values for c in loaded]
    vocab = build_vocabulary(labels, spec, templates(args)) if len(teachers) > 1 else None

    i, n = shard(args)
    scenes = list_scenes(args.data)[i::n]
    # no sweep of temporary files here: shards run at once over one --out, and a sweep would delete
    # another shard's file in mid-write; an interrupted write removes its own (serialization.atomic_write)
    args.out.mkdir(parents=True, exist_ok=True)

    def done(p: Path) -> bool:
        return fused_path(args.out, p.name).exists() and (
            not args.instance_teacher or instance_targets_path(args.out, p.name).exists())

    todo = [p for p in scenes if args.overwrite or not done(p)]
    print(f"ovseg3d extract: {len(scenes)} scene(s) in shard {i}/{n}, {len(scenes) - len(todo)} already done; "
          f"teacher(s) {', '.join(names)}" + (f", fusion {args.fusion}" if len(names) > 1 else ""))
    plans = []
    for path in todo:
        scene = ScanNetScene(path)
        if args.instance_teacher:
            scene.instance_ids  # noqa: B018 - fail now, before any work, if a scene has no instance annotation
        ids = scene.frame_ids()[:: args.stride]
        if args.select_frames:
            fv = frame_visibility(scene)
            ids = sorted(select_frames(fv, target_coverage=coverage(fv, fv.frame_ids[:: args.stride])))
        plans.append((scene, ids))
    report = []
    t_all = time.perf_counter()
    with bar(sum(len(ids) for _, ids in plans), "extract", "frame") as pbar:
        for scene, ids in plans:
            t0 = time.perf_counter()
            per_teacher = {}
            frame_teachers = {}
            for name, t in zip(names, teachers):
                t.begin_scene(scene)
                pre = t.scene_features(scene)
                if pre is not None:
                    feat, mask = pre
                    full = feat.new_zeros(scene.num_points, feat.shape[1])
                    full[mask] = feat
                    per_teacher[name] = (full, mask)
                else:
                    frame_teachers[name] = t
            if frame_teachers:
                fused = fuse_many(scene.points, scene.frames(frame_ids=ids, image_size=size), frame_teachers,
                                  args.occlusion_ratio, on_frame=lambda _: pbar.update())
                per_teacher.update({k: (v.features, v.mask) for k, v in fused.items()})
            else:
                pbar.update(len(ids))
            if len(names) == 1:
                feat, mask = per_teacher[names[0]]
            else:
                feat, mask = fuse_teachers([per_teacher[k][0] for k in names], [per_teacher[k][1] for k in names],
                                           args.fusion, vocab, caps)
            save_fused(fused_path(args.out, scene.name), feat[mask], mask)
            inst_report = {}
            if args.instance_teacher:
                inst_report = _instance_teacher(scene, teachers[0], args, instance_targets_path(args.out, scene.name))
            report.append({"scene": scene.name, "frames": len(ids), "points": scene.num_points, **inst_report,
                           "seen": float(np.mean(mask.numpy())), "seconds": round(time.perf_counter() - t0, 2),
                           "skipped_frames": dict(scene.skipped)})
    manifest = {"teachers": names, "instance_teacher": names[0] if args.instance_teacher else None,
                "fusion": args.fusion if len(names) > 1 else None, "labels": labels.name,
                "clip": spec.identity(), "stride": args.stride, "select_frames": args.select_frames,
                "image_size": size, "occlusion_ratio": args.occlusion_ratio, "scenes": report}
    (args.out / f"extract.{i}of{n}.json").write_text(json.dumps(manifest, indent=1))
    dt = time.perf_counter() - t_all
    frames = sum(r["frames"] for r in report)
    print(f"wrote {len(report)} scene(s) to {args.out} in {dt:.1f} s"
          + (f" ({frames / dt:.1f} frames/s)" if report and dt > 0 else ""))
    return 0


def _instance_teacher(scene, teacher, args: argparse.Namespace, path: Path) -> dict:
    """FOLK's instance teacher on one scene's annotated instances; returns its report entry."""
    import numpy as np

    from ovseg3d.data.instance_targets import save_instance_targets
    from ovseg3d.errors import UserError
    from ovseg3d.fusion.instance_views import embed_instances

    if teacher.scene_features(scene) is not None:
        raise UserError(f"the instance teacher needs a per-frame teacher; {teacher.name} gives per-point features")
    t0 = time.perf_counter()
    inst = scene.instance_ids
    ids = np.unique(inst[inst > 0])
    masks = [inst == i for i in ids]
    emb, stats = embed_instances(scene, masks, teacher, args.instance_views, "folk", frame_stride=args.stride,
                                 occlusion_ratio=args.occlusion_ratio)
    save_instance_targets(path, ids, emb, stats.views)
    seen = int(np.count_nonzero(stats.views))
    print(f"  {scene.name}: instance teacher {seen}/{len(ids)} instances seen, {stats.teacher_calls} crops, "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return {"instances": len(ids), "instances_seen": seen, "instance_crops": stats.teacher_calls,
            "instance_seconds": round(time.perf_counter() - t0, 2)}
