"""`ovseg3d eval`: mIoU/mAcc (and AP for instances) of predictions against ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "score predictions (`ovseg3d infer` output) against ground truth; optional ScanNet benchmark export"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, help="prediction folder: <scene>.npz per scene (from `ovseg3d infer`)")
    p.add_argument("--gt", type=Path, required=True, help="dataset root with ground-truth labels (ScanNet layout)")
    p.add_argument("--labels", default="scannet20", help="label set to score in (default scannet20)")
    p.add_argument("--json", type=Path, help="where to write the scores (default PRED/eval.json)")
    p.add_argument("--export-scannet", type=Path, metavar="DIR",
                   help="also write predictions in the ScanNet benchmark format (semantic/ and instance/)")


def _load_prediction(path: Path, label_set):
    import numpy as np

    from ovseg3d.errors import UserError
    from ovseg3d.segment.proposals import InstancePrediction

    try:
        data = np.load(path, allow_pickle=False)
        labels, names = data["labels"].astype(np.int64), [str(n) for n in data["names"]]
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path} is not an ovseg3d prediction file: {exc}") from None
    if names != list(label_set.names):  # map by class name into the evaluated label set
        lut = np.array([label_set.names.index(n) if n in label_set.names else -1 for n in names] + [-1])
        labels = lut[np.where(labels >= 0, labels, len(names))]
    instances = []
    if "instance_ids" in data:
        ids = data["instance_ids"]
        for k, (lab, score) in enumerate(zip(data["instance_labels"], data["instance_scores"])):
            instances.append(InstancePrediction(mask=ids == k, label=int(lab), score=float(score)))
    return labels, instances


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from ovseg3d.data.scannet import ScanNetScene, list_scenes
    from ovseg3d.errors import UserError
    from ovseg3d.eval.instance import InstanceMeter
    from ovseg3d.eval.scannet_export import export_instances, export_semantic
    from ovseg3d.eval.semantic import SemanticMeter
    from ovseg3d.labels import load_label_set, stuff_indices

    labels = load_label_set(args.labels)
    if not args.pred.is_dir():
        raise UserError(f"{args.pred} is not a folder of predictions")
    scenes = [p for p in list_scenes(args.gt) if (args.pred / f"{p.name}.npz").exists()]
    if not scenes:
        raise UserError(f"no prediction in {args.pred} matches a scene of {args.gt}")
    sem = SemanticMeter(len(labels))
    stuff = stuff_indices(labels.names)
    inst_classes = [i for i in range(len(labels)) if i not in stuff]
    inst = InstanceMeter(len(labels), inst_classes)
    has_instances = False
    for path in scenes:
        scene = ScanNetScene(path)
        pred, instances = _load_prediction(args.pred / f"{scene.name}.npz", labels)
        if len(pred) != scene.num_points:
            raise UserError(f"{scene.name}: {len(pred)} predicted labels for {scene.num_points} points")
        gt = scene.semantic(labels)
        sem.update(pred, gt)
        if instances:
            has_instances = True
            inst.update(instances, scene.instance_ids, gt)
        if args.export_scannet:
            export_semantic(args.export_scannet / "semantic", scene.name, pred, labels)
            if instances:
                export_instances(args.export_scannet / "instance", scene.name, instances, labels)
    scores = sem.compute()
    report = {"label_set": labels.name, "scenes": [p.name for p in scenes], **scores.as_dict(labels.names)}
    print(f"{'class':<18}{'IoU':>7}{'Acc':>7}")
    for name, iou, acc in zip(labels.names, scores.iou, scores.acc):
        if not np.isnan(iou):
            print(f"{name:<18}{iou * 100:>7.1f}{acc * 100:>7.1f}")
    print(f"{'mean':<18}{scores.miou * 100:>7.1f}{scores.macc * 100:>7.1f}   ({len(scenes)} scenes, "
          f"{scores.points} labelled points; classes absent from the ground truth are left out)")
    if labels.splits:
        report["splits"] = scores.split_mious(labels.splits)
        print("long tail: " + ", ".join(f"{k} {v * 100:.1f}" for k, v in report["splits"].items()))
    if has_instances:
        ap = inst.compute()
        report["instances"] = ap
        print(f"instances: AP {ap['AP'] * 100:.1f}  AP50 {ap['AP50'] * 100:.1f}  AP25 {ap['AP25'] * 100:.1f}")
    out = args.json or args.pred / "eval.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"scores written to {out}" + (f"; ScanNet export in {args.export_scannet}" if args.export_scannet else ""))
    return 0
