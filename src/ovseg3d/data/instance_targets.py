"""FOLK instance-teacher targets: one 2D embedding per annotated instance, beside the fused features.

``<scene>_instances.pt`` = ``{"format": "ovseg3d-instance-targets", "instance_ids": int64 [M]
(the scene's instance ids, ScanNet objectId + 1), "feat": fp16 [M, C] (unit; zero rows: never
seen), "views": int64 [M] (views averaged)}``. Plain tensors only, so it loads with
``weights_only=True``; written atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ovseg3d.errors import UserError
from ovseg3d.serialization import atomic_write, torch_load

FORMAT = "ovseg3d-instance-targets"


def instance_targets_path(out_dir: Path, scene: str) -> Path:
    return Path(out_dir) / f"{scene}_instances.pt"


def save_instance_targets(path: Path, instance_ids, features: torch.Tensor, views) -> None:
    ids = torch.as_tensor(instance_ids, dtype=torch.int64).reshape(-1)
    features = torch.as_tensor(features)
    if features.ndim != 2 or features.shape[0] != len(ids):
        raise UserError(f"{features.shape[0] if features.ndim else 0} instance embeddings for {len(ids)} instance ids")
    with atomic_write(path) as tmp:
        torch.save({"format": FORMAT, "instance_ids": ids, "feat": features.half().contiguous(),
                    "views": torch.as_tensor(views, dtype=torch.int64).reshape(-1)}, tmp)


def load_instance_targets(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(instance ids [M], unit embeddings [M, C] float32, views [M])."""
    data = torch_load(path, "instance-target file")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not an ovseg3d instance-target file (make it with `ovseg3d extract "
                        "--instance-teacher`)")
    ids, feat, views = (torch.as_tensor(data.get(k)) for k in ("instance_ids", "feat", "views"))
    if feat.ndim != 2 or feat.shape[0] != ids.shape[0] or views.shape[0] != ids.shape[0]:
        raise UserError(f"{path}: {feat.shape[0]} embeddings, {ids.shape[0]} ids and {views.shape[0]} view counts")
    return ids.long(), feat.float(), views.long()
