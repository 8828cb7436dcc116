"""Predictions in the ScanNet benchmark's submission format.

Semantic: ``<scene>.txt``, one label id per vertex (the label set's dataset ids: NYU40 ids for
ScanNet20, raw-category ids for ScanNet200; 0 where nothing is predicted). Instances:
``<scene>.txt`` with lines ``pred_mask/<scene>_<k>.txt <label_id> <confidence>`` and one mask
file per instance holding a 0 or 1 per vertex.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovseg3d.labels import LabelSet
from ovseg3d.segment.proposals import InstancePrediction


def export_semantic(out_dir: Path, scene: str, labels: np.ndarray, label_set: LabelSet) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = np.asarray((*label_set.ids, 0))[np.where(labels >= 0, labels, len(label_set))]
    path = out_dir / f"{scene}.txt"
    np.savetxt(path, ids.astype(np.int64), fmt="%d")
    return path


def export_instances(out_dir: Path, scene: str, preds: list[InstancePrediction], label_set: LabelSet) -> Path:
    masks = out_dir / "pred_mask"
    masks.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, p in enumerate(preds):
        rel = f"pred_mask/{scene}_{k}.txt"
        np.savetxt(out_dir / rel, p.mask.astype(np.int64), fmt="%d")
        lines.append(f"{rel} {label_set.ids[p.label]} {p.score:.6f}")
    path = out_dir / f"{scene}.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path
