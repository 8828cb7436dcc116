"""2D teacher features fused onto every scene's points (OpenScene's ``<scene>_0.pt`` files), with
several teachers fused by SAS, and FOLK's per-instance teacher targets."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ovseg3d.data.instance_targets import instance_targets_path, save_instance_targets
from ovseg3d.data.openscene import fused_path, save_fused
from ovseg3d.data.scannet import ScanNetScene, list_scenes
from ovseg3d.errors import UserError
from ovseg3d.fusion.frame_selection import coverage, frame_visibility, select_frames
from ovseg3d.fusion.instance_views import embed_instances
from ovseg3d.fusion.multiteacher import Capability, fuse_teachers
from ovseg3d.fusion.multiview import fuse_many
from ovseg3d.labels import LabelSet, load_label_set
from ovseg3d.progress import bar
from ovseg3d.teachers.base import Teacher, TeacherContext, build_teacher
from ovseg3d.text.clip_model import ClipSpec
from ovseg3d.text.vocabulary import DEFAULT_TEMPLATES, build_vocabulary

FUSIONS = ("sas", "average", "max_similarity")


@dataclass
class ExtractOptions:
    teachers: list[str]  # teacher names, in order (`ovseg3d teachers` lists them)
    teacher_options: dict[str, dict[str, str]] = field(default_factory=dict)  # per teacher name: key -> value
    labels: str = "scannet20"  # label set of the vocabulary
    clip: ClipSpec = field(default_factory=ClipSpec)
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    fusion: str = "sas"  # how several teachers are fused
    capability: list[Path] = field(default_factory=list)  # one table per teacher, for SAS fusion
    stride: int = 1  # every N-th frame
    select_frames: bool = False  # informative frames reaching the coverage of ``stride``
    image_size: tuple[int, int] | None = None
    occlusion_ratio: float = 0.25
    overwrite: bool = False
    instance_teacher: bool = False  # also FOLK's instance-teacher targets (needs instance annotation)
    instance_views: int = 5
    shard: tuple[int, int] = (0, 1)  # (i, n): every n-th scene from i

    def check(self) -> None:
        if self.stride < 1:
            raise UserError(f"--stride must be >= 1, got {self.stride}")
        if self.instance_views < 1:
            raise UserError(f"--instance-views must be >= 1, got {self.instance_views}")
        if len(set(self.teachers)) != len(self.teachers):
            raise UserError("a teacher is named twice")
        if self.fusion not in FUSIONS:
            raise UserError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")


def build_teachers(names: list[str], labels: str, clip: ClipSpec, templates: tuple[str, ...],
                   options: dict[str, dict[str, str]]) -> tuple[LabelSet, list[Teacher]]:
    """The named teachers, each with its own options, over one label set and text encoder."""
    label_set = load_label_set(labels)
    teachers = [build_teacher(name, TeacherContext(clip=clip, labels=label_set, templates=templates,
                                                    options=options.get(name, {})))
                for name in names]
    return label_set, teachers


def _capabilities(opts: ExtractOptions, labels: LabelSet, n_teachers: int) -> list | None:
    """SAS's per-class capability of each teacher, checked against the teachers and the label set."""
    if n_teachers <= 1 or opts.fusion != "sas":
        return None
    if len(opts.capability) != n_teachers:
        raise UserError(f"SAS fusion of {n_teachers} teachers needs {n_teachers} --capability tables "
                        "(make them with `ovseg3d calibrate`), or choose --fusion average")
    loaded = [Capability.load(p) for p in opts.capability]
    for name, cap in zip(opts.teachers, loaded):
        if cap.classes != list(labels.names):
            raise UserError(f"capability table of {cap.teacher} is for other classes than --labels {labels.name}")
        if cap.teacher != name:
            raise UserError(f"capability table for {cap.teacher!r} given for teacher {name!r}")
    return [c.values for c in loaded]


