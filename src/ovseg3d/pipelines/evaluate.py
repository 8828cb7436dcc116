"""Score predictions (`infer`'s ``<scene>.npz`` files) against ground truth: mIoU/mAcc as ScanNet's
benchmark computes them, AP for instances, and optionally the benchmark's export format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovseg3d.data.scannet import ScanNetScene, list_scenes
from ovseg3d.errors import UserError
from ovseg3d.eval.instance import InstanceMeter
from ovseg3d.eval.scannet_export import export_instances, export_semantic
from ovseg3d.eval.semantic import SemanticMeter
from ovseg3d.labels import LabelSet, load_label_set, stuff_indices
from ovseg3d.segment.proposals import InstancePrediction


def load_prediction(path: Path, label_set: LabelSet) -> tuple[np.ndarray, list[InstancePrediction]]:
    """(labels in ``label_set``'s indices (-1: none), instances) of one prediction file; classes are
    mapped by name, so a prediction made with another vocabulary scores in this label set."""
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


def evaluate_predictions(pred: Path, gt: Path, label_set: str = "scannet20", export: Path | None = None) -> dict:
    """Scores of every scene of ``gt`` with a prediction in ``pred`` (what `eval` writes as eval.json)."""
    labels = load_label_set(label_set)
    if not pred.is_dir():
        raise UserError(f"{pred} is not a folder of predictions")
    scenes = [p for p in list_scenes(gt) if (pred / f"{p.name}.npz").exists()]
    if not scenes:
        raise UserError(f"no prediction in {pred} matches a scene of {gt}")
    sem = SemanticMeter(len(labels))
    stuff = stuff_indices(labels.names)
    inst = InstanceMeter(len(labels), [i for i in range(len(labels)) if i not in stuff])
    has_instances = False
    for path in scenes:
        scene = ScanNetScene(path)
        labels_pred, instances = load_prediction(pred / f"{scene.name}.npz", labels)
        if len(labels_pred) != scene.num_points:
            raise UserError(f"{scene.name}: {len(labels_pred)} predicted labels for {scene.num_points} points")
        truth = scene.semantic(labels)
        sem.update(labels_pred, truth)
        if instances:
            has_instances = True
            inst.update(instances, scene.instance_ids, truth)
        if export:
            export_semantic(export / "semantic", scene.name, labels_pred, labels)
            if instances:
                export_instances(export / "instance", scene.name, instances, labels)
    scores = sem.compute()
    report = {"label_set": labels.name, "scenes": [p.name for p in scenes], **scores.as_dict(labels.names)}
    if labels.splits:
        report["splits"] = scores.split_mious(labels.splits)
    if has_instances:
        report["instances"] = inst.compute()
    return report


def print_scores(report: dict) -> None:
    """The per-class table, the means, the long-tail splits and instance AP of a report."""
    print(f"{'class':<18}{'IoU':>7}{'Acc':>7}")
    for name, v in report["per_class"].items():
        if v["iou"] is not None:
            print(f"{name:<18}{v['iou'] * 100:>7.1f}{v['acc'] * 100:>7.1f}")
    print(f"{'mean':<18}{report['mIoU'] * 100:>7.1f}{report['mAcc'] * 100:>7.1f}   ({len(report['scenes'])} scenes, "
          f"{report['points']} labelled points; classes absent from the ground truth are left out)")
    if "splits" in report:
        print("long tail: " + ", ".join(f"{k} {v * 100:.1f}" for k, v in report["splits"].items()))
    if "instances" in report:
        ap = report["instances"]
        print(f"instances: AP {ap['AP'] * 100:.1f}  AP50 {ap['AP50'] * 100:.1f}  AP25 {ap['AP25'] * 100:.1f}")