def extract_scenes(data: Path, out: Path, opts: ExtractOptions) -> dict:
    """Fuse the teachers' features onto every scene of ``data`` (this shard's share), skipping
    scenes already done; writes ``extract.<i>of<n>.json`` in ``out`` and returns it."""
    opts.check()
    names = list(opts.teachers)
    labels, teachers = build_teachers(names, opts.labels, opts.clip, opts.templates, opts.teacher_options)
    caps = _capabilities(opts, labels, len(teachers))
    vocab = build_vocabulary(labels, opts.clip, opts.templates) if len(teachers) > 1 else None
    i, n = opts.shard
    scenes = list_scenes(data)[i::n]
    # no sweep of temporary files here: shards run at once over one ``out``, and a sweep would delete
    # another shard's file in mid-write; an interrupted write removes its own (serialization.atomic_write)
    out.mkdir(parents=True, exist_ok=True)

    def done(p: Path) -> bool:
        return fused_path(out, p.name).exists() and (
            not opts.instance_teacher or instance_targets_path(out, p.name).exists())

    todo = [p for p in scenes if opts.overwrite or not done(p)]
    print(f"ovseg3d extract: {len(scenes)} scene(s) in shard {i}/{n}, {len(scenes) - len(todo)} already done; "
          f"teacher(s) {', '.join(names)}" + (f", fusion {opts.fusion}" if len(names) > 1 else ""))
    plans = []
    for path in todo:
        scene = ScanNetScene(path)
        if opts.instance_teacher:
            scene.instance_ids  # noqa: B018 - fail now, before any work, if a scene has no instance annotation
        ids = scene.frame_ids()[:: opts.stride]
        if opts.select_frames:
            fv = frame_visibility(scene)
            ids = sorted(select_frames(fv, target_coverage=coverage(fv, fv.frame_ids[:: opts.stride])))
        plans.append((scene, ids))
    report = []
    t_all = time.perf_counter()
    with bar(sum(len(ids) for _, ids in plans), "extract" if n == 1 else f"extract {i + 1}/{n}", "frame") as pbar:
        for scene, ids in plans:
            t0 = time.perf_counter()
            feat, mask = _fuse_scene(scene, ids, names, teachers, opts, vocab, caps, pbar.update)
            save_fused(fused_path(out, scene.name), feat[mask], mask)
            inst_report = {}
            if opts.instance_teacher:
                inst_report = instance_teacher(scene, teachers[0], opts, instance_targets_path(out, scene.name))
            report.append({"scene": scene.name, "frames": len(ids), "points": scene.num_points, **inst_report,
                           "seen": float(np.mean(mask.numpy())), "seconds": round(time.perf_counter() - t0, 2),
                           "skipped_frames": dict(scene.skipped)})
    manifest = {"teachers": names, "instance_teacher": names[0] if opts.instance_teacher else None,
                "fusion": opts.fusion if len(names) > 1 else None, "labels": labels.name,
                "clip": opts.clip.identity(), "stride": opts.stride, "select_frames": opts.select_frames,
                "image_size": opts.image_size, "occlusion_ratio": opts.occlusion_ratio, "scenes": report}
    (out / f"extract.{i}of{n}.json").write_text(json.dumps(manifest, indent=1))
    dt = time.perf_counter() - t_all
    frames = sum(r["frames"] for r in report)
    print(f"wrote {len(report)} scene(s) to {out} in {dt:.1f} s"
          + (f" ({frames / dt:.1f} frames/s)" if report and dt > 0 else ""))
    return manifest


def extract_in_workers(data: Path, out: Path, opts: ExtractOptions, workers: int) -> list[dict]:
    """``extract_scenes`` as ``workers`` shards side by side, each in its own process with its share
    of the cores for torch: on a CPU much of a teacher's frame and of the fusion runs on one core, so
    two shards on two cores finish about a quarter sooner. The files are those one process writes."""
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        return [extract_scenes(data, out, opts)]
    if opts.shard != (0, 1):
        raise UserError("give --workers or --shard, not both")
    opts.check()  # a bad option fails here, once, not in every worker
    threads = max(1, (os.cpu_count() or 1) // workers)
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch's threads
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        jobs = [pool.submit(_extract_shard, data, out, dataclasses.replace(opts, shard=(i, workers)), threads)
                for i in range(workers)]
        return [job.result() for job in jobs]


def _extract_shard(data: Path, out: Path, opts: ExtractOptions, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    return extract_scenes(data, out, opts)


def _fuse_scene(scene: ScanNetScene, ids: list[int], names: list[str], teachers: list[Teacher],
                opts: ExtractOptions, vocab, caps, on_frame) -> tuple:
    """(features (N, D), seen mask (N,)) of one scene: each teacher fused over the views, then the
    teachers fused with each other."""
    per_teacher, frame_teachers = {}, {}
    for name, t in zip(names, teachers):
        t.begin_scene(scene)
        pre = t.scene_features(scene)
        if pre is not None:  # a teacher with per-point features of its own (e.g. precomputed files)
            feat, mask = pre
            full = feat.new_zeros(scene.num_points, feat.shape[1])
            full[mask] = feat
            per_teacher[name] = (full, mask)
        else:
            frame_teachers[name] = t
    if frame_teachers:
        fused = fuse_many(scene.points, scene.frames(frame_ids=ids, image_size=opts.image_size), frame_teachers,
                          opts.occlusion_ratio, on_frame=lambda _: on_frame())
        per_teacher.update({k: (v.features, v.mask) for k, v in fused.items()})
    else:
        on_frame(len(ids))
    if len(names) == 1:
        return per_teacher[names[0]]
    return fuse_teachers([per_teacher[k][0] for k in names], [per_teacher[k][1] for k in names],
                         opts.fusion, vocab, caps)


def instance_teacher(scene: ScanNetScene, teacher: Teacher, opts: ExtractOptions, path: Path) -> dict:
    """FOLK's instance teacher on one scene's annotated instances; returns its report entry."""
    if teacher.scene_features(scene) is not None:
        raise UserError(f"the instance teacher needs a per-frame teacher; {teacher.name} gives per-point features")
    t0 = time.perf_counter()
    inst = scene.instance_ids
    ids = np.unique(inst[inst > 0])
    masks = [inst == i for i in ids]
    emb, stats = embed_instances(scene, masks, teacher, opts.instance_views, "folk", frame_stride=opts.stride,
                                 occlusion_ratio=opts.occlusion_ratio)
    save_instance_targets(path, ids, emb, stats.views)
    seen = int(np.count_nonzero(stats.views))
    print(f"  {scene.name}: instance teacher {seen}/{len(ids)} instances seen, {stats.teacher_calls} crops, "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return {"instances": len(ids), "instances_seen": seen, "instance_crops": stats.teacher_calls,
            "instance_seconds": round(time.perf_counter() - t0, 2)}
